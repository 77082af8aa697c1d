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

	Cluster  ClusterInfo `mapstructure:"cluster" json:"cluster"`
	Nodes    []Node      `mapstructure:"nodes" json:"nodes"`
	Storage  Storage     `mapstructure:"storage" json:"storage"`
	Guests   []Guest     `mapstructure:"guests" json:"guests"`
	Security Security    `mapstructure:"security" json:"security"`
	Timeouts Timeouts    `mapstructure:"timeouts" json:"timeouts"`
}

// ClusterInfo names the cluster; both parts go into every IQN.
type ClusterInfo struct {
	Name      string `mapstructure:"name" json:"name"`
	IQNPrefix string `mapstructure:"iqn_prefix" json:"iqn_prefix"`
}

// Node is one host of the cluster.
type Node struct {
	Name string `mapstructure:"name" json:"name"`
	Role string `mapstructure:"role" json:"role"`
	// SANAddress is where this node's targetd listens and other nodes'
	// initiators connect; storage nodes only.
	SANAddress Address `mapstructure:"san_address" json:"san_address"`
	// MgmtAddress is where this node's fenced (API and ledger) listens.
	MgmtAddress Address `mapstructure:"mgmt_address" json:"mgmt_address"`
	// Storage, when set, replaces the cluster's storage section for this
	// node (a different VG name, a different directory).
	Storage *Storage `mapstructure:"storage" json:"storage,omitempty"`
}

// Storage says where a node keeps its legs.
type Storage struct {
	Backend string      `mapstructure:"backend" json:"backend"`
	LVM     LVMStorage  `mapstructure:"lvm" json:"lvm"`
	File    FileStorage `mapstructure:"file" json:"file"`
}

// LVMStorage keeps legs as logical volumes of one volume group.
type LVMStorage struct {
	VG      string `mapstructure:"vg" json:"vg"`
	Stripes int    `mapstructure:"stripes" json:"stripes"` // lvcreate -i
}

// FileStorage keeps legs as sparse files in one directory.
type FileStorage struct {
	Dir string `mapstructure:"dir" json:"dir"`
}

// Guest is one virtual machine and its mirrored disks.
type Guest struct {
	Name          string `mapstructure:"name" json:"name"`
	VCPUs         int    `mapstructure:"vcpus" json:"vcpus"`
	Memory        Size   `mapstructure:"memory" json:"memory"`
	PreferredNode string `mapstructure:"preferred_node" json:"preferred_node"`
	Disks         []Disk `mapstructure:"disks" json:"disks"`
}

// Disk is one guest disk, mirrored by md RAID1 inside the guest across one
// leg on each of two nodes.
type Disk struct {
	Name string   `mapstructure:"name" json:"name"`
	Size Size     `mapstructure:"size" json:"size"`
	Legs []string `mapstructure:"legs" json:"legs"`
}

// Security holds what guards the SAN.
type Security struct {
	// CHAPSecrets is the file with the CHAP secrets of the nodes'
	// initiators and targets; empty means no CHAP (loopback tests only).
	CHAPSecrets string `mapstructure:"chap_secrets" json:"chap_secrets"`
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
