package fenced

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

// testConfig writes and loads a cluster file: node-a and node-b (storage)
// and, with witness, a witness; guests web (preferred node-a) and db
// (preferred node-b), one disk each mirrored on both.
func testConfig(t *testing.T, witness bool, extra string) *configs.Config {
	t.Helper()
	dir := t.TempDir()
	y := `cluster:
  name: test
  iqn_prefix: iqn.2026-11.org.mhcodi
nodes:
  - name: node-a
    san_address: 127.0.0.51
    mgmt_address: 127.0.0.51:17440
    storage: {backend: file, file: {dir: vol-a}}
  - name: node-b
    san_address: 127.0.0.52
    mgmt_address: 127.0.0.52:17440
    storage: {backend: file, file: {dir: vol-b}}
`
	if witness {
		y += `  - name: quorum
    role: witness
    mgmt_address: 127.0.0.53:17440
`
	}
	y += `guests:
  - name: web
    preferred_node: node-a
    disks:
      - {name: root, size: 64M, legs: [node-a, node-b]}
  - name: db
    preferred_node: node-b
    disks:
      - {name: root, size: 64M, legs: [node-b, node-a]}
      - {name: data, size: 64M, legs: [node-b, node-a]}
timeouts:
  lease_ttl: 10s
fencing:
  lease_margin: 3s
  monitor_interval: 1s
  state_dir: state
hypervisor:
  run_dir: run
` + extra
	p := filepath.Join(dir, "cluster.yaml")
	require.NoError(t, os.WriteFile(p, []byte(y), 0o600))
	cfg, err := configs.Load(p)
	require.NoError(t, err)
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// fakeStore is an in-memory ledger.Store.
type fakeStore struct {
	mu      sync.Mutex
	recs    map[string]ledger.Record
	holders map[string]string
	node    string
	renewed time.Time
	quorum  error
	holds   []string
	drops   []string
	// watch, when set, is what Watch sends (a test sends on it).
	watch chan string
}

func newFakeStore(node string) *fakeStore {
	return &fakeStore{recs: map[string]ledger.Record{}, holders: map[string]string{}, node: node, renewed: time.Now()}
}

func (f *fakeStore) put(r ledger.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[r.Guest] = r
}

func (f *fakeStore) setQuorum(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.quorum = err
}

func (f *fakeStore) Get(_ context.Context, g string) (ledger.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.quorum != nil {
		return ledger.Record{}, f.quorum
	}
	r, ok := f.recs[g]
	if !ok {
		return ledger.Record{}, ledger.ErrNotFound
	}
	return r, nil
}

func (f *fakeStore) List(context.Context) ([]ledger.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.quorum != nil {
		return nil, f.quorum
	}
	var out []ledger.Record
	for _, r := range f.recs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Guest < out[j].Guest })
	return out, nil
}

func (f *fakeStore) Update(_ context.Context, g string, fn func(*ledger.Record) error) (ledger.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.quorum != nil {
		return ledger.Record{}, f.quorum
	}
	r, ok := f.recs[g]
	if !ok {
		r = ledger.Record{Guest: g}
	}
	if r.Stale != nil {
		st := map[string]uint64{}
		for k, v := range r.Stale {
			st[k] = v
		}
		r.Stale = st
	}
	if err := fn(&r); err != nil {
		return ledger.Record{}, err
	}
	f.recs[g] = r
	return r, nil
}

func (f *fakeStore) Delete(_ context.Context, g string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.recs, g)
	return nil
}

func (f *fakeStore) Hold(_ context.Context, g string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holders[g] = f.node
	f.holds = append(f.holds, g)
	return nil
}

func (f *fakeStore) Drop(_ context.Context, g string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.holders, g)
	f.drops = append(f.drops, g)
	return nil
}

func (f *fakeStore) Holder(_ context.Context, g string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.holders[g], nil
}

func (f *fakeStore) LastRenewed() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.renewed
}

func (f *fakeStore) Watch(ctx context.Context) <-chan string {
	f.mu.Lock()
	src := f.watch
	f.mu.Unlock()
	ch := make(chan string, 16)
	if src != nil {
		go func() {
			defer close(ch)
			for {
				select {
				case <-ctx.Done():
					return
				case g := <-src:
					ch <- g
				}
			}
		}()
		return ch
	}
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}

func (f *fakeStore) Quorum(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.quorum
}

func (f *fakeStore) Close() error { return nil }

// fakeDriver is a hypervisor.Driver and Channeler in memory; a guest's
// channel is the host end of a net.Pipe whose guest end goes to guests.
type fakeDriver struct {
	mu        sync.Mutex
	running   map[string]hypervisor.Status
	specs     map[string]hypervisor.GuestSpec
	destroyed []string
	stopped   []string
	chans     chan guestEnd
	noChannel bool
}

type guestEnd struct {
	guest string
	conn  net.Conn
}

func newFakeDriver() *fakeDriver {
	return &fakeDriver{running: map[string]hypervisor.Status{}, specs: map[string]hypervisor.GuestSpec{}, chans: make(chan guestEnd, 4)}
}

// waitChannel is the guest end of the next channel fenced opened.
func (d *fakeDriver) waitChannel(t *testing.T) guestEnd {
	t.Helper()
	select {
	case g := <-d.chans:
		return g
	case <-time.After(5 * time.Second):
		t.Fatal("fenced did not connect to the guest's channel")
		return guestEnd{}
	}
}

func (d *fakeDriver) run(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running[name] = hypervisor.Status{Name: name, State: hypervisor.StateRunning, Started: time.Now()}
}

func (d *fakeDriver) isRunning(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.running[name]
	return ok
}

func (d *fakeDriver) Start(_ context.Context, spec hypervisor.GuestSpec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.running[spec.Name]; ok {
		return fmt.Errorf("fake: %w", hypervisor.ErrAlreadyRunning)
	}
	d.running[spec.Name] = hypervisor.Status{Name: spec.Name, State: hypervisor.StateRunning, Started: time.Now()}
	d.specs[spec.Name] = spec
	return nil
}

func (d *fakeDriver) Stop(_ context.Context, name string, _ time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.running[name]; !ok {
		return fmt.Errorf("fake: %w", hypervisor.ErrNotRunning)
	}
	delete(d.running, name)
	d.stopped = append(d.stopped, name)
	return nil
}

func (d *fakeDriver) Destroy(_ context.Context, name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.running[name]; !ok {
		return fmt.Errorf("fake: %w", hypervisor.ErrNotRunning)
	}
	delete(d.running, name)
	d.destroyed = append(d.destroyed, name)
	return nil
}

func (d *fakeDriver) List(context.Context) ([]hypervisor.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []hypervisor.Status
	for _, s := range d.running {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (d *fakeDriver) Status(_ context.Context, name string) (hypervisor.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.running[name]
	if !ok {
		return hypervisor.Status{}, fmt.Errorf("fake: %w", hypervisor.ErrNotRunning)
	}
	return s, nil
}

func (d *fakeDriver) Channel(_ context.Context, name string) (net.Conn, error) {
	if d.noChannel || !d.isRunning(name) {
		return nil, fmt.Errorf("fake: no channel for %s", name)
	}
	host, guest := net.Pipe()
	d.chans <- guestEnd{guest: name, conn: guest}
	return host, nil
}

func (d *fakeDriver) destroyedList() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.destroyed)
}

// fakeTargetd records fence calls and refuses epochs below the last.
type fakeTargetd struct {
	owner  string // the exports' fence owner IQN
	mu     sync.Mutex
	epochs map[string]uint64
	calls  []controlapi.FenceRequest
}

func (f *fakeTargetd) Exports(context.Context) ([]controlapi.ExportInfo, error) {
	return []controlapi.ExportInfo{{Target: "iqn.x:web-root", Guest: "web", Disk: "root", Sessions: 1,
		Fence: controlapi.FenceState{Owner: f.owner, Epoch: 3}}}, nil
}

func (f *fakeTargetd) Fence(_ context.Context, req controlapi.FenceRequest) (controlapi.FenceResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.epochs == nil {
		f.epochs = map[string]uint64{}
	}
	f.calls = append(f.calls, req)
	if req.Epoch < f.epochs[req.Guest] {
		// What controlapi.ControlClient returns for its 409.
		return controlapi.FenceResult{}, fmt.Errorf("%w (targetd control POST /v1/fence: 409 Conflict: at epoch %d)", controlapi.ErrStaleEpoch, f.epochs[req.Guest])
	}
	f.epochs[req.Guest] = req.Epoch
	return controlapi.FenceResult{Targets: []string{"iqn.x:" + req.Guest}, Dropped: 1}, nil
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestServer makes a storage node's Server with fakes, its ledger
// already up.
func newTestServer(t *testing.T, cfg *configs.Config, node string) (*Server, *fakeStore, *fakeDriver, *fakeTargetd) {
	t.Helper()
	st := newFakeStore(node)
	drv := newFakeDriver()
	td := &fakeTargetd{}
	s, err := New(Options{
		Config: cfg, Node: node, Driver: drv, Targetd: td,
		Ledger:      LedgerStarterFunc(func(context.Context) (Member, ledger.Store, error) { return nil, st, nil }),
		SpecOptions: []hypervisor.SpecOption{hypervisor.WithRunDir(t.TempDir())},
		StateDir:    t.TempDir(), Logger: testLogger(t),
	})
	require.NoError(t, err)
	s.ledger.set(st)
	t.Cleanup(s.channels.Close)
	return s, st, drv, td
}

func mustList(t *testing.T, d *fakeDriver) []hypervisor.Status {
	l, err := d.List(context.Background())
	require.NoError(t, err)
	return l
}
