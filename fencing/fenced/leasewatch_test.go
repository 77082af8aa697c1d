package fenced

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// fakeTimers is a Timers whose time moves only by add, which fires the
// timers that fall due.
type fakeTimers struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (c *fakeTimers) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeTimers) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

func (c *fakeTimers) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

func (c *fakeTimers) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.stopped && !t.at.After(c.now) {
			t.stopped = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func TestFailoverDue(t *testing.T) {
	ttl := 10 * time.Second
	old := ledger.Record{Guest: "web", Owner: "node-a", Epoch: 3, Desired: ledger.DesiredRunning, Updated: t0.Add(-time.Minute)}
	young := old
	young.Updated = t0.Add(-4 * time.Second)
	stopped := old
	stopped.Desired = ledger.DesiredStopped
	unowned := old
	unowned.Owner = ""
	for _, tc := range []struct {
		name    string
		self    string
		rec     ledger.Record
		holder  string
		due     bool
		recheck time.Time
	}{
		{"lease gone, record old: due", "node-b", old, "", true, time.Time{}},
		{"lease held", "node-b", old, "node-a", false, time.Time{}},
		{"own guest", "node-a", old, "", false, time.Time{}},
		{"not meant to run", "node-b", stopped, "", false, time.Time{}},
		{"no owner", "node-b", unowned, "", false, time.Time{}},
		{"record younger than the TTL: look again when it is not", "node-b", young, "", false, young.Updated.Add(ttl)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			due, recheck := FailoverDue(tc.self, tc.rec, tc.holder, t0, ttl)
			assert.Equal(t, tc.due, due)
			assert.Equal(t, tc.recheck, recheck)
		})
	}
}

func TestOutranking(t *testing.T) {
	cfg := testConfig(t, true, "")
	// web prefers node-a, db node-b.
	assert.Empty(t, Outranking(cfg, "db", "node-b", []string{"node-a", "node-b"}), "the preferred node asks nobody")
	assert.Equal(t, []string{"node-b"}, Outranking(cfg, "db", "node-c", []string{"node-b", "node-c"}), "the preferred node outranks")
	assert.Equal(t, []string{"node-a"}, Outranking(cfg, "web", "node-b", []string{"node-a", "node-b", "node-c"}), "the preferred node outranks, higher names do not")
	assert.Empty(t, Outranking(cfg, "web", "node-b", []string{"node-b"}), "the only candidate (the owner is not one) asks nobody")
	assert.Equal(t, []string{"node-b"}, Outranking(cfg, "nope", "node-c", []string{"node-b", "node-c", "node-d"}), "without a preferred node, lower names outrank")
}

func TestLeaseWatchChecksAtOnceAndWhenTheRecordAges(t *testing.T) {
	clk := &fakeTimers{now: t0}
	var mu sync.Mutex
	var checked []string
	recheck := map[string]time.Time{"web": t0.Add(6 * time.Second)}
	done := make(chan string, 16)
	w := newLeaseWatch(clk, func(_ context.Context, g string) time.Time {
		mu.Lock()
		defer mu.Unlock()
		checked = append(checked, g)
		at := recheck[g]
		delete(recheck, g)
		done <- g
		return at
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); w.Run(ctx) }()

	w.notify("web")
	assert.Equal(t, "web", <-done, "a change is checked at once")
	require.Eventually(t, func() bool { return clk.pending() == 1 }, 5*time.Second, time.Millisecond,
		"a record too young is looked at again when it is old enough")
	clk.add(5 * time.Second)
	assert.Equal(t, 1, clk.pending(), "not before")
	clk.add(time.Second)
	assert.Equal(t, "web", <-done, "the timer checks it again")
	w.notify("db")
	assert.Equal(t, "db", <-done)

	cancel()
	<-stopped
	mu.Lock()
	assert.Equal(t, []string{"web", "web", "db"}, checked)
	mu.Unlock()
	assert.Zero(t, clk.pending(), "no timer left behind")
}

func TestLeaseWatchNewCheckReplacesTheTimer(t *testing.T) {
	clk := &fakeTimers{now: t0}
	done := make(chan struct{}, 4)
	n := 0
	w := newLeaseWatch(clk, func(context.Context, string) time.Time {
		n++
		done <- struct{}{}
		if n == 1 {
			return t0.Add(5 * time.Second)
		}
		return time.Time{} // the lease is held again
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	w.notify("web")
	<-done
	require.Eventually(t, func() bool { return clk.pending() == 1 }, 5*time.Second, time.Millisecond)
	w.notify("web")
	<-done
	require.Eventually(t, func() bool { return clk.pending() == 0 }, 5*time.Second, time.Millisecond,
		"the second check's answer (nothing to wait for) cancels the first's timer")
}

// recordingOperator records the automatic failovers asked of it.
type recordingOperator struct {
	mu    sync.Mutex
	asked []string
	done  chan string
}

func (o *recordingOperator) AutoFailover(_ context.Context, g string) error {
	o.mu.Lock()
	o.asked = append(o.asked, g)
	o.mu.Unlock()
	o.done <- g
	return nil
}

func (o *recordingOperator) Run(context.Context, api.OpRequest, func(api.Progress)) error {
	return nil
}

func autoFailoverServer(t *testing.T) (*Server, *fakeStore, *recordingOperator, *fakeTimers) {
	cfg := testConfig(t, true, "")
	cfg.Fencing.AutoFailover = true
	s, store, _, _ := newTestServer(t, cfg, "node-b")
	require.True(t, s.quorum)
	clk := &fakeTimers{now: t0}
	s.clock, s.timers = clk, clk
	op := &recordingOperator{done: make(chan string, 4)}
	s.failover = &failoverRunner{op: op, log: s.log, on: map[string]bool{}}
	return s, store, op, clk
}

func TestCheckFailoverOfStartsTheFailoverOnlyWhenDue(t *testing.T) {
	s, store, op, clk := autoFailoverServer(t)
	ctx := context.Background()
	// web prefers node-a, its owner: node-b is the only candidate and
	// asks nobody whether it is alive.
	store.put(ledger.Record{Guest: "web", Owner: "node-a", Epoch: 2, Desired: ledger.DesiredRunning, Updated: t0.Add(-3 * time.Second)})
	store.holders["web"] = "node-a"
	assert.Zero(t, s.checkFailoverOf(ctx, "web"), "held: nothing to wait for")

	delete(store.holders, "web")
	at := s.checkFailoverOf(ctx, "web")
	assert.Equal(t, t0.Add(7*time.Second), at, "lease gone but the record is too young")

	clk.add(7 * time.Second)
	assert.Zero(t, s.checkFailoverOf(ctx, "web"))
	select {
	case g := <-op.done:
		assert.Equal(t, "web", g)
	case <-time.After(10 * time.Second):
		t.Fatal("no automatic failover started")
	}
	s.failover.wg.Wait()
}

func TestCheckFailoverOfWithoutLedgerStartsNothing(t *testing.T) {
	s, store, op, _ := autoFailoverServer(t)
	ctx := context.Background()
	store.put(ledger.Record{Guest: "web", Owner: "node-a", Epoch: 2, Desired: ledger.DesiredRunning, Updated: t0.Add(-time.Minute)})
	// The ledger loses quorum between the watch event and the check.
	store.setQuorum(errors.New("no quorum"))
	assert.Zero(t, s.checkFailoverOf(ctx, "web"))
	assert.Zero(t, s.checkFailoverOf(ctx, "gone"), "an unknown guest")
	s.failover.wg.Wait()
	op.mu.Lock()
	defer op.mu.Unlock()
	assert.Empty(t, op.asked)
}

func TestWatchLoopChecksFailoverOnALeaseChange(t *testing.T) {
	s, store, op, _ := autoFailoverServer(t)
	store.put(ledger.Record{Guest: "db", Owner: "node-a", Epoch: 5, Desired: ledger.DesiredRunning, Updated: t0.Add(-time.Minute)})
	events := make(chan string, 1)
	store.mu.Lock()
	store.watch = events
	store.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); s.watchLoop(ctx) }()
	events <- "db" // db's lease key expired
	select {
	case g := <-op.done:
		assert.Equal(t, "db", g)
	case <-time.After(10 * time.Second):
		t.Fatal("the lease's expiry started no failover")
	}
	cancel()
	<-stopped
	s.failover.wg.Wait()
	op.mu.Lock()
	got := append([]string(nil), op.asked...)
	op.mu.Unlock()
	sort.Strings(got)
	assert.Equal(t, []string{"db"}, got)
}
