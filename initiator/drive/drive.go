// Package drive is the one place that knows how a hypervisor reaches a leg
// of a guest disk: the local volume directly (a file or a logical volume),
// a remote leg through the hypervisor's own iSCSI initiator (QEMU's
// libiscsi), or a remote leg the host kernel imported under
// /dev/mhcodi/<guest>/<disk>/<node>.
//
// Everything here is pure: For turns a configs.LegInfo into a Spec, and a
// Spec renders as QEMU -blockdev/-object arguments, as the JSON of QMP
// blockdev-add/object-add, and as a libvirt <disk> element. Writing the
// CHAP secret's file (mode 0600) is the caller's job: the secret never goes
// on a command line, where every user of the host could read it in
// /proc/<pid>/cmdline.
package drive

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"time"

	"github.com/mhcodi/mhcodi/configs"
)

// Block drivers a Spec can use.
const (
	DriverFile       = "file"        // a regular file (file storage backend)
	DriverHostDevice = "host_device" // a block device: an LV, or a kernel-imported LUN
	DriverISCSI      = "iscsi"       // QEMU's libiscsi initiator
	DriverNBD        = "nbd"         // NBD over a unix socket to mhcodi-bridge
)

// HeaderDigest is the iSCSI header digest every remote leg insists on.
//
// crc32c, not none: a header carries the LBA, the length and the task tag,
// and a bit flipped there (by a NIC, a bridge, a bad cable whose errors
// happen to pass TCP's 16-bit checksum) writes good data to the wrong
// place, which md's mirror cannot detect afterwards. The digest costs
// 4 bytes and one hardware CRC32C over a 48-byte header per PDU. It is not
// "crc32c-none" because targetd always offers crc32c, so a target that
// refuses it is misconfigured and should fail loudly. QEMU has no data
// digest option, so data is protected by TCP's checksum only.
const HeaderDigest = "crc32c"

// LUN is the LUN of every mhcodi target: one leg per target.
const LUN = 0

// Options says from where, as whom and how patiently a leg is reached.
type Options struct {
	// Host is the node that runs the guest: a leg kept on Host is local,
	// any other leg is remote.
	Host string
	// CHAP, when set, are the credentials Host's initiator logs in with
	// (configs.CHAPSecrets.InitiatorCredentials); nil logs in without.
	CHAP *Credentials
	// SecretDir is the directory the caller writes the CHAP secret's file
	// to; the Spec names <SecretDir>/<secret id>. Required with CHAP.
	SecretDir string
	// Timeout is how long QEMU's initiator waits for the target before it
	// fails a request (whole seconds; rounded up). Zero leaves QEMU's
	// default, which is to wait forever: never what a mirror leg wants.
	Timeout time.Duration
	// Links, when set, reaches every leg, local ones too, through its
	// link under the initiator's link_dir (host_device), as Xen needs:
	// those paths are the same on every host.
	Links bool
	// NoDirect opens local files with the host's page cache. Only for
	// file systems without O_DIRECT (tmpfs); see Spec.CacheDirect.
	NoDirect bool
	// BridgeDir is where mhcodi-bridge serves the guest's remote legs
	// (BridgeSocket); required when hypervisor.remote_legs is "bridge"
	// and no kernel initiator imports the legs.
	BridgeDir string
}

// BridgeSocket is the unix socket mhcodi-bridge serves leg on, in dir.
func BridgeSocket(dir string, leg configs.LegInfo) string {
	return path.Join(dir, leg.Disk+"-"+leg.Node+".sock")
}

// Credentials are a CHAP user name and secret.
type Credentials struct {
	User   string
	Secret string
}

// Secret is a QEMU secret object holding the CHAP password, read from File.
type Secret struct {
	ID   string `json:"id"`
	File string `json:"file"`
	// Data is what the caller writes to File (mode 0600) before QEMU
	// starts. It is kept out of every rendering.
	Data []byte `json:"-"`
}

// Spec is one leg as the hypervisor's block layer sees it.
type Spec struct {
	// NodeName names the block node (QEMU node-name, ≤ 31 bytes); it is
	// the leg's serial, unique in the cluster and stable.
	NodeName string `json:"node_name"`
	// Serial is the virtio-blk serial the guest sees (naming.Serial).
	Serial string `json:"serial"`
	// Leg is the leg this reaches.
	Leg configs.LegInfo `json:"leg"`
	// Host is the node that runs the guest (Options.Host); Remote says
	// the leg lives on another node.
	Host   string `json:"host"`
	Remote bool   `json:"remote"`

	Driver string `json:"driver"`
	// Filename is the file or block device (file, host_device).
	Filename string `json:"filename,omitempty"`
	// CacheDirect opens the file or device with O_DIRECT: the guest's own
	// page cache is the only one, a write the guest flushed is on the
	// disk and not in the host's memory, and the host's page cache does
	// not fill with guest data that competes with the targetd of the
	// same host.
	CacheDirect bool `json:"cache_direct,omitempty"`
	// AIO is "threads" for files (native AIO blocks the submitting
	// thread while a sparse file allocates) and "native" for block
	// devices.
	AIO string `json:"aio,omitempty"`

	// Portal is the owning node's SAN address (iscsi).
	Portal netip.AddrPort `json:"portal,omitzero"`
	// Target is the leg's target IQN.
	Target string `json:"target,omitempty"`
	// Stale: the ledger marks the leg stale, so the guest wipes it when
	// it comes back and never reads it before; nothing should wait for
	// it (the bridge fails its requests at once while it is down).
	Stale bool `json:"stale,omitempty"`
	// Initiator is Options.Host's initiator IQN: the name targetd's ACL
	// and fencing know the host by.
	Initiator string `json:"initiator,omitempty"`
	// TimeoutSec is QEMU's iscsi "timeout" in seconds, or the nbd
	// client's reconnect-delay; 0 leaves it out.
	TimeoutSec int `json:"timeout_sec,omitempty"`
	// Socket is mhcodi-bridge's unix socket for the leg (nbd); the export
	// is Target.
	Socket string `json:"socket,omitempty"`
	// User and Secret are set for CHAP.
	User   string  `json:"user,omitempty"`
	Secret *Secret `json:"secret,omitempty"`
}

// For says how Options.Host reaches leg.
func For(cfg *configs.Config, leg configs.LegInfo, o Options) (Spec, error) {
	if o.Host == "" {
		return Spec{}, errors.New("drive: no host: say which node runs the guest")
	}
	if _, ok := cfg.Node(o.Host); !ok {
		return Spec{}, fmt.Errorf("drive: host %q is not a node of cluster %s", o.Host, cfg.Cluster.Name)
	}
	s := Spec{NodeName: leg.Serial, Serial: leg.Serial, Leg: leg, Host: o.Host, Remote: leg.Node != o.Host}
	if s.NodeName == "" {
		return Spec{}, fmt.Errorf("drive: leg %s/%s/%s has no serial", leg.Guest, leg.Disk, leg.Node)
	}
	kernelImport := cfg.Initiator.Backend == configs.InitiatorOpenISCSI || cfg.Initiator.Backend == configs.InitiatorNetlink
	switch {
	case o.Links || (s.Remote && kernelImport):
		s.Driver, s.Filename, s.CacheDirect, s.AIO = DriverHostDevice, LinkPath(cfg, leg), true, "native"
	case !s.Remote:
		switch leg.Backend {
		case configs.BackendFile:
			s.Driver, s.AIO = DriverFile, "threads"
		case configs.BackendLVM:
			s.Driver, s.AIO = DriverHostDevice, "native"
		default:
			return Spec{}, fmt.Errorf("drive: leg %s: unknown storage backend %q", leg.Leg, leg.Backend)
		}
		s.Filename = leg.Location
		s.CacheDirect = !o.NoDirect
		if o.NoDirect && s.AIO == "native" {
			// native AIO needs O_DIRECT (QEMU refuses the pair).
			s.AIO = "threads"
		}
	default:
		n, ok := cfg.Node(leg.Node)
		if !ok {
			return Spec{}, fmt.Errorf("drive: leg %s: node %q is not in the cluster", leg.Leg, leg.Node)
		}
		if n.SANAddress.IsZero() {
			return Spec{}, fmt.Errorf("drive: leg %s: node %s has no san_address", leg.Leg, leg.Node)
		}
		s.Portal = n.SANAddress.AddrPort(configs.DefaultSANPort)
		s.Target = leg.TargetIQN
		s.Initiator = cfg.InitiatorIQN(o.Host)
		if o.Timeout > 0 {
			s.TimeoutSec = int((o.Timeout + time.Second - 1) / time.Second)
		}
		if cfg.Hypervisor.RemoteLegs != configs.RemoteLibiscsi {
			// The bridge logs in (with CHAP) and fails requests after
			// the timeout; QEMU only talks NBD to it.
			if o.BridgeDir == "" {
				return Spec{}, fmt.Errorf("drive: leg %s: remote legs go through mhcodi-bridge, but no bridge directory was given", leg.Leg)
			}
			s.Driver = DriverNBD
			s.Socket = BridgeSocket(o.BridgeDir, leg)
			return s, nil
		}
		s.Driver = DriverISCSI
		if o.CHAP != nil {
			if o.SecretDir == "" {
				return Spec{}, fmt.Errorf("drive: leg %s: CHAP needs a directory for the secret's file", leg.Leg)
			}
			if o.CHAP.User == "" || o.CHAP.Secret == "" {
				return Spec{}, fmt.Errorf("drive: leg %s: CHAP credentials without user or secret", leg.Leg)
			}
			id := "sec-" + s.NodeName
			s.User = o.CHAP.User
			s.Secret = &Secret{ID: id, File: path.Join(o.SecretDir, id), Data: []byte(o.CHAP.Secret)}
		}
	}
	return s, nil
}

// LinkPath is where the host kernel's import (or the local volume) of leg
// is linked: <initiator.link_dir>/<guest>/<disk>/<node>, the same path on
// every host.
func LinkPath(cfg *configs.Config, leg configs.LegInfo) string {
	dir := cfg.Initiator.LinkDir
	if dir == "" {
		return leg.DevPath
	}
	return path.Join(dir, leg.Guest, leg.Disk, leg.Node)
}
