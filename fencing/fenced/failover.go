package fenced

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// FailoverCandidates are the nodes that may take guest over from owner:
// those holding one of its legs, other than the owner, that answer.
func FailoverCandidates(cfg *configs.Config, guest, owner string, alive map[string]bool) []string {
	g, ok := cfg.Guest(guest)
	if !ok {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, d := range g.Disks {
		for _, n := range d.Legs {
			if n != owner && alive[n] && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ChooseFailover is automatic failover's rule: whether self should take
// rec's guest over now. The guest must be meant to run, have had an owner
// whose lease is gone (holder ""), and that owner must have had a whole
// TTL since the record changed to take the lease (a guest being started
// right now has no lease yet either). Of the nodes that hold a leg and
// answer, the preferred node goes first, else the lowest name, so that
// only one node tries.
func ChooseFailover(cfg *configs.Config, self string, rec ledger.Record, holder string, now time.Time, ttl time.Duration, alive map[string]bool) bool {
	if rec.Desired != ledger.DesiredRunning || rec.Owner == "" || holder != "" {
		return false
	}
	if now.Sub(rec.Updated) < ttl {
		return false
	}
	cands := FailoverCandidates(cfg, rec.Guest, rec.Owner, alive)
	if len(cands) == 0 {
		return false
	}
	chosen := cands[0]
	if g, ok := cfg.Guest(rec.Guest); ok {
		for _, c := range cands {
			if c == g.PreferredNode {
				chosen = c
			}
		}
	}
	return chosen == self
}

// failoverRunner calls the Operator's AutoFailover once at a time per
// guest.
type failoverRunner struct {
	op Operator
	// record wraps the run in the event log (nil: run as is).
	record func(ctx context.Context, op, guest, detail string, run func() error) error
	log    *slog.Logger
	mu     sync.Mutex
	on     map[string]bool
	wg     sync.WaitGroup
}

func (f *failoverRunner) start(ctx context.Context, guest string) {
	f.mu.Lock()
	if f.on[guest] {
		f.mu.Unlock()
		return
	}
	f.on[guest] = true
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer func() {
			f.mu.Lock()
			delete(f.on, guest)
			f.mu.Unlock()
		}()
		f.log.Warn("automatic failover: the owner's lease expired; taking the guest over", "guest", guest)
		run := func() error { return f.op.AutoFailover(ctx, guest) }
		if f.record != nil {
			inner := run
			run = func() error { return f.record(ctx, "auto-failover", guest, "automatic failover", inner) }
		}
		if err := run(); err != nil {
			f.log.Error("automatic failover failed", "guest", guest, "err", err)
			return
		}
		f.log.Info("automatic failover done", "guest", guest)
	}()
}
