package hypervisor

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator/drive"
	"github.com/mhcodi/mhcodi/naming"
)

// ChannelName is the virtio-serial port (and Xen channel) name of the
// guestraid channel; the guest finds it as /dev/virtio-ports/<name>.
const ChannelName = "org.mhcodi.guestraid.0"

// HostInfoName is the fw_cfg file the host info is given to the guest as
// (/sys/firmware/qemu_fw_cfg/by_name/opt/org.mhcodi/host/raw).
const HostInfoName = "opt/org.mhcodi/host"

// BaseCmdline starts every guest's kernel command line: the console on the
// first serial port (qemu's console log) and a quiet boot.
const BaseCmdline = "console=ttyS0 quiet"

// XenBaseCmdline is BaseCmdline for Xen guests.
const XenBaseCmdline = "console=hvc0 quiet"

// Files of a guest's run directory, <run_dir>/<guest>/.
const (
	QMPSocket     = "qmp.sock"
	ChannelSocket = "channel.sock"
	ConsoleLog    = "console.log"
	ConsoleSocket = "console.sock"
	PIDFile       = "qemu.pid"
	HostInfoFile  = "host.json"
	StderrLog     = "qemu.stderr"
	XLConfigFile  = "xl.cfg"
)

// GuestSpec is everything a driver needs to start one guest on one host.
type GuestSpec struct {
	Name string `json:"name"`
	// Node is the host the spec is for: it decides which legs are local.
	Node      string `json:"node"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB uint64 `json:"memory_mib"`
	Kernel    string `json:"kernel"`
	Initramfs string `json:"initramfs"`
	Cmdline   string `json:"cmdline"`
	// Disks are in config order, each with its legs in leg order.
	Disks []DiskSpec `json:"disks"`
	// NICs are in config order, each with its bridge on Node.
	NICs []NICSpec `json:"nics,omitempty"`
	// HostInfo is opaque JSON the guest reads (qemu: fw_cfg HostInfoName);
	// nil gives the guest none.
	HostInfo []byte `json:"host_info,omitempty"`
	// RunDir is <run_dir>/<guest>: sockets, console, pid file.
	RunDir string `json:"run_dir"`
}

// NICSpec is one NIC: the host's tap (qemu) or vif (xen) named Tap on
// Bridge, in VLAN (0: untagged), and the guest's interface with MAC.
type NICSpec struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	MAC     string `json:"mac"`
	Bridge  string `json:"bridge"`
	VLAN    int    `json:"vlan,omitempty"`
	Tap     string `json:"tap"`
}

// DiskSpec is one mirrored disk.
type DiskSpec struct {
	Name string       `json:"name"`
	Legs []drive.Spec `json:"legs"`
}

// Drive is one leg with the guest device it becomes.
type Drive struct {
	Dev string // vda, vdb… (qemu) or xvda, xvdb… (xen)
	drive.Spec
}

// Drives lists the legs in device order: disk 0 leg 0, disk 0 leg 1,
// disk 1 leg 0… named with prefix ("vd" or "xvd").
func (s GuestSpec) Drives(prefix string) []Drive {
	var out []Drive
	for _, d := range s.Disks {
		for _, l := range d.Legs {
			out = append(out, Drive{Dev: prefix + diskLetters(len(out)), Spec: l})
		}
	}
	return out
}

// diskLetters is Linux's disk suffix of index i: a…z, aa…az, ba…
func diskLetters(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('a'+(i-1)%26)) + s
	}
	return s
}

// Secrets are the CHAP secret files the driver writes before starting.
func (s GuestSpec) Secrets() []drive.Secret {
	var out []drive.Secret
	seen := map[string]bool{}
	for _, d := range s.Disks {
		for _, l := range d.Legs {
			if l.Secret != nil && !seen[l.Secret.ID] {
				seen[l.Secret.ID] = true
				out = append(out, *l.Secret)
			}
		}
	}
	return out
}

// specOptions are SpecFor's options.
type specOptions struct {
	runDir    string
	chap      *configs.CHAPSecrets
	noDirect  bool
	ioTimeout time.Duration
	stale     map[string]bool
}

// SpecOption changes what SpecFor builds.
type SpecOption func(*specOptions)

// WithCHAP makes remote legs log in with node's initiator credentials from
// the cluster's secrets file (cfg.LoadCHAPSecrets()). SpecFor fails if
// node has none.
func WithCHAP(s *configs.CHAPSecrets) SpecOption {
	return func(o *specOptions) { o.chap = s }
}

// WithRunDir overrides hypervisor.run_dir, the parent of the guests' run
// directories (the driver's Options.RunDir).
func WithRunDir(dir string) SpecOption {
	return func(o *specOptions) { o.runDir = dir }
}

// WithoutDirectIO opens local legs through the host's page cache, for
// volume files on a file system without O_DIRECT (tmpfs).
func WithoutDirectIO() SpecOption {
	return func(o *specOptions) { o.noDirect = true }
}

// WithStale marks the legs on these nodes stale (the ledger's stale
// list): the guest wipes them, so a start does not wait for them.
func WithStale(nodes map[string]bool) SpecOption {
	return func(o *specOptions) { o.stale = nodes }
}

// WithIOTimeout overrides hypervisor.io_timeout for remote iSCSI legs.
func WithIOTimeout(d time.Duration) SpecOption {
	return func(o *specOptions) { o.ioTimeout = d }
}

// SpecFor builds the GuestSpec of guest for node from the cluster file. It
// is pure: files are only named, the CHAP secrets come in through
// WithCHAP. Under Xen every leg is the host kernel's, reached through its
// link (<initiator.link_dir>/<guest>/<disk>/<node>), since xl has no iSCSI
// initiator of its own.
func SpecFor(cfg *configs.Config, guest, node string, hostInfo []byte, opts ...SpecOption) (GuestSpec, error) {
	var o specOptions
	for _, f := range opts {
		f(&o)
	}
	g, ok := cfg.Guest(guest)
	if !ok {
		return GuestSpec{}, fmt.Errorf("hypervisor: guest %q is not in %s", guest, cfg.Path)
	}
	if _, ok := cfg.Node(node); !ok {
		return GuestSpec{}, fmt.Errorf("hypervisor: node %q is not in %s", node, cfg.Path)
	}
	h := cfg.Hypervisor
	if o.runDir != "" {
		h.RunDir = o.runDir
	}
	runDir := filepath.Join(h.RunDir, guest)
	s := GuestSpec{
		Name:      guest,
		Node:      node,
		VCPUs:     g.VCPUs,
		MemoryMiB: uint64(g.Memory) / uint64(configs.MiB),
		Kernel:    g.Boot.Kernel,
		Initramfs: g.Boot.Initramfs,
		Cmdline:   BaseCmdline,
		HostInfo:  hostInfo,
		RunDir:    runDir,
	}
	if s.VCPUs <= 0 {
		s.VCPUs = configs.DefaultVCPUs
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = uint64(configs.DefaultMemory) / uint64(configs.MiB)
	}
	if s.Kernel == "" {
		s.Kernel = filepath.Join(h.ImageDir, "vmlinuz")
		s.Initramfs = filepath.Join(h.ImageDir, "initramfs.cpio")
	}
	if h.Driver == configs.DriverXen {
		// A PVH guest's console is Xen's PV console, not a UART.
		s.Cmdline = XenBaseCmdline
	}
	if g.Boot.Cmdline != "" {
		s.Cmdline += " " + g.Boot.Cmdline
	}
	do := drive.Options{
		Host:      node,
		SecretDir: runDir,
		Timeout:   h.IOTimeout,
		Links:     h.Driver == configs.DriverXen,
		NoDirect:  o.noDirect,
		BridgeDir: BridgeDirOf(runDir),
	}
	if o.ioTimeout > 0 {
		do.Timeout = o.ioTimeout
	}
	if o.chap != nil {
		user, secret, ok := o.chap.InitiatorCredentials(cfg, node)
		if !ok {
			return GuestSpec{}, fmt.Errorf("hypervisor: guest %s: node %s has no initiator CHAP secret in %s", guest, node, cfg.Security.CHAPSecrets)
		}
		do.CHAP = &drive.Credentials{User: user, Secret: secret}
	}
	legs := map[naming.Leg]configs.LegInfo{}
	for _, l := range cfg.Legs() {
		if l.Guest == guest {
			legs[l.Leg] = l
		}
	}
	for _, d := range g.Disks {
		ds := DiskSpec{Name: d.Name}
		for _, n := range d.Legs {
			li, ok := legs[naming.Leg{Cluster: cfg.Cluster.Name, Guest: guest, Disk: d.Name, Node: n}]
			if !ok {
				return GuestSpec{}, fmt.Errorf("hypervisor: guest %s disk %s: no leg on %s", guest, d.Name, n)
			}
			ls, err := drive.For(cfg, li, do)
			if err != nil {
				return GuestSpec{}, fmt.Errorf("hypervisor: guest %s disk %s: %w", guest, d.Name, err)
			}
			ls.Stale = o.stale[n]
			ds.Legs = append(ds.Legs, ls)
		}
		s.Disks = append(s.Disks, ds)
	}
	if len(s.Disks) == 0 {
		return GuestSpec{}, errors.New("hypervisor: guest " + guest + " has no disks")
	}
	for _, n := range cfg.NICs(guest) {
		br := n.Bridges[node]
		if br == "" {
			return GuestSpec{}, fmt.Errorf("hypervisor: guest %s NIC %s: network %s has no bridge on %s", guest, n.Name, n.Network, node)
		}
		s.NICs = append(s.NICs, NICSpec{Name: n.Name, Network: n.Network, MAC: n.MAC, Bridge: br, VLAN: n.VLAN, Tap: n.Tap})
	}
	return s, nil
}
