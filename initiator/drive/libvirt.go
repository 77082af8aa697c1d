package drive

import (
	"encoding/xml"
	"fmt"
	"strconv"
)

// LibvirtSecretUsage is the usage name of the libvirt secret (type iscsi)
// that holds node's initiator CHAP secret. The operator defines it once
// per host with `virsh secret-define`; the disk only names it.
func LibvirtSecretUsage(cluster, node string) string {
	return "mhcodi-" + cluster + "-" + node + "-initiator"
}

// libvirtDisk is the <disk> element of a libvirt domain (the subset used).
type libvirtDisk struct {
	XMLName xml.Name      `xml:"disk"`
	Type    string        `xml:"type,attr"`
	Device  string        `xml:"device,attr"`
	Comment xml.Comment   `xml:",comment"`
	Driver  libvirtDriver `xml:"driver"`
	Source  libvirtSource `xml:"source"`
	Auth    *libvirtAuth  `xml:"auth,omitempty"`
	Target  libvirtTarget `xml:"target"`
	Serial  string        `xml:"serial,omitempty"`
	Alias   *libvirtAlias `xml:"alias,omitempty"`
}

type libvirtDriver struct {
	Name    string `xml:"name,attr"`
	Type    string `xml:"type,attr"`
	Cache   string `xml:"cache,attr,omitempty"`
	IO      string `xml:"io,attr,omitempty"`
	Discard string `xml:"discard,attr,omitempty"`
}

type libvirtSource struct {
	Protocol  string            `xml:"protocol,attr,omitempty"`
	Name      string            `xml:"name,attr,omitempty"`
	File      string            `xml:"file,attr,omitempty"`
	Dev       string            `xml:"dev,attr,omitempty"`
	Host      *libvirtHost      `xml:"host,omitempty"`
	Initiator *libvirtInitiator `xml:"initiator,omitempty"`
}

type libvirtHost struct {
	Name      string `xml:"name,attr,omitempty"`
	Port      string `xml:"port,attr,omitempty"`
	Transport string `xml:"transport,attr,omitempty"`
	Socket    string `xml:"socket,attr,omitempty"`
}

type libvirtInitiator struct {
	IQN struct {
		Name string `xml:"name,attr"`
	} `xml:"iqn"`
}

type libvirtAuth struct {
	Username string `xml:"username,attr"`
	Secret   struct {
		Type  string `xml:"type,attr"`
		Usage string `xml:"usage,attr"`
	} `xml:"secret"`
}

type libvirtTarget struct {
	Dev string `xml:"dev,attr"`
	Bus string `xml:"bus,attr"`
}

type libvirtAlias struct {
	Name string `xml:"name,attr"`
}

// LibvirtXML renders the leg as a libvirt <disk> element for the guest's
// disk dev (vda, vdb…): type='network' (libvirt's own iSCSI initiator,
// which is QEMU's libiscsi) for a remote leg reached by iSCSI,
// type='block' or type='file' otherwise. The CHAP secret is named by its
// usage (LibvirtSecretUsage of the host), never included.
func (s Spec) LibvirtXML(dev string) ([]byte, error) {
	if dev == "" {
		return nil, fmt.Errorf("drive: libvirt disk for %s: no target dev", s.Leg.Leg)
	}
	d := libvirtDisk{
		Device: "disk",
		Driver: libvirtDriver{Name: "qemu", Type: "raw", Discard: "unmap"},
		Target: libvirtTarget{Dev: dev, Bus: "virtio"},
		Serial: s.Serial,
		// libvirt's user aliases start with "ua-".
		Alias:   &libvirtAlias{Name: "ua-" + dev},
		Comment: xml.Comment(fmt.Sprintf(" leg %s/%s on %s ", s.Leg.Guest, s.Leg.Disk, s.Leg.Node)),
	}
	switch s.Driver {
	case DriverISCSI:
		d.Type = "network"
		d.Source = libvirtSource{
			Protocol: "iscsi",
			Name:     s.Target + "/" + strconv.Itoa(LUN),
			Host:     &libvirtHost{Name: s.Portal.Addr().String(), Port: strconv.Itoa(int(s.Portal.Port()))},
		}
		d.Source.Initiator = &libvirtInitiator{}
		d.Source.Initiator.IQN.Name = s.Initiator
		if s.Secret != nil {
			d.Auth = &libvirtAuth{Username: s.User}
			d.Auth.Secret.Type = "iscsi"
			d.Auth.Secret.Usage = LibvirtSecretUsage(s.Leg.Leg.Cluster, s.Host)
		}
	case DriverNBD:
		d.Type = "network"
		d.Source = libvirtSource{
			Protocol: "nbd",
			Name:     s.Target,
			Host:     &libvirtHost{Transport: "unix", Socket: s.Socket},
		}
	case DriverHostDevice:
		d.Type = "block"
		d.Source = libvirtSource{Dev: s.Filename}
	case DriverFile:
		d.Type = "file"
		d.Source = libvirtSource{File: s.Filename}
	default:
		return nil, fmt.Errorf("drive: libvirt disk for %s: driver %q", s.Leg.Leg, s.Driver)
	}
	if s.Driver != DriverISCSI && s.Driver != DriverNBD {
		if s.CacheDirect {
			// cache='none' is libvirt's name for O_DIRECT with the
			// guest's flushes passed through.
			d.Driver.Cache = "none"
		}
		d.Driver.IO = s.AIO
	}
	out, err := xml.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("drive: libvirt disk for %s: %w", s.Leg.Leg, err)
	}
	return append(out, '\n'), nil
}
