// Package configs loads and validates the cluster file that every mhcodi node
// reads: one file, identical on every node, from which each daemon picks its
// own node by name.
//
// Loading is strict: an unknown key, a value of the wrong type or a rule
// broken anywhere is an error that names the file, the key path and the rule,
// and every such error in the file is reported at once.
package configs

import (
	"net/netip"
	"time"
)

// DefaultPath is where daemons and the CLI look when --config is not given.
const DefaultPath = "/etc/mhcodi/cluster.yaml"

// EnvPrefix starts the environment variables that override scalar keys:
// timeouts.lease_ttl is MHCODI_TIMEOUTS_LEASE_TTL.
const EnvPrefix = "MHCODI"

// Default ports, used when an address in the file has none.
const (
	DefaultSANPort  = 3260 // iSCSI (RFC 7143 §13.4)
	DefaultMgmtPort = 7440 // mhcodi-fenced's API between nodes
)

// Node roles.
const (
	RoleStorage = "storage" // holds legs, runs guests, votes in the ledger
	RoleWitness = "witness" // votes in the ledger only (quorum for two storage nodes)
)

// Storage backends.
const (
	BackendLVM  = "lvm"
	BackendFile = "file"
)

// Config is one cluster file, decoded, defaulted and validated.
type Config struct {
	// Path is the file it was loaded from, as given; Dir is its absolute
	// directory, against which relative paths in the file were resolved.
	Path string `mapstructure:"-" json:"path"`
	Dir  string `mapstructure:"-" json:"-"`

	Cluster ClusterInfo `mapstructure:"cluster" json:"cluster"`
	Nodes   []Node      `mapstructure:"nodes" json:"nodes"`
	Storage Storage     `mapstructure:"storage" json:"storage"`
	// Networks are the service networks guests' NICs join, by name.
	Networks map[string]Network `mapstructure:"networks" json:"networks,omitempty"`
	Guests   []Guest            `mapstructure:"guests" json:"guests"`
	Security Security           `mapstructure:"security" json:"security"`
	Timeouts Timeouts           `mapstructure:"timeouts" json:"timeouts"`
	// Hypervisor says how the storage nodes run guests.
	Hypervisor Hypervisor `mapstructure:"hypervisor" json:"hypervisor"`
	// Initiator says how a node reaches the legs that live on other nodes.
	Initiator Initiator `mapstructure:"initiator" json:"initiator"`
	// Fencing says how mhcodi-fenced keeps every guest on one host.
	Fencing Fencing `mapstructure:"fencing" json:"fencing"`
}

// Fencing configures mhcodi-fenced and its ledger.
type Fencing struct {
	// AutoFailover lets a node with quorum start a guest whose owner's
	// lease expired. Off by default: mhcodi starts nothing by itself.
	AutoFailover bool `mapstructure:"auto_failover" json:"auto_failover"`
	// LeaseMargin is how long before its lease could expire elsewhere an
	// owner that cannot renew destroys its guests.
	LeaseMargin time.Duration `mapstructure:"lease_margin" json:"lease_margin"`
	// MonitorInterval is how often every fenced compares the guests its
	// hypervisor runs with the ledger.
	MonitorInterval time.Duration `mapstructure:"monitor_interval" json:"monitor_interval"`
	// Watchdog is a watchdog device (/dev/watchdog) fenced arms and feeds
	// while it is healthy, so a hung fenced still fences; "" for none.
	Watchdog string `mapstructure:"watchdog" json:"watchdog"`
	// StateDir holds the embedded etcd member's data (and the node's
	// event journal, events.jsonl).
	StateDir string `mapstructure:"state_dir" json:"state_dir"`
	// EventHook is a program fenced runs for every event of the cluster
	// event log it records, with the event as JSON on stdin (one at a
	// time, each bounded by a timeout, never holding fenced up); "" for
	// none.
	EventHook string `mapstructure:"event_hook" json:"event_hook,omitempty"`
	// Etcd is the ledger's etcd: embedded members on the nodes'
	// management addresses unless Endpoints names an external cluster.
	Etcd Etcd `mapstructure:"etcd" json:"etcd"`
}

// Etcd locates the ledger.
type Etcd struct {
	// Endpoints are the client URLs (https://...) of an external etcd
	// cluster to keep the ledger in; left out, every node runs an
	// embedded member.
	Endpoints []string `mapstructure:"endpoints" json:"endpoints,omitempty"`
	// ClientPort is the embedded members' client port on the management
	// addresses.
	ClientPort uint16 `mapstructure:"client_port" json:"client_port"`
	// PeerPort is the embedded members' peer port on the management
	// addresses.
	PeerPort uint16 `mapstructure:"peer_port" json:"peer_port"`
}

// ClusterInfo names the cluster; both parts go into every IQN.
type ClusterInfo struct {
	// Name is the cluster's name, a DNS label; it is part of every IQN,
	// serial and WWN, so two clusters on one SAN never mix their legs.
	Name string `mapstructure:"name" json:"name"`
	// IQNPrefix starts every target and initiator IQN:
	// iqn.<yyyy-mm>.<reversed domain you own>, e.g. iqn.2026-11.org.example.
	IQNPrefix string `mapstructure:"iqn_prefix" json:"iqn_prefix"`
}

// Node is one host of the cluster.
type Node struct {
	// Name is the node's name, a DNS label unique in the cluster: what
	// --node and the units' instance names (mhcodi-targetd@<name>) say.
	Name string `mapstructure:"name" json:"name"`
	// Role is "storage" (holds legs, runs guests, votes in the ledger) or
	// "witness" (votes only: the third voter of two storage nodes; no SAN
	// address, no storage).
	Role string `mapstructure:"role" json:"role"`
	// SANAddress is where this node's targetd listens and other nodes'
	// initiators connect; storage nodes only.
	SANAddress Address `mapstructure:"san_address" json:"san_address"`
	// MgmtAddress is where this node's fenced (API and ledger) listens.
	MgmtAddress Address `mapstructure:"mgmt_address" json:"mgmt_address"`
	// Storage, when set, replaces the cluster's storage section for this
	// node (a different VG name, a different directory).
	Storage *Storage `mapstructure:"storage" json:"storage,omitempty"`
	// SANBridge is the bridge that carries this node's SAN address, if
	// it is on one: no service network may use it, so guests never share
	// a segment with the iSCSI traffic.
	SANBridge string `mapstructure:"san_bridge" json:"san_bridge,omitempty"`
	// Networks, when set, replace a service network's bridge on this node
	// (the VLAN stays the network's).
	Networks map[string]NodeNetwork `mapstructure:"networks" json:"networks,omitempty"`
}

// Network is a service network: a Linux bridge on every storage node,
// optionally with a VLAN that guests' ports are put in (bridge VLAN
// filtering: the port's PVID, untagged towards the guest).
type Network struct {
	// Bridge is the bridge's name on every node that does not name its
	// own (nodes[].networks.<name>.bridge).
	Bridge string `mapstructure:"bridge" json:"bridge,omitempty"`
	// VLAN is the 802.1Q VLAN ID (1–4094) of the guests' ports; 0 or left
	// out: untagged, no VLAN filtering asked of the bridge.
	VLAN int `mapstructure:"vlan" json:"vlan,omitempty"`
}

// NodeNetwork is one node's own bridge of a service network.
type NodeNetwork struct {
	// Bridge is the bridge's name on this node.
	Bridge string `mapstructure:"bridge" json:"bridge"`
}

// NIC is a guest's network interface on a service network. Its MAC is
// derived from the cluster, guest and NIC names (naming.MAC), so it is the
// same on every host unless MAC overrides it.
type NIC struct {
	// Name tells a guest's NICs apart; default: the network's name. It is
	// part of the derived MAC.
	Name string `mapstructure:"name" json:"name"`
	// Network is the service network (a key of networks) the NIC joins.
	Network string `mapstructure:"network" json:"network"`
	// MAC overrides the derived address (a unicast MAC, e.g. to keep the
	// one a guest had before it came to mhcodi).
	MAC string `mapstructure:"mac" json:"mac,omitempty"`
	// Address is an optional static address with its prefix length
	// (192.0.2.10/24), handed to the guest in its host info; left out,
	// the guest configures the NIC itself (DHCP).
	Address string `mapstructure:"address" json:"address,omitempty"`
}

// Storage says where a node keeps its legs.
type Storage struct {
	// Backend is "lvm" (legs are logical volumes of lvm.vg) or "file"
	// (sparse files in file.dir).
	Backend string `mapstructure:"backend" json:"backend"`
	// LVM says where the lvm backend keeps legs.
	LVM LVMStorage `mapstructure:"lvm" json:"lvm"`
	// File says where the file backend keeps legs.
	File FileStorage `mapstructure:"file" json:"file"`
}

// LVMStorage keeps legs as logical volumes of one volume group.
type LVMStorage struct {
	// VG is the volume group that holds the legs, as
	// /dev/<vg>/mhc-<guest>-<disk>.
	VG string `mapstructure:"vg" json:"vg"`
	// Stripes is lvcreate -i: more than 1 stripes each leg over that many
	// physical volumes of the VG.
	Stripes int `mapstructure:"stripes" json:"stripes"`
}

// FileStorage keeps legs as sparse files in one directory.
type FileStorage struct {
	// Dir is the directory of the leg files, mhc-<guest>-<disk>; relative
	// to the cluster file's directory unless absolute.
	Dir string `mapstructure:"dir" json:"dir"`
}

// Guest is one virtual machine and its mirrored disks.
type Guest struct {
	// Name is the guest's name, a DNS label unique in the cluster.
	Name string `mapstructure:"name" json:"name"`
	// VCPUs is the number of virtual CPUs.
	VCPUs int `mapstructure:"vcpus" json:"vcpus"`
	// Memory is the guest's memory, e.g. 2G.
	Memory Size `mapstructure:"memory" json:"memory"`
	// PreferredNode is where the guest starts when no node is named; it
	// must hold a leg of every disk of the guest, so reads stay local.
	// Left out: the node of the first disk's first leg.
	PreferredNode string `mapstructure:"preferred_node" json:"preferred_node"`
	// Disks are the guest's disks, each mirrored across two nodes.
	Disks []Disk `mapstructure:"disks" json:"disks"`
	// NICs are the guest's network interfaces, in the order the guest
	// sees them; none: the guest has no network.
	NICs []NIC `mapstructure:"nics" json:"nics,omitempty"`
	// Boot is the kernel the hypervisor boots directly; left out, the
	// guest boots the image that `mhcodi image build` wrote to
	// hypervisor.image_dir.
	Boot Boot `mapstructure:"boot" json:"boot"`
}

// Boot is a direct kernel boot (qemu -kernel/-initrd/-append, xl
// kernel/ramdisk/extra). Relative paths are resolved against the file's
// directory.
type Boot struct {
	// Kernel is the kernel image the guest boots.
	Kernel string `mapstructure:"kernel" json:"kernel,omitempty"`
	// Initramfs is its initramfs (with guestraid, e.g. the
	// initramfs-tools hook of the mhcodi-guest package).
	Initramfs string `mapstructure:"initramfs" json:"initramfs,omitempty"`
	// Cmdline is the kernel command line.
	Cmdline string `mapstructure:"cmdline" json:"cmdline,omitempty"`
}

// Hypervisor drivers and accelerators.
const (
	DriverQEMU = "qemu"
	DriverXen  = "xen"

	AccelAuto = "auto" // KVM when the CPU has vmx/svm and /dev/kvm exists, else TCG
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// Hypervisor is how guests run on the storage nodes.
type Hypervisor struct {
	// Driver is "qemu" (qemu processes with a QMP socket each, no
	// libvirt) or "xen" (xl).
	Driver string `mapstructure:"driver" json:"driver"`
	// Accel is qemu's accelerator: "auto", "kvm" or "tcg". Set "tcg"
	// where /dev/kvm exists but does not work.
	Accel string `mapstructure:"accel" json:"accel"`
	// QEMU is the qemu binary.
	QEMU string `mapstructure:"qemu" json:"qemu"`
	// RunDir holds each running guest's QMP socket, channel socket,
	// console log and pid file.
	RunDir string `mapstructure:"run_dir" json:"run_dir"`
	// ImageDir holds the guest image (vmlinuz, initramfs.cpio) that
	// guests without a boot section boot.
	ImageDir string `mapstructure:"image_dir" json:"image_dir"`
	// StopTimeout is how long a stop waits after the ACPI power button
	// before it destroys the guest.
	StopTimeout time.Duration `mapstructure:"stop_timeout" json:"stop_timeout"`
	// IOTimeout is how long a request to a remote leg may wait for its
	// target before it fails, so md drops the leg instead of stalling the
	// guest (the leg bridge's timeout, or QEMU's iscsi "timeout").
	IOTimeout time.Duration `mapstructure:"io_timeout" json:"io_timeout"`
	// RemoteLegs is how qemu reaches a remote leg when no kernel
	// initiator imports it: "bridge" (NBD over a unix socket to
	// mhcodi-bridge, a userspace iSCSI initiator that fails requests after
	// io_timeout and logs in again by itself) or "libiscsi" (QEMU's own
	// iSCSI driver, which freezes the whole guest while a target is
	// down: measured, see README).
	RemoteLegs string `mapstructure:"remote_legs" json:"remote_legs"`
}

// Ways qemu reaches a remote leg (hypervisor.remote_legs).
const (
	RemoteBridge   = "bridge"
	RemoteLibiscsi = "libiscsi"
)

// Initiator backends.
const (
	// InitiatorQEMU imports nothing into the host kernel: the hypervisor's
	// own initiator (QEMU's libiscsi) reaches the remote leg.
	InitiatorQEMU = "qemu"
	// InitiatorOpenISCSI imports remote legs with iscsiadm and iscsid.
	InitiatorOpenISCSI = "open-iscsi"
	// InitiatorNetlink imports remote legs with the kernel's iSCSI netlink
	// interface (u-root/iscsinl), for hosts without iscsid; no CHAP.
	InitiatorNetlink = "netlink"
)

// Initiator is how a node reaches the legs on other nodes.
type Initiator struct {
	// Backend is "qemu" (nothing imported into the host kernel: qemu
	// reaches remote legs itself, see hypervisor.remote_legs),
	// "open-iscsi" (iscsiadm and iscsid, with CHAP) or "netlink" (the
	// kernel's iSCSI netlink interface, no iscsid, no CHAP).
	Backend string `mapstructure:"backend" json:"backend"`
	// LinkDir is where /dev/mhcodi/<guest>/<disk>/<node> links live.
	LinkDir string `mapstructure:"link_dir" json:"link_dir"`
}

// Disk is one guest disk, mirrored by md RAID1 inside the guest across one
// leg on each of two nodes.
type Disk struct {
	// Name is the disk's name, a DNS label unique within its guest.
	Name string `mapstructure:"name" json:"name"`
	// Size is the size of each leg, a whole number of MiB (10G, 512M).
	Size Size `mapstructure:"size" json:"size"`
	// Legs are the two storage nodes that keep a copy of the disk.
	Legs []string `mapstructure:"legs" json:"legs"`
}

// Security holds what guards the SAN.
type Security struct {
	// CHAPSecrets is the file with the CHAP secrets of the nodes'
	// initiators and targets; empty means no CHAP (loopback tests only).
	CHAPSecrets string `mapstructure:"chap_secrets" json:"chap_secrets"`
	// TLSDir holds the cluster's certificates (mhcodi cluster init): ca.crt,
	// and <node>.crt/<node>.key for every node (admin.crt/.key for the
	// CLI); fenced's API and etcd require them.
	TLSDir string `mapstructure:"tls_dir" json:"tls_dir"`
}

// Timeouts that decide how fast a dead leg or a dead host is given up on.
type Timeouts struct {
	// ReplacementTimeout is how long an initiator waits for a lost session
	// to come back before failing I/O, so md drops the leg (open-iscsi's
	// node.session.timeo.replacement_timeout, whose 120 s default is far
	// too long for a mirror leg).
	ReplacementTimeout time.Duration `mapstructure:"replacement_timeout" json:"replacement_timeout"`
	// LeaseTTL is how long a guest's ownership lease lasts without renewal.
	LeaseTTL time.Duration `mapstructure:"lease_ttl" json:"lease_ttl"`
}

// Defaults, applied to keys the file leaves out.
const (
	DefaultReplacementTimeout = 10 * time.Second
	DefaultLeaseTTL           = 10 * time.Second
	DefaultVCPUs              = 1
	DefaultMemory             = 512 * MiB
	DefaultStripes            = 1
	DefaultHypervisorDriver   = DriverQEMU
	DefaultAccel              = AccelAuto
	DefaultQEMU               = "qemu-system-x86_64"
	DefaultRunDir             = "/run/mhcodi/guests"
	DefaultImageDir           = "/var/lib/mhcodi/image"
	DefaultStopTimeout        = 60 * time.Second
	DefaultIOTimeout          = 5 * time.Second
	DefaultInitiatorBackend   = InitiatorQEMU
	DefaultLinkDir            = "/dev/mhcodi"
	DefaultLeaseMargin        = 3 * time.Second
	DefaultMonitorInterval    = 3 * time.Second
	DefaultFencedStateDir     = "/var/lib/mhcodi/fenced"
	DefaultTLSDir             = "/etc/mhcodi/tls"
	DefaultEtcdClientPort     = 2379
	DefaultEtcdPeerPort       = 2380
)

// Address is an IP address with an optional port; Port 0 means the default
// port of whatever listens there. Host names are refused on purpose: the
// failover path must not hang on a DNS lookup.
type Address struct {
	IP   netip.Addr
	Port uint16
}

// AddrPort is a with def filled in when the file gave no port.
func (a Address) AddrPort(def uint16) netip.AddrPort {
	p := a.Port
	if p == 0 {
		p = def
	}
	return netip.AddrPortFrom(a.IP, p)
}

// IsZero reports whether the address was left out.
func (a Address) IsZero() bool { return !a.IP.IsValid() }
