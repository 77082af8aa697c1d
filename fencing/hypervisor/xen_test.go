package hypervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
)

func TestXLConfigGolden(t *testing.T) {
	cfg := loadCluster(t, xenCluster)
	for _, c := range []struct{ guest, node string }{{"web1", "node-a"}, {"db1", "node-b"}} {
		s, err := SpecFor(cfg, c.guest, c.node, nil)
		require.NoError(t, err)
		golden(t, "xl-"+c.guest+"-"+c.node, []byte(XLConfig(s)))
	}
}

func TestParseXLListLong(t *testing.T) {
	b, err := os.ReadFile("testdata/xl-list-long.json")
	require.NoError(t, err)
	doms, err := ParseXLListLong(b)
	require.NoError(t, err)
	require.Len(t, doms, 3)
	assert.Equal(t, "Domain-0", doms[0].Name)
	w := doms[1]
	assert.Equal(t, 7, w.DomID)
	assert.Equal(t, "web1", w.Name)
	assert.Equal(t, "pvh", w.Type)
	assert.Equal(t, 2, w.MaxVCPUs)
	assert.EqualValues(t, 1<<20, w.MaxMemKiB)
	assert.Equal(t, map[string]string{"xvda": "/dev/mhcodi/web1/root/node-a", "xvdb": "/dev/mhcodi/web1/root/node-b"}, w.Disks)
	assert.Equal(t, []string{"/run/mhcodi/guests/web1/channel.sock"}, w.Channels)
	assert.Empty(t, doms[2].Channels)

	_, err = ParseXLListLong([]byte("xl: command not implemented"))
	assert.Error(t, err)
}

func TestParseXLList(t *testing.T) {
	b, err := os.ReadFile("testdata/xl-list.txt")
	require.NoError(t, err)
	st, err := ParseXLList(b)
	require.NoError(t, err)
	assert.Equal(t, map[string]State{"Domain-0": StateRunning, "web1": StateBlocked, "db1": StatePaused}, st)
	assert.Equal(t, StateDying, xlState("-b---d"))
	assert.Equal(t, StateCrashed, xlState("r---c-"))
	assert.Equal(t, StateShutdown, xlState("---s--"))
	assert.Equal(t, StateRunning, xlState("------"))

	_, err = ParseXLList([]byte("garbage\n"))
	assert.Error(t, err)
	_, err = ParseXLList(nil)
	assert.Error(t, err)
}

// fakeXL answers xl commands from the testdata samples and records them:
// the injected Runner the xen driver is built for (no Xen here).
type fakeXL struct {
	mu      sync.Mutex
	calls   []string
	running bool
	// shutdownHangs makes `xl shutdown -w` wait for its context.
	shutdownHangs bool
}

func (f *fakeXL) Run(ctx context.Context, argv ...string) ([]byte, error) {
	f.mu.Lock()
	f.calls = append(f.calls, strings.Join(argv, " "))
	running := f.running
	f.mu.Unlock()
	switch strings.Join(argv[:min(3, len(argv))], " ") {
	case "xl list -l":
		b, err := os.ReadFile("testdata/xl-list-long.json")
		if !running {
			// Only Domain-0.
			doms := strings.SplitN(string(b), "    },\n    {", 2)
			b = []byte(doms[0] + "    }\n]\n")
		}
		return b, err
	case "xl list":
		b, err := os.ReadFile("testdata/xl-list.txt")
		return b, err
	}
	switch argv[1] {
	case "create":
		f.mu.Lock()
		f.running = true
		f.mu.Unlock()
		return nil, nil
	case "shutdown":
		if f.shutdownHangs {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		f.mu.Lock()
		f.running = false
		f.mu.Unlock()
		return nil, nil
	case "destroy":
		f.mu.Lock()
		f.running = false
		f.mu.Unlock()
		return nil, nil
	}
	if argv[0] == "xenstore-write" {
		return nil, nil
	}
	return nil, errors.New("fakeXL: unexpected " + strings.Join(argv, " "))
}

func (f *fakeXL) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func TestXenDriver(t *testing.T) {
	cfg := loadCluster(t, xenCluster)
	cfg.Hypervisor.RunDir = t.TempDir()
	fx := &fakeXL{}
	d, err := New(cfg, "node-a", Options{Runner: fx, HostNet: newFakeNet(map[string]bool{"br-svc": true, "br-lan": false})})
	require.NoError(t, err)
	x := d.(*Xen)
	ctx := t.Context()

	_, err = x.Status(ctx, "web1")
	require.ErrorIs(t, err, ErrNotRunning)
	list, err := x.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, list, "Domain-0 is not a guest")

	spec, err := SpecFor(cfg, "web1", "node-a", []byte(hostInfo))
	require.NoError(t, err)
	require.NoError(t, x.Start(ctx, spec))
	cfgFile := filepath.Join(cfg.Hypervisor.RunDir, "web1", XLConfigFile)
	b, err := os.ReadFile(cfgFile)
	require.NoError(t, err)
	assert.Equal(t, XLConfig(spec), string(b))
	assert.Contains(t, fx.Calls(), "xl create "+cfgFile)
	assert.Contains(t, fx.Calls(), "xenstore-write /local/domain/7/mhcodi/host "+hostInfo)

	st, err := x.Status(ctx, "web1")
	require.NoError(t, err)
	assert.Equal(t, Status{Name: "web1", DomID: 7, State: StateBlocked,
		Console: "/var/log/xen/console/guest-web1.log", Channel: "/run/mhcodi/guests/web1/channel.sock"}, st)
	list, err = x.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 2)

	err = x.Start(ctx, spec)
	require.ErrorIs(t, err, ErrAlreadyRunning)

	// A guest that ignores the shutdown request is destroyed.
	fx.shutdownHangs = true
	start := time.Now()
	require.NoError(t, x.Stop(ctx, "web1", 100*time.Millisecond))
	assert.Less(t, time.Since(start), 5*time.Second)
	calls := fx.Calls()
	assert.Contains(t, calls, "xl shutdown -w web1")
	assert.Equal(t, "xl destroy web1", calls[len(calls)-1])
	assert.NoDirExists(t, filepath.Join(cfg.Hypervisor.RunDir, "web1"))

	require.ErrorIs(t, x.Destroy(ctx, "web1"), ErrNotRunning)
}

func TestXenRefusesISCSILegs(t *testing.T) {
	cfg := loadCluster(t, nil)
	cfg.Hypervisor.RunDir = t.TempDir()
	spec, err := SpecFor(cfg, "web1", "node-a", nil) // qemu-style legs
	require.NoError(t, err)
	cfg.Hypervisor.Driver = configs.DriverXen
	x, err := NewXen(cfg, "node-a", Options{Runner: &fakeXL{}})
	require.NoError(t, err)
	assert.ErrorContains(t, x.Start(t.Context(), spec), "xen needs initiator.backend open-iscsi or netlink")
}

// fakeNet is a host's network in memory: bridges by name (true: VLAN
// filtering) and the taps and port VLANs made on it.
type fakeNet struct {
	mu      sync.Mutex
	bridges map[string]bool
	taps    map[string]string // tap -> bridge
	vlans   map[string]int    // port -> VLAN
	failTap string            // AddTap of this tap fails
}

func newFakeNet(bridges map[string]bool) *fakeNet {
	return &fakeNet{bridges: bridges, taps: map[string]string{}, vlans: map[string]int{}}
}

func (f *fakeNet) Bridge(name string) BridgeInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	vf, ok := f.bridges[name]
	return BridgeInfo{Name: name, Present: ok, VLANFiltering: vf}
}

func (f *fakeNet) AddTap(tap, bridge string, vlan int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if tap == f.failTap {
		return errors.New("no tap for you")
	}
	f.taps[tap] = bridge
	if vlan != 0 {
		f.vlans[tap] = vlan
	}
	return nil
}

func (f *fakeNet) PortVLAN(dev string, vlan int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.vlans[dev] = vlan
	return nil
}

func (f *fakeNet) DelLink(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.taps, name)
	delete(f.vlans, name)
	return nil
}

func (f *fakeNet) Taps() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.taps {
		out[k] = v
	}
	return out
}

func TestXenNICs(t *testing.T) {
	cfg := loadCluster(t, xenCluster)
	cfg.Hypervisor.RunDir = t.TempDir()
	spec, err := SpecFor(cfg, "web1", "node-a", nil)
	require.NoError(t, err)

	// A missing bridge: refused before xl creates anything, and said.
	fx, hn := &fakeXL{}, newFakeNet(map[string]bool{"br-svc": true})
	x, err := NewXen(cfg, "node-a", Options{Runner: fx, HostNet: hn})
	require.NoError(t, err)
	err = x.Start(t.Context(), spec)
	require.ErrorContains(t, err, "bridge br-lan does not exist on node-a")
	for _, c := range fx.Calls() {
		assert.NotContains(t, c, "xl create")
	}

	// The VLAN of svc is set on its vif once xl made it.
	fx, hn = &fakeXL{}, newFakeNet(map[string]bool{"br-svc": true, "br-lan": false})
	x, err = NewXen(cfg, "node-a", Options{Runner: fx, HostNet: hn})
	require.NoError(t, err)
	require.NoError(t, x.Start(t.Context(), spec))
	assert.Equal(t, map[string]int{spec.NICs[0].Tap: 10}, hn.vlans)
}
