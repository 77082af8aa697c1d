package ops

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// Leg states, as mhcodi status shows them.
const (
	LegUp        = "up"        // in the array and in sync (or, guest stopped: exported)
	LegDegraded  = "degraded"  // faulty or kept out of the array
	LegResyncing = "resyncing" // being rebuilt (Progress)
	LegStale     = "stale"     // may hold another runner's writes (StaleEpoch): wiped and resynced in full
	LegMissing   = "missing"   // the guest has no device for it, or its node does not export it
	LegDown      = "down"      // its node does not answer
	LegUnknown   = "unknown"   // the guest runs but its guestraid has not reported the leg
	LegFailed    = "failed"    // its volume failed an fdatasync: targetd fails every write to it (SyncError)
)

// Report is mhcodi status: the hosts and every guest, from a view.
type Report struct {
	Self string    `json:"self"`
	Time time.Time `json:"time"`
	// Mode is "quorum" (three voters, or an external etcd) or "two-node"
	// (nothing fails over without the sysadmin's word).
	Mode        string     `json:"mode"`
	Quorum      bool       `json:"quorum"`
	LedgerErr   string     `json:"ledger_err,omitempty"`
	LedgerStale bool       `json:"ledger_stale,omitempty"`
	Hosts       []HostRow  `json:"hosts"`
	Guests      []GuestRow `json:"guests"`
}

// HostRow is one node.
type HostRow struct {
	Node          string   `json:"node"`
	Role          string   `json:"role"`
	Up            bool     `json:"up"`
	Err           string   `json:"err,omitempty"`
	Quorum        bool     `json:"quorum"` // its ledger can be written
	MemoryFreeMiB uint64   `json:"memory_free_mib"`
	Running       []string `json:"running"`
}

// GuestRow is one guest: the cluster file's, the ledger's, or one that
// runs somewhere.
type GuestRow struct {
	Guest   string    `json:"guest"`
	InFile  bool      `json:"in_file"`
	Owner   string    `json:"owner,omitempty"`
	Epoch   uint64    `json:"epoch"`
	Desired string    `json:"desired,omitempty"`
	Lease   string    `json:"lease,omitempty"` // holder
	Running []string  `json:"running"`         // nodes that run it
	State   string    `json:"state,omitempty"` // the hypervisor's, where it runs
	Disks   []DiskRow `json:"disks"`
}

// DiskRow is one disk of a guest.
type DiskRow struct {
	Disk string   `json:"disk"`
	Legs []LegRow `json:"legs"`
}

// LegRow is one leg.
type LegRow struct {
	Node       string  `json:"node"`
	State      string  `json:"state"`
	Progress   float64 `json:"progress,omitempty"`    // 0..1 while resyncing
	StaleEpoch uint64  `json:"stale_epoch,omitempty"` // when stale
	SyncError  string  `json:"sync_error,omitempty"`  // when failed
}

// Word is the leg's state as a table shows it: "up", "resyncing 42%",
// "stale since epoch 5"…
func (l LegRow) Word() string {
	switch l.State {
	case LegResyncing:
		return fmt.Sprintf("resyncing %d%%", int(l.Progress*100))
	case LegStale:
		s := fmt.Sprintf("stale since epoch %d", l.StaleEpoch)
		if l.Progress > 0 {
			s += fmt.Sprintf(", resyncing %d%%", int(l.Progress*100))
		}
		return s
	case LegFailed:
		return "failed (fdatasync failed: writes refused)"
	}
	return l.State
}

// Summarize builds mhcodi status's report from a view.
func Summarize(cfg *configs.Config, v api.ClusterView) Report {
	f := NewFacts(cfg, v.Self, v)
	r := Report{Self: v.Self, Time: v.Time, Mode: ifElse(QuorumMode(cfg), "quorum", "two-node"),
		Quorum: v.Quorum, LedgerErr: v.LedgerErr, LedgerStale: v.LedgerStale}
	for _, n := range v.Nodes {
		h := HostRow{Node: n.Node, Role: n.Role, Up: n.Up, Err: n.Err, Running: []string{}}
		if n.Up {
			h.Quorum, h.MemoryFreeMiB = n.Status.Quorum, n.Status.MemoryFreeMiB
			for _, g := range n.Status.Guests {
				h.Running = append(h.Running, g.Name)
			}
		}
		r.Hosts = append(r.Hosts, h)
	}
	for _, name := range guestNames(cfg, v) {
		r.Guests = append(r.Guests, f.guestRow(name))
	}
	return r
}

// guestNames lists the cluster file's guests, then those only the
// ledger or a hypervisor knows, sorted.
func guestNames(cfg *configs.Config, v api.ClusterView) []string {
	var out, extra []string
	for _, g := range cfg.Guests {
		out = append(out, g.Name)
	}
	add := func(name string) {
		if !slices.Contains(out, name) && !slices.Contains(extra, name) {
			extra = append(extra, name)
		}
	}
	for _, r := range v.Records {
		add(r.Guest)
	}
	for _, n := range v.Nodes {
		for _, g := range n.Status.Guests {
			add(g.Name)
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}

func (f Facts) guestRow(name string) GuestRow {
	rec, _ := f.record(name)
	row := GuestRow{Guest: name, Owner: rec.Owner, Epoch: rec.Epoch, Desired: rec.Desired,
		Lease: f.holder(name), Running: f.runningOn(name), Disks: []DiskRow{}}
	var states []string
	for _, n := range row.Running {
		nv, _ := f.node(n)
		for _, s := range nv.Status.Guests {
			if s.Name == name {
				states = append(states, string(s.State))
			}
		}
	}
	row.State = strings.Join(states, ", ")
	g, ok := f.Cfg.Guest(name)
	row.InFile = ok
	if !ok {
		return row
	}
	for _, d := range g.Disks {
		dr := DiskRow{Disk: d.Name}
		for _, n := range d.Legs {
			dr.Legs = append(dr.Legs, f.legRow(rec, row.Running, name, d.Name, n))
		}
		row.Disks = append(row.Disks, dr)
	}
	return row
}

// legRow says how one leg is: stale marks first (the ledger's word
// outranks md's, which cannot see a split brain), then its node, then
// what the guest's guestraid reports, then the export.
func (f Facts) legRow(rec ledger.Record, running []string, guest, disk, node string) LegRow {
	l := LegRow{Node: node}
	st, reported := f.arrayState(running, guest, disk)
	var ls *channel.LegState
	if reported {
		for i := range st.Legs {
			if st.Legs[i].Node == node {
				ls = &st.Legs[i]
			}
		}
	}
	recovering := ls != nil && !strings.Contains(ls.State, "in_sync") && strings.Contains(ls.State, "spare") && st.Progress > 0
	if e, ok := rec.Stale[node]; ok {
		l.State, l.StaleEpoch = LegStale, e
		if recovering {
			l.Progress = st.Progress
		}
		return l
	}
	if !f.up(node) {
		l.State = LegDown
		return l
	}
	// A volume whose fdatasync failed outranks what md says: md sees the
	// writes that now fail only when they come, and a bitmap resync would
	// not restore what the failed sync lost.
	if e, ok := f.export(node, guest, disk); ok && e.SyncError != "" {
		l.State, l.SyncError = LegFailed, e.SyncError
		return l
	}
	switch {
	case len(running) > 0 && ls == nil:
		l.State = LegUnknown
		if reported {
			l.State = LegMissing
		}
	case ls != nil:
		switch s := ls.State; {
		case s == channel.LegMissing:
			l.State = LegMissing
		case strings.Contains(s, "faulty") || s == channel.LegOut:
			l.State = LegDegraded
		case strings.Contains(s, "in_sync"):
			l.State = LegUp
		case strings.Contains(s, "spare"):
			l.State, l.Progress = LegResyncing, st.Progress
		default:
			l.State = LegDegraded
		}
	default:
		l.State = LegUp
		if _, ok := f.export(node, guest, disk); !ok {
			l.State = LegMissing
		}
	}
	return l
}

// arrayState is the guestraid report of guest's disk from a node that
// runs it.
func (f Facts) arrayState(running []string, guest, disk string) (channel.State, bool) {
	for _, n := range running {
		nv, _ := f.node(n)
		if st, ok := nv.Status.Legs[guest][disk]; ok {
			return st, true
		}
	}
	return channel.State{}, false
}

// export is node's export of guest's disk.
func (f Facts) export(node, guest, disk string) (api.Export, bool) {
	nv, ok := f.node(node)
	if !ok || !nv.Up {
		return api.Export{}, false
	}
	for _, e := range nv.Status.Exports {
		if e.Guest == guest && e.Disk == disk {
			return e, true
		}
	}
	return api.Export{}, false
}
