package fenced

import (
	"fmt"
	"sort"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/ops"
)

// QuorumMode reports whether the ledger has a majority to lose (three or
// more voters, or an external etcd: ops.QuorumMode). Then owners hold
// leases and fence themselves when they cannot renew. With two voters
// there is no majority once one is gone, so guests keep running and only
// the operator's --force moves them.
func QuorumMode(cfg *configs.Config) bool { return ops.QuorumMode(cfg) }

// MonitorInput is what one monitor round read.
type MonitorInput struct {
	Self string
	// Managed are the guests of the cluster file; another guest of the
	// hypervisor is not this cluster's business.
	Managed map[string]bool
	Running []hypervisor.Status
	// Busy guests are being started, stopped or destroyed by a request.
	Busy map[string]bool
	// Started is the epoch each local guest was started at (unknown for
	// a guest started outside fenced).
	Started map[string]uint64
	// LedgerOK says Records were read with quorum.
	LedgerOK bool
	Records  map[string]ledger.Record
	// QuorumMode: see QuorumMode.
	QuorumMode bool
	// Peers are the other nodes' ledger answers, asked for only in
	// two-node mode when this node's ledger has no quorum.
	Peers []api.LedgerResponse
	// Known is the epoch this node last saw per guest (its last read
	// records), for comparing with the peers'.
	Known map[string]uint64
}

// Foreign is a guest that runs here but must not.
type Foreign struct {
	Guest  string
	Owner  string // who owns it, as the deciding ledger says
	Epoch  uint64
	Reason string
}

// DecideForeign is the monitor's rule: which running guests to destroy.
//
// With a readable ledger, a guest runs here only if the ledger names this
// node its owner, at the epoch the guest was started with. Without one,
// quorum mode leaves the decision to the lease (the owner fences itself
// when it cannot renew); two-node mode keeps guests running, unless a
// peer's ledger shows a newer epoch that gives the guest to another node:
// that is how a node that was away during a forced failover learns it
// lost the guest.
func DecideForeign(in MonitorInput) []Foreign {
	var out []Foreign
	for _, st := range in.Running {
		g := st.Name
		if !in.Managed[g] || in.Busy[g] {
			continue
		}
		started, hasStarted := in.Started[g]
		if in.LedgerOK {
			r, ok := in.Records[g]
			switch {
			case !ok || r.Owner == "":
				out = append(out, Foreign{Guest: g, Reason: "the ledger gives it to no node"})
			case r.Owner != in.Self:
				out = append(out, Foreign{Guest: g, Owner: r.Owner, Epoch: r.Epoch,
					Reason: fmt.Sprintf("the ledger gives it to %s at epoch %d", r.Owner, r.Epoch)})
			case hasStarted && started != r.Epoch:
				out = append(out, Foreign{Guest: g, Owner: r.Owner, Epoch: r.Epoch,
					Reason: fmt.Sprintf("it was started at epoch %d, the ledger is at epoch %d", started, r.Epoch)})
			}
			continue
		}
		if in.QuorumMode {
			continue
		}
		mine := started
		if !hasStarted {
			mine = in.Known[g]
		}
		for _, p := range in.Peers {
			if f, ok := newerElsewhere(in.Self, g, mine, p); ok {
				out = append(out, f)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Guest < out[j].Guest })
	return out
}

func newerElsewhere(self, guest string, mine uint64, p api.LedgerResponse) (Foreign, bool) {
	for _, r := range p.Records {
		if r.Guest == guest && r.Epoch > mine && r.Owner != self {
			return Foreign{Guest: guest, Owner: r.Owner, Epoch: r.Epoch,
				Reason: fmt.Sprintf("%s's ledger gives it to %s at epoch %d, newer than this node's %d", p.Node, r.Owner, r.Epoch, mine)}, true
		}
	}
	return Foreign{}, false
}

// DecideHolds says which leases to take and drop (quorum mode): a lease
// for every guest this node owns and runs at the ledger's epoch, none for
// the others.
func DecideHolds(self string, running []hypervisor.Status, records map[string]ledger.Record, held map[string]bool) (hold, drop []string) {
	want := map[string]bool{}
	for _, st := range running {
		if r, ok := records[st.Name]; ok && r.Owner == self {
			want[st.Name] = true
		}
	}
	for g := range want {
		if !held[g] {
			hold = append(hold, g)
		}
	}
	for g := range held {
		if !want[g] {
			drop = append(drop, g)
		}
	}
	sort.Strings(hold)
	sort.Strings(drop)
	return hold, drop
}
