package fenced

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

// peerLedger is a peer's fenced that answers only PathLedger.
type peerLedger struct {
	api.Client
	node string
	resp api.LedgerResponse
	err  error
}

func (p peerLedger) Node() string { return p.node }
func (p peerLedger) Ledger(context.Context) (api.LedgerResponse, error) {
	return p.resp, p.err
}

func TestTwoNodeReturningNodeLearnsItLostTheGuest(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, store, drv, _ := newTestServer(t, cfg, "node-a")
	ctx := context.Background()
	// node-a ran web at epoch 4; it was cut off, node-b was forced to
	// take web over at epoch 5, and node-a's ledger has no quorum.
	store.put(ledger.Record{Guest: "web", Owner: "node-a", Epoch: 4, Desired: ledger.DesiredRunning})
	require.NoError(t, s.started.set("web", 4))
	drv.run("web")
	s.MonitorOnce(ctx) // reads (and caches) the ledger
	store.setQuorum(ledger.ErrNoQuorum)

	peer := peerLedger{node: "node-b", err: errors.New("connection refused")}
	s.peerFn = func(string) api.Client { return peer }
	s.MonitorOnce(ctx)
	assert.True(t, drv.isRunning("web"), "no quorum, no peer: guests keep running")

	s.clients = map[string]api.Client{}
	peer.err = nil
	peer.resp = api.LedgerResponse{Node: "node-b", Quorum: true, Records: []ledger.Record{{Guest: "web", Owner: "node-b", Epoch: 5, Desired: ledger.DesiredRunning}}}
	s.MonitorOnce(ctx)
	assert.False(t, drv.isRunning("web"), "the peer's newer epoch gives it to node-b")
	assert.EqualValues(t, 1, testCounter(t, s, "web"))
}

func TestQuorumModeHoldsLeasesAndSelfFences(t *testing.T) {
	cfg := testConfig(t, true, "")
	s, store, drv, _ := newTestServer(t, cfg, "node-a")
	require.True(t, s.quorum)
	require.NoError(t, s.armLease())
	ctx := context.Background()
	store.put(ledger.Record{Guest: "web", Owner: "node-a", Epoch: 1, Desired: ledger.DesiredRunning})
	store.put(ledger.Record{Guest: "db", Owner: "node-b", Epoch: 1, Desired: ledger.DesiredRunning})
	require.True(t, s.keeper.Step(ctx, time.Now()))
	require.NoError(t, s.client("node-a").Start(ctx, "web", api.StartRequest{Epoch: 1}))
	s.MonitorOnce(ctx)
	h, _ := store.Holder(ctx, "web")
	assert.Equal(t, "node-a", h)

	// No renewal for ttl−margin: every guest here goes.
	store.mu.Lock()
	store.renewed = time.Now().Add(-8 * time.Second)
	store.mu.Unlock()
	assert.False(t, s.keeper.Step(ctx, time.Now()))
	assert.False(t, drv.isRunning("web"))
	err := s.client("node-a").Start(ctx, "web", api.StartRequest{Epoch: 1})
	assert.Equal(t, 409, api.StatusOf(err), "no start while the lease is stale: %v", err)
	require.Len(t, s.Incidents(), 1)
	assert.Contains(t, s.Incidents()[0].Reason, "self-fence")
}

func testCounter(t *testing.T, s *Server, guest string) float64 {
	mfs, err := s.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "mhcodi_fenced_foreign_guests_destroyed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "guest" && l.GetValue() == guest {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// fakeMember is a member whose run ends when removed is closed.
type fakeMember struct {
	done     chan struct{}
	removed  bool
	rejoined chan api.JoinResponse
	forked   int
}

func (m *fakeMember) Done() <-chan struct{} { return m.done }
func (m *fakeMember) Removed() bool         { return m.removed }
func (m *fakeMember) Err() error {
	if m.removed {
		return errors.New("removed")
	}
	return nil
}
func (m *fakeMember) AddMember(_ context.Context, name, peerURL string) (string, error) {
	return name + "=" + peerURL, nil
}
func (m *fakeMember) PeerURL() string            { return "https://127.0.0.51:2380" }
func (m *fakeMember) Fork(context.Context) error { m.forked++; return nil }
func (m *fakeMember) Stop()                      {}
func (m *fakeMember) Rejoin(_ context.Context, j api.JoinResponse) error {
	m.removed = false
	m.done = make(chan struct{})
	m.rejoined <- j
	return nil
}

// joiningPeer answers PathLedger and PathJoin.
type joiningPeer struct {
	peerLedger
	joins chan api.JoinRequest
}

func (p joiningPeer) Join(_ context.Context, r api.JoinRequest) (api.JoinResponse, error) {
	p.joins <- r
	return api.JoinResponse{InitialCluster: "node-b=https://127.0.0.52:2380," + r.Node + "=" + r.PeerURL}, nil
}

func TestRejoinAfterForcedFailoverElsewhere(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, store, drv, _ := newTestServer(t, cfg, "node-a")
	m := &fakeMember{done: make(chan struct{}), rejoined: make(chan api.JoinResponse, 1)}
	s.member = m
	drv.run("web")
	drv.run("db")
	store.setQuorum(ledger.ErrNoQuorum)
	peer := joiningPeer{joins: make(chan api.JoinRequest, 1), peerLedger: peerLedger{node: "node-b", resp: api.LedgerResponse{
		Node: "node-b", Quorum: true, Records: []ledger.Record{
			{Guest: "web", Owner: "node-b", Epoch: 5, Desired: ledger.DesiredRunning},
			{Guest: "db", Owner: "node-a", Epoch: 2, Desired: ledger.DesiredRunning},
		}}}}
	s.peerFn = func(string) api.Client { return peer }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.superviseLedger(ctx) }()
	m.removed = true
	close(m.done)

	select {
	case j := <-m.rejoined:
		assert.Contains(t, j.InitialCluster, "node-a=https://127.0.0.51:2380")
	case <-time.After(5 * time.Second):
		t.Fatal("no rejoin")
	}
	assert.Equal(t, api.JoinRequest{Node: "node-a", PeerURL: "https://127.0.0.51:2380"}, <-peer.joins)
	assert.False(t, drv.isRunning("web"), "the forked ledger gives web to node-b")
	assert.True(t, drv.isRunning("db"), "db is still node-a's")

	// Forking (ForceNewCluster) goes through the member, in place.
	require.NoError(t, Env{s: s}.ForceNewCluster(ctx))
	assert.Equal(t, 1, m.forked)
	cancel()
	assert.NoError(t, <-errc)
}
