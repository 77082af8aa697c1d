package fenced

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// Timers is the clock of code that waits: Now, and a timer that calls f
// after d (stop cancels it and reports whether it was still pending).
// Tests pass a fake that fires timers when they move time by hand.
type Timers interface {
	Clock
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

// clockTimers are real timers on a Clock's time.
type clockTimers struct{ Clock }

func (clockTimers) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// FailoverDue is the timing part of automatic failover's rule for one
// guest, as a candidate sees it: the guest is meant to run, has an owner
// other than self, and nobody holds its lease. due says it may be taken
// over at now; when it may not yet only because its record changed less
// than ttl ago (a guest being started has no lease yet), recheck is when
// it may. Both zero: nothing to do for it until the ledger changes.
func FailoverDue(self string, rec ledger.Record, holder string, now time.Time, ttl time.Duration) (due bool, recheck time.Time) {
	if rec.Desired != ledger.DesiredRunning || rec.Owner == "" || rec.Owner == self || holder != "" {
		return false, time.Time{}
	}
	if at := rec.Updated.Add(ttl); now.Before(at) {
		return false, at
	}
	return true, time.Time{}
}

// Outranking are the candidates whose answer could make ChooseFailover
// pick another node than self: the guest's preferred node, or, when self
// is not preferred, the candidates whose names sort before self's. Only
// these need asking whether they are alive; when there are none, self
// decides without waiting for anyone (a cut-off owner never answers).
func Outranking(cfg *configs.Config, guest, self string, cands []string) []string {
	pref := ""
	if g, ok := cfg.Guest(guest); ok {
		pref = g.PreferredNode
	}
	if pref == self {
		return nil
	}
	var out []string
	for _, c := range cands {
		if c != self && (c == pref || c < self) {
			out = append(out, c)
		}
	}
	return out
}

// leaseWatch turns ledger changes into failover checks of the guest
// concerned at once, rather than at the next monitor round: the expiry of
// an owner's lease deletes the lease key, and the watch reports it within
// etcd's expiry granularity. A check that finds the guest not due yet
// only because its record is younger than the TTL comes back by itself
// at the time FailoverDue names (one timer per guest).
type leaseWatch struct {
	timers Timers
	// check runs the failover check of one guest and says when to look
	// again (zero: not before the ledger changes).
	check func(ctx context.Context, guest string) time.Time

	mu      sync.Mutex
	pending map[string]bool
	timer   map[string]func() bool
	wake    chan struct{}
}

func newLeaseWatch(t Timers, check func(context.Context, string) time.Time) *leaseWatch {
	return &leaseWatch{timers: t, check: check, pending: map[string]bool{}, timer: map[string]func() bool{}, wake: make(chan struct{}, 1)}
}

// notify asks for a check of guest; it never blocks (checks of one guest
// asked for while another runs coalesce).
func (w *leaseWatch) notify(guest string) {
	w.mu.Lock()
	w.pending[guest] = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run checks the notified guests until ctx ends, then stops its timers.
func (w *leaseWatch) Run(ctx context.Context) {
	defer func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for g, stop := range w.timer {
			stop()
			delete(w.timer, g)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		w.mu.Lock()
		var guests []string
		for g := range w.pending {
			guests = append(guests, g)
		}
		clear(w.pending)
		w.mu.Unlock()
		slices.Sort(guests)
		for _, g := range guests {
			if ctx.Err() != nil {
				return
			}
			w.schedule(g, w.check(ctx, g))
		}
	}
}

// schedule replaces guest's timer with one at at (none for zero).
func (w *leaseWatch) schedule(guest string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if stop := w.timer[guest]; stop != nil {
		stop()
		delete(w.timer, guest)
	}
	if at.IsZero() {
		return
	}
	d := max(at.Sub(w.timers.Now()), 0)
	w.timer[guest] = w.timers.AfterFunc(d, func() { w.notify(guest) })
}
