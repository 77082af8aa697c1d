package ops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

const (
	twoNodeFile   = "../../configs/examples/two-node.yaml"
	threeNodeFile = "../../configs/examples/three-node.yaml"
)

func loadCfg(t *testing.T, path string) *configs.Config {
	t.Helper()
	cfg, err := configs.Load(path)
	require.NoError(t, err)
	return cfg
}

// fourNode is a cluster of three storage nodes and a witness with a
// guest whose disks sit on different pairs (it can run on node-a only)
// and one that can go to either of two other nodes.
const fourNode = `
cluster: {name: t, iqn_prefix: iqn.2026-11.org.example}
nodes:
  - {name: node-a, san_address: 192.0.2.1, mgmt_address: 198.51.100.1}
  - {name: node-b, san_address: 192.0.2.2, mgmt_address: 198.51.100.2}
  - {name: node-c, san_address: 192.0.2.3, mgmt_address: 198.51.100.3}
  - {name: wit, role: witness, mgmt_address: 198.51.100.4}
storage: {backend: file, file: {dir: /srv/mhcodi}}
guests:
  - name: split
    memory: 1G
    disks:
      - {name: root, size: 1G, legs: [node-a, node-b]}
      - {name: data, size: 1G, legs: [node-a, node-c]}
  - name: wide
    memory: 1G
    preferred_node: node-a
    disks:
      - {name: root, size: 1G, legs: [node-a, node-b]}
`

func fourNodeCfg(t *testing.T) *configs.Config {
	p := filepath.Join(t.TempDir(), "cluster.yaml")
	require.NoError(t, os.WriteFile(p, []byte(fourNode), 0o600))
	return loadCfg(t, p)
}

// world describes a cluster's state for planners (as a view) and for the
// executor (as a fake Env).
type world struct {
	cfg     *configs.Config
	self    string
	noQuo   bool
	down    []string
	running map[string][]string // node → guests
	records []ledger.Record
	holders map[string]string
	mem     map[string]uint64
	exports map[string][]api.Export
	legs    map[string]map[string]map[string]channel.State // node → guest → disk
	digest  map[string]string
	bridges map[string][]hypervisor.BridgeInfo // node → what its fenced reports
	// hang: nodes whose fenced never answers (a cut-off node): NodeStatus
	// waits for its ctx and records how long it was given in hangFor.
	hang    []string
	hangFor chan time.Duration
	// stalled: node → guest → disk → seconds its sync stood still.
	stalled map[string]map[string]map[string]float64
}

func (w world) view() api.ClusterView {
	v := api.ClusterView{Self: w.self, Quorum: !w.noQuo, Records: w.records, Holders: w.holders}
	if w.noQuo {
		v.LedgerErr = "etcdserver: request timed out"
	}
	for _, n := range w.cfg.Nodes {
		nv := api.NodeView{Node: n.Name, Role: n.Role, Up: !slices.Contains(w.down, n.Name)}
		if !nv.Up {
			nv.Err = "dial tcp: connection refused"
		} else {
			nv.Status = w.status(n.Name)
			nv.ConfigDigest = w.digest[n.Name]
		}
		v.Nodes = append(v.Nodes, nv)
	}
	return v
}

func (w world) status(node string) api.NodeStatus {
	st := api.NodeStatus{Node: node, Quorum: !w.noQuo, MemoryFreeMiB: 16384, Exports: w.exports[node]}
	if m, ok := w.mem[node]; ok {
		st.MemoryFreeMiB = m
	}
	for _, g := range w.running[node] {
		st.Guests = append(st.Guests, hypervisor.Status{Name: g, State: hypervisor.StateRunning})
	}
	if l, ok := w.legs[node]; ok {
		st.Legs = l
	}
	st.Bridges = w.bridges[node]
	st.Stalled = w.stalled[node]
	return st
}

func (w world) facts() Facts { return NewFacts(w.cfg, w.self, w.view()) }

// calls records what the fakes were asked, in order.
type calls struct {
	mu  sync.Mutex
	log []string
}

func (c *calls) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, fmt.Sprintf(format, args...))
}

func (c *calls) get() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.log)
}

// fakeStore is an in-memory ledger.
type fakeStore struct {
	mu        sync.Mutex
	recs      map[string]ledger.Record
	holders   map[string]string
	quorumErr error
	updateErr error
	// meanwhile runs before an Update's fn: another node's transaction.
	meanwhile func(r *ledger.Record)
	// failNth makes the nth Update (from 1) fail.
	failNth map[int]error
	updates int
	calls   *calls
}

func (s *fakeStore) Get(_ context.Context, guest string) (ledger.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[guest]
	if !ok {
		return ledger.Record{}, ledger.ErrNotFound
	}
	return r, nil
}

func (s *fakeStore) List(context.Context) ([]ledger.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quorumErr != nil {
		return nil, s.quorumErr
	}
	var out []ledger.Record
	for _, k := range sortedKeys(s.recs) {
		out = append(out, s.recs[k])
	}
	return out, nil
}

func (s *fakeStore) Update(_ context.Context, guest string, fn func(r *ledger.Record) error) (ledger.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.updateErr != nil {
		return ledger.Record{}, s.updateErr
	}
	s.updates++
	if err := s.failNth[s.updates]; err != nil {
		return ledger.Record{}, err
	}
	if s.quorumErr != nil {
		return ledger.Record{}, ledger.ErrNoQuorum
	}
	r, ok := s.recs[guest]
	if !ok {
		r = ledger.Record{Guest: guest}
	}
	if s.meanwhile != nil {
		s.meanwhile(&r)
		s.recs[guest] = r
		s.meanwhile = nil
	}
	r.Stale = cloneMap(r.Stale)
	if err := fn(&r); err != nil {
		return ledger.Record{}, err
	}
	s.recs[guest] = r
	s.calls.add("ledger %s owner=%s epoch=%d desired=%s stale=%v", guest, r.Owner, r.Epoch, r.Desired, sortedKeys(r.Stale))
	return r, nil
}

func cloneMap(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return nil
	}
	out := map[string]uint64{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *fakeStore) Delete(context.Context, string) error { return errors.New("not in the fake") }
func (s *fakeStore) Hold(context.Context, string) error   { return errors.New("not in the fake") }
func (s *fakeStore) Drop(context.Context, string) error   { return errors.New("not in the fake") }
func (s *fakeStore) Holder(_ context.Context, guest string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.holders[guest], nil
}
func (s *fakeStore) LastRenewed() time.Time              { return time.Time{} }
func (s *fakeStore) Watch(context.Context) <-chan string { return nil }
func (s *fakeStore) Quorum(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.quorumErr
}
func (s *fakeStore) Close() error { return nil }

// fakeEnv is a cluster of fake fenceds around a fakeStore.
type fakeEnv struct {
	w     world
	store *fakeStore
	calls *calls
	// fail makes a call fail: "fence node-a", "start node-b", "fork"…
	fail map[string]error
}

func newEnv(w world) *fakeEnv {
	c := &calls{}
	s := &fakeStore{recs: map[string]ledger.Record{}, holders: w.holders, calls: c}
	for _, r := range w.records {
		s.recs[r.Guest] = r
	}
	if w.noQuo {
		s.quorumErr = errors.New("etcdserver: request timed out")
	}
	return &fakeEnv{w: w, store: s, calls: c, fail: map[string]error{}}
}

func (e *fakeEnv) Config() *configs.Config       { return e.w.cfg }
func (e *fakeEnv) Self() string                  { return e.w.self }
func (e *fakeEnv) Ledger() ledger.Store          { return e.store }
func (e *fakeEnv) Client(node string) api.Client { return &fakeClient{node: node, env: e} }
func (e *fakeEnv) ForceNewCluster(context.Context) error {
	e.calls.add("fork")
	if err := e.fail["fork"]; err != nil {
		return err
	}
	e.store.mu.Lock()
	e.store.quorumErr = nil
	e.store.mu.Unlock()
	return nil
}

type fakeClient struct {
	node string
	env  *fakeEnv
}

func (c *fakeClient) Node() string { return c.node }

func (c *fakeClient) NodeStatus(ctx context.Context) (api.NodeStatus, error) {
	if slices.Contains(c.env.w.hang, c.node) {
		if dl, ok := ctx.Deadline(); ok && c.env.w.hangFor != nil {
			c.env.w.hangFor <- time.Until(dl)
		}
		<-ctx.Done()
		return api.NodeStatus{}, fmt.Errorf("fenced %s: dial tcp: %w", c.node, ctx.Err())
	}
	if slices.Contains(c.env.w.down, c.node) {
		return api.NodeStatus{}, fmt.Errorf("fenced %s: dial tcp: connection refused", c.node)
	}
	return c.env.w.status(c.node), nil
}

func (c *fakeClient) Ledger(context.Context) (api.LedgerResponse, error) {
	return api.LedgerResponse{Node: c.node, Records: c.env.w.records, Stale: true}, nil
}

func (c *fakeClient) Fence(_ context.Context, r api.FenceRequest) error {
	c.env.calls.add("fence %s %s to %s@%d", c.node, r.Guest, r.Owner, r.Epoch)
	return c.env.fail["fence "+c.node]
}

func (c *fakeClient) Start(_ context.Context, guest string, r api.StartRequest) error {
	c.env.calls.add("start %s %s epoch=%d stale=%v", c.node, guest, r.Epoch, r.Stale)
	return c.env.fail["start "+c.node]
}

func (c *fakeClient) Stop(_ context.Context, guest string, r api.StopRequest) error {
	c.env.calls.add("stop %s %s timeout=%s", c.node, guest, r.Timeout)
	return c.env.fail["stop "+c.node]
}

func (c *fakeClient) Destroy(_ context.Context, guest string) error {
	c.env.calls.add("destroy %s %s", c.node, guest)
	return c.env.fail["destroy "+c.node]
}

func (c *fakeClient) Op(context.Context, api.OpRequest, func(api.Progress)) error {
	return errors.New("not in the fake")
}

func (c *fakeClient) Join(context.Context, api.JoinRequest) (api.JoinResponse, error) {
	return api.JoinResponse{}, errors.New("not in the fake")
}
