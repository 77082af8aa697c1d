package fenced

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/events"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

func TestOwnerChanges(t *testing.T) {
	before := []ledger.Record{{Guest: "web", Owner: "node-a", Epoch: 3}, {Guest: "db", Owner: "node-b", Epoch: 1}}
	after := []ledger.Record{{Guest: "web", Owner: "node-b", Epoch: 4}, {Guest: "db", Owner: "node-b", Epoch: 1}, {Guest: "new", Owner: "node-a", Epoch: 1}}
	got := OwnerChanges(before, after, "planned failover")
	require.Len(t, got, 2)
	assert.Equal(t, events.Event{Kind: events.KindOwner, Guest: "web", Epoch: 4, Detail: "node-a → node-b", Reason: "planned failover"}, got[0])
	assert.Equal(t, "none → node-a", got[1].Detail)
}

func TestArrayTransitions(t *testing.T) {
	rep := func(action string, progress float64, degraded int, since time.Time) arrayReport {
		return arrayReport{State: channel.State{Disk: "root", SyncAction: action, Progress: progress, Degraded: degraded},
			Track: ResyncTrack{Action: action, Progress: progress, Since: since}}
	}
	kinds := func(evs []events.Event) []string {
		var k []string
		for _, e := range evs {
			k = append(k, e.Kind)
		}
		return k
	}
	idle := rep("idle", 0, 1, t0)
	rec := rep("recover", 0.5, 1, t0.Add(time.Second))
	evs, said := ArrayTransitions(idle, rec, true, false, t0.Add(time.Second))
	assert.Equal(t, []string{events.KindResyncStart}, kinds(evs))
	assert.False(t, said)
	evs, _ = ArrayTransitions(arrayReport{}, rec, false, false, t0.Add(time.Second))
	assert.Equal(t, []string{events.KindResyncStart}, kinds(evs), "a first report of a sync")

	// Standing still at 97 %: one event once ResyncStallAfter passed.
	stuck := rep("recover", 0.97, 1, t0)
	evs, said = ArrayTransitions(stuck, stuck, true, false, t0.Add(ResyncStallAfter-time.Second))
	assert.Empty(t, evs)
	assert.False(t, said)
	evs, said = ArrayTransitions(stuck, stuck, true, false, t0.Add(ResyncStallAfter))
	assert.Equal(t, []string{events.KindResyncStalls}, kinds(evs))
	assert.Contains(t, evs[0].Reason, "97.0 %")
	require.True(t, said)
	evs, said = ArrayTransitions(stuck, stuck, true, said, t0.Add(2*ResyncStallAfter))
	assert.Empty(t, evs, "once per stall")
	moved := rep("recover", 0.98, 1, t0.Add(3*ResyncStallAfter))
	evs, said = ArrayTransitions(stuck, moved, true, said, t0.Add(3*ResyncStallAfter))
	assert.Empty(t, evs)
	assert.False(t, said, "progress ends the stall: the next one is news")

	done := rep("idle", 0, 0, t0.Add(time.Hour))
	evs, _ = ArrayTransitions(moved, done, true, false, t0.Add(time.Hour))
	assert.Equal(t, []string{events.KindRecovered}, kinds(evs))
}

func TestGuestraidKind(t *testing.T) {
	assert.Equal(t, events.KindLeg, guestraidKind(channel.EventReAdd))
	assert.Equal(t, events.KindResyncDone, guestraidKind(channel.EventResyncDone))
	assert.Equal(t, events.KindDegraded, guestraidKind(channel.EventDegraded))
	assert.Empty(t, guestraidKind(channel.EventHost))
}

// hookSink is an events.Hook whose runs are recorded.
func hookSink(t *testing.T, s *Server) (*sync.Mutex, *[]string) {
	var mu sync.Mutex
	var got []string
	s.hook = &events.Hook{Path: "notify", Timeout: time.Second, Log: slog.New(slog.DiscardHandler),
		Run: func(_ context.Context, _ string, stdin []byte) error {
			mu.Lock()
			got = append(got, string(stdin))
			mu.Unlock()
			return nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	s.hook.Start(ctx)
	t.Cleanup(func() { cancel(); s.hook.Wait() })
	return &mu, &got
}

func TestSelfFenceAndForeignDestroyAreEvents(t *testing.T) {
	cfg := testConfig(t, true, "")
	s, store, drv, _ := newTestServer(t, cfg, "node-a")
	mu, hooked := hookSink(t, s)
	ctx := context.Background()
	drv.run("web")
	drv.run("db")
	store.put(ledger.Record{Guest: "db", Owner: "node-b", Epoch: 4, Desired: ledger.DesiredRunning})
	store.put(ledger.Record{Guest: "web", Owner: "node-a", Epoch: 2, Desired: ledger.DesiredRunning})
	require.NoError(t, s.started.set("web", 2))
	s.MonitorOnce(ctx) // db runs here but is node-b's
	assert.Equal(t, 1, s.selfFence(ctx, "the lease was last renewed 7.1s ago"))

	got := s.journal.List(events.Filter{})
	require.Len(t, got, 2)
	assert.Equal(t, events.KindForeign, got[0].Kind)
	assert.Equal(t, "db", got[0].Guest)
	assert.Equal(t, uint64(4), got[0].Epoch)
	assert.Equal(t, "node-a", got[0].Node)
	assert.Equal(t, events.KindSelfFence, got[1].Kind)
	assert.Equal(t, "web", got[1].Guest)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(*hooked) == 2 }, 5*time.Second, time.Millisecond)
	mu.Lock()
	assert.Contains(t, (*hooked)[1], `"kind":"self-fence"`)
	mu.Unlock()
	assert.Len(t, s.journal.List(events.Filter{Guest: "web"}), 1)
}

func TestRecordOpFailingHalfway(t *testing.T) {
	cfg := testConfig(t, true, "")
	s, store, _, _ := newTestServer(t, cfg, "node-b")
	ctx := context.Background()
	store.put(ledger.Record{Guest: "web", Owner: "node-a", Epoch: 2, Desired: ledger.DesiredRunning})
	// The failover claims (epoch 3) and then fails to start the guest.
	err := s.recordOp(ctx, api.OpFailover, "web", "planned failover", func() error {
		_, err := store.Update(ctx, "web", func(r *ledger.Record) error { r.Owner, r.Epoch = "node-b", 3; return nil })
		require.NoError(t, err)
		return errors.New("start node-b: qemu exited")
	})
	require.Error(t, err)
	got := s.journal.List(events.Filter{Guest: "web"})
	require.Len(t, got, 3)
	assert.Equal(t, []string{events.KindFailover, events.KindOwner, events.KindFailover}, []string{got[0].Kind, got[1].Kind, got[2].Kind})
	assert.Equal(t, "started", got[0].Reason)
	assert.Equal(t, "node-a → node-b", got[1].Detail)
	assert.Equal(t, "failed", got[2].Reason)
	assert.Equal(t, uint64(3), got[2].Epoch)
	assert.Contains(t, got[2].Err, "qemu exited")

	// Without a ledger to read, the operation is still recorded.
	store.setQuorum(errors.New("no quorum"))
	require.NoError(t, s.recordOp(ctx, api.OpStop, "db", api.OpStop, func() error { return nil }))
	got = s.journal.List(events.Filter{Guest: "db"})
	require.Len(t, got, 1)
	assert.Equal(t, events.KindOperation, got[0].Kind)
	assert.Equal(t, "done", got[0].Reason)
}

func TestEventsMergesThePeersJournals(t *testing.T) {
	cfg := testConfig(t, true, "")
	a, _, _, _ := newTestServer(t, cfg, "node-a")
	b, _, _, _ := newTestServer(t, cfg, "node-b")
	clkA, clkB := &fakeClock{now: t0}, &fakeClock{now: t0.Add(time.Second)}
	a.clock, b.clock = clkA, clkB
	b.peerFn = func(node string) api.Client {
		if node == "node-a" {
			return a.loopback
		}
		return unknownNode(node) // the witness does not answer
	}
	a.emit(events.Event{Kind: events.KindSelfFence, Guest: "web"})
	b.emit(events.Event{Kind: events.KindFailover, Guest: "web", Detail: "automatic failover"})
	clkA.add(2 * time.Second)
	a.emit(events.Event{Kind: events.KindForeign, Guest: "db"})

	r := b.Events(context.Background(), api.EventsQuery{})
	require.Len(t, r.Events, 3)
	assert.Equal(t, []string{"node-a", "node-b", "node-a"}, []string{r.Events[0].Node, r.Events[1].Node, r.Events[2].Node}, "merged by time")
	assert.Contains(t, r.Missing, "quorum", "a node that does not answer is named")

	r = b.Events(context.Background(), api.EventsQuery{Guest: "web", Since: t0.Add(time.Second)})
	require.Len(t, r.Events, 1)
	assert.Equal(t, events.KindFailover, r.Events[0].Kind)

	r = b.Events(context.Background(), api.EventsQuery{NodeOnly: true})
	require.Len(t, r.Events, 1)
}
