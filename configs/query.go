package configs

import (
	"github.com/mhcodi/mhcodi/naming"
)

// Node returns the node called name.
func (c *Config) Node(name string) (*Node, bool) {
	for i := range c.Nodes {
		if c.Nodes[i].Name == name {
			return &c.Nodes[i], true
		}
	}
	return nil, false
}

// Guest returns the guest called name.
func (c *Config) Guest(name string) (*Guest, bool) {
	for i := range c.Guests {
		if c.Guests[i].Name == name {
			return &c.Guests[i], true
		}
	}
	return nil, false
}

// StorageFor is the storage section that applies to node: its own, or the
// cluster's.
func (c *Config) StorageFor(node string) Storage {
	if n, ok := c.Node(node); ok && n.Storage != nil {
		return *n.Storage
	}
	return c.Storage
}

// InitiatorIQN is the iSCSI initiator name of node.
func (c *Config) InitiatorIQN(node string) string {
	return naming.InitiatorIQN(c.Cluster.IQNPrefix, c.Cluster.Name, node)
}

// LegInfo is one leg of one guest disk with every name derived for it.
type LegInfo struct {
	Guest     string     `json:"guest"`
	Disk      string     `json:"disk"`
	Node      string     `json:"node"`
	Size      Size       `json:"size"`
	SizeBytes uint64     `json:"size_bytes"`
	Volume    string     `json:"volume"`
	Backend   string     `json:"backend"`
	Location  string     `json:"location"` // LV path or file path on Node
	TargetIQN string     `json:"target_iqn"`
	DevPath   string     `json:"dev_path"`
	Serial    string     `json:"serial"`
	WWN       string     `json:"wwn"`
	Leg       naming.Leg `json:"-"`
}

// Legs lists every leg of every guest disk, in file order.
func (c *Config) Legs() []LegInfo {
	var out []LegInfo
	for _, g := range c.Guests {
		for _, d := range g.Disks {
			for _, node := range d.Legs {
				out = append(out, c.legInfo(g.Name, d, node))
			}
		}
	}
	return out
}

// LegsOn lists the legs kept on node.
func (c *Config) LegsOn(node string) []LegInfo {
	var out []LegInfo
	for _, l := range c.Legs() {
		if l.Node == node {
			out = append(out, l)
		}
	}
	return out
}

func (c *Config) legInfo(guest string, d Disk, node string) LegInfo {
	l := naming.Leg{Cluster: c.Cluster.Name, Guest: guest, Disk: d.Name, Node: node}
	vol := naming.VolumeName(guest, d.Name)
	s := c.StorageFor(node)
	loc := ""
	switch s.Backend {
	case BackendLVM:
		loc = "/dev/" + s.LVM.VG + "/" + vol
	case BackendFile:
		loc = s.File.Dir + "/" + vol
	}
	return LegInfo{
		Guest: guest, Disk: d.Name, Node: node,
		Size: d.Size, SizeBytes: uint64(d.Size),
		Volume: vol, Backend: s.Backend, Location: loc,
		TargetIQN: naming.TargetIQN(c.Cluster.IQNPrefix, l),
		DevPath:   naming.DevPath(guest, d.Name, node),
		Serial:    naming.Serial(l),
		WWN:       naming.FormatWWN(naming.WWN(l)),
		Leg:       l,
	}
}
