package ops

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// NodeTimeout is how long Gather waits for a node's answer: a node that
// takes longer is down as far as an operation is concerned, and an
// operation must not hang on it.
const NodeTimeout = 3 * time.Second

// Gather asks every node of the cluster file for its status (at once,
// NodeTimeout each) and reads the ledger, its quorum and the leases. A
// node that does not answer is in the view with Up false and the reason;
// a ledger without quorum leaves Records as Self's fenced last read them
// (LedgerStale). The error is ctx's, only.
func Gather(ctx context.Context, env Env) (api.ClusterView, error) {
	return GatherWithin(ctx, env, NodeTimeout)
}

// GatherWithin is Gather with nodeTimeout for each node's answer.
func GatherWithin(ctx context.Context, env Env, nodeTimeout time.Duration) (api.ClusterView, error) {
	cfg, self := env.Config(), env.Self()
	v := api.ClusterView{Self: self, Time: time.Now(), Nodes: make([]api.NodeView, len(cfg.Nodes))}
	var wg sync.WaitGroup
	for i, n := range cfg.Nodes {
		v.Nodes[i] = api.NodeView{Node: n.Name, Role: n.Role}
		wg.Add(1)
		go func(nv *api.NodeView) {
			defer wg.Done()
			askNode(ctx, env, nv, nodeTimeout)
		}(&v.Nodes[i])
	}

	store := env.Ledger()
	if err := store.Quorum(ctx); err != nil {
		v.LedgerErr = err.Error()
	} else {
		v.Quorum = true
	}
	recs, err := store.List(ctx)
	if err == nil {
		v.Records = recs
	} else {
		// Without quorum the store cannot read linearizably; fenced keeps
		// its last read, which still tells who owned what.
		if v.LedgerErr == "" {
			v.LedgerErr = err.Error()
		}
		v.Quorum = false
		lctx, cancel := context.WithTimeout(ctx, NodeTimeout)
		lr, lerr := env.Client(self).Ledger(lctx)
		cancel()
		if lerr == nil {
			v.Records, v.LedgerStale = lr.Records, true
		}
	}
	if v.Quorum {
		for _, r := range v.Records {
			h, err := store.Holder(ctx, r.Guest)
			if err == nil && h != "" {
				if v.Holders == nil {
					v.Holders = map[string]string{}
				}
				v.Holders[r.Guest] = h
			}
		}
	}
	wg.Wait()
	return v, ctx.Err()
}

// askNode fills nv with the node's status and config digest.
func askNode(ctx context.Context, env Env, nv *api.NodeView, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := env.Client(nv.Node)
	st, err := c.NodeStatus(ctx)
	if err != nil {
		nv.Err = err.Error()
		return
	}
	nv.Up, nv.Status = true, st
	if cc, ok := c.(api.ConfigClient); ok {
		if ci, err := cc.Config(ctx); err == nil {
			nv.ConfigDigest = ci.Digest
		}
	}
	if nv.ConfigDigest == "" && nv.Node == env.Self() {
		nv.ConfigDigest = ConfigDigest(env.Config())
	}
}

// ConfigDigest identifies a cluster file by what it says, not how: the
// SHA-256 of its decoded, defaulted form, so comments, key order and
// defaults spelled out or left out do not count as a difference.
func ConfigDigest(cfg *configs.Config) string {
	c := *cfg
	c.Path, c.Dir = "", ""
	// Where a node keeps its own runtime state is the node's business:
	// these paths may differ without the cluster's meaning differing.
	c.Hypervisor.RunDir, c.Fencing.StateDir = "", ""
	b, err := json.Marshal(c)
	if err != nil {
		// Every field of Config marshals; this would be a bug.
		return "unmarshalable: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// QuorumMode reports whether the ledger can outvote a lost host: an
// external etcd, or at least three voters (storage nodes and witnesses).
// Without it (two hosts, no witness) nothing moves without the
// sysadmin's word.
func QuorumMode(cfg *configs.Config) bool {
	if len(cfg.Fencing.Etcd.Endpoints) > 0 {
		return true
	}
	voters := 0
	for _, n := range cfg.Nodes {
		if n.Role == configs.RoleStorage || n.Role == configs.RoleWitness {
			voters++
		}
	}
	return voters >= 3
}

// Facts is what a planner decides from.
type Facts struct {
	Cfg  *configs.Config
	Self string
	View api.ClusterView
}

// NewFacts indexes a view for the planners.
func NewFacts(cfg *configs.Config, self string, v api.ClusterView) Facts {
	return Facts{Cfg: cfg, Self: self, View: v}
}

func (f Facts) node(name string) (api.NodeView, bool) {
	for _, n := range f.View.Nodes {
		if n.Node == name {
			return n, true
		}
	}
	return api.NodeView{}, false
}

// up reports whether node answered.
func (f Facts) up(name string) bool {
	n, ok := f.node(name)
	return ok && n.Up
}

// whyDown says why node did not answer.
func (f Facts) whyDown(name string) string {
	n, ok := f.node(name)
	switch {
	case !ok:
		return "it is not in the view"
	case n.Err != "":
		return n.Err
	default:
		return "it did not answer"
	}
}

// runningOn lists the nodes that answered and run guest, in file order.
func (f Facts) runningOn(guest string) []string {
	var out []string
	for _, n := range f.View.Nodes {
		if !n.Up {
			continue
		}
		for _, s := range n.Status.Guests {
			if s.Name == guest {
				out = append(out, n.Node)
				break
			}
		}
	}
	return out
}

// record returns guest's ledger record; ok false when there is none.
func (f Facts) record(guest string) (ledger.Record, bool) {
	for _, r := range f.View.Records {
		if r.Guest == guest {
			return r, true
		}
	}
	return ledger.Record{Guest: guest}, false
}

func (f Facts) holder(guest string) string { return f.View.Holders[guest] }

// legNodes lists the nodes that hold a leg of guest, in file order of
// its disks.
func legNodes(g *configs.Guest) []string {
	var out []string
	for _, d := range g.Disks {
		for _, n := range d.Legs {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}

// candidates lists the nodes that hold a leg of every disk of g: the
// only nodes it can run on with a local read leg for each disk.
func candidates(g *configs.Guest) []string {
	var out []string
	for _, n := range legNodes(g) {
		all := true
		for _, d := range g.Disks {
			if !slices.Contains(d.Legs, n) {
				all = false
				break
			}
		}
		if all {
			out = append(out, n)
		}
	}
	return out
}

// memMiB is a guest's memory in MiB, for N+1 checks.
func memMiB(g *configs.Guest) uint64 { return uint64(g.Memory) / uint64(configs.MiB) }

// guestOf returns the guest from the cluster file or a refusal.
func (f Facts) guestOf(name string) (*configs.Guest, error) {
	g, ok := f.Cfg.Guest(name)
	if !ok {
		var names []string
		for _, g := range f.Cfg.Guests {
			names = append(names, g.Name)
		}
		return nil, refuse("add it to the cluster file on every node first",
			fmt.Sprintf("guest %q is not in %s (its guests: %s)", name, f.Cfg.Path, joinOr(names, "none")))
	}
	return g, nil
}
