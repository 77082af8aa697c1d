// Package raid is guestraid's policy: which legs of a guest disk to
// assemble, what to do with the others, and what to do on each observed
// state of a running array and each host message. The decisions are pure
// (PlanAssemble, Watcher.Step): they take observations and return
// actions and events, so they are unit-tested without md; Service gathers
// the observations and carries out the actions through a System (md's
// mdadm and sysfs in a guest).
package raid

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/guestraid/md"
)

// DiskSpec is one guest disk to keep mirrored.
type DiskSpec struct {
	Name      string // root
	MD        string // md0: disk i of the host info is md<i>
	ArrayName string // <guest>-<disk>, stored in the superblock
	Legs      []LegSpec
	// UUID is the array's UUID when the disk was found by scanning
	// superblocks (no host info); empty otherwise.
	UUID string
}

// LegSpec is one leg of a disk.
type LegSpec struct {
	Serial string
	Node   string // empty without host info
	Local  bool
	Stale  bool
	// Known says the host told us Local and Stale; without host info
	// there are no read/write-mostly roles and nothing is stale.
	Known bool
}

// ID names the leg in events: its node, else its serial.
func (l LegSpec) ID() string {
	if l.Node != "" {
		return l.Node
	}
	return l.Serial
}

// DisksFromHost derives the disks of host info: disk i is /dev/md<i>.
func DisksFromHost(h *channel.Host) []DiskSpec {
	var out []DiskSpec
	for i, d := range h.Disks {
		ds := DiskSpec{Name: d.Name, MD: "md" + strconv.Itoa(i), ArrayName: h.Guest + "-" + d.Name}
		for _, l := range d.Legs {
			ds.Legs = append(ds.Legs, LegSpec{Serial: l.Serial, Node: l.Node, Local: l.Local, Stale: l.Stale, Known: true})
		}
		out = append(out, ds)
	}
	return out
}

// ScannedDev is a virtio-blk device found without host info.
type ScannedDev struct {
	Dev    string
	Serial string
	Super  *md.Super // nil: blank
}

// DisksFromScan groups devices that carry RAID1 superblocks by array UUID
// when there is no host info: each group is a disk named after its array
// (without the guest prefix, which is unknown), numbered md0… in name
// order. Blank devices are not touched: without the host nobody can say
// which disk they belong to.
func DisksFromScan(devs []ScannedDev) []DiskSpec {
	groups := map[string]*DiskSpec{}
	for _, d := range devs {
		if d.Super == nil || d.Super.Level != "raid1" || d.Serial == "" {
			continue
		}
		g := groups[d.Super.ArrayUUID]
		if g == nil {
			g = &DiskSpec{Name: d.Super.Name, ArrayName: d.Super.Name, UUID: d.Super.ArrayUUID}
			if g.Name == "" {
				g.Name = d.Super.ArrayUUID
			}
			groups[d.Super.ArrayUUID] = g
		}
		g.Legs = append(g.Legs, LegSpec{Serial: d.Serial})
	}
	var out []DiskSpec
	for _, g := range groups {
		sort.Slice(g.Legs, func(i, j int) bool { return g.Legs[i].Serial < g.Legs[j].Serial })
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].UUID < out[j].UUID
	})
	for i := range out {
		out[i].MD = "md" + strconv.Itoa(i)
	}
	return out
}

// LegProbe is what assembly knows of a leg.
type LegProbe struct {
	Dev   string    // "" when no device has the leg's serial
	Super *md.Super // nil: no superblock (blank), or Dev == ""
	// Err is set when the superblock could not be read for another
	// reason than its absence: such a leg is neither blank nor usable.
	Err error
}

func (p LegProbe) present() bool { return p.Dev != "" && p.Err == nil }

// Note is an event decided by the policy, before it is stamped and sent.
type Note struct {
	Event  string
	Leg    string
	Detail string
}

func (n Note) String() string { return fmt.Sprintf("%s %s: %s", n.Event, n.Leg, n.Detail) }
