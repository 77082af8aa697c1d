package initiator

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/naming"
)

const testCluster = `cluster:
  name: demo
  iqn_prefix: iqn.2026-11.org.mhcodi
nodes:
  - name: node-a
    san_address: 192.0.2.11
    mgmt_address: 192.0.2.11:7440
  - name: node-b
    san_address: 192.0.2.12
    mgmt_address: 192.0.2.12:7440
  - name: node-c
    san_address: 192.0.2.13
    mgmt_address: 192.0.2.13:7440
storage:
  backend: file
  file: {dir: volumes}
guests:
  - name: web1
    preferred_node: node-a
    disks:
      - {name: root, size: 64M, legs: [node-a, node-b]}
  - name: db1
    preferred_node: node-b
    disks:
      - {name: root, size: 64M, legs: [node-b, node-c]}
initiator:
  backend: BACKEND
  link_dir: LINKDIR
timeouts:
  replacement_timeout: 7s
  lease_ttl: 10s
`

func loadTest(t *testing.T, backend, linkDir string) *configs.Config {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "cluster.yaml")
	text := strings.NewReplacer("BACKEND", backend, "LINKDIR", linkDir).Replace(testCluster)
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	cfg, err := configs.Load(p)
	require.NoError(t, err)
	return cfg
}

func TestPlan(t *testing.T) {
	cfg := loadTest(t, "open-iscsi", "/dev/mhcodi")
	wants, err := Plan(cfg, "node-a", nil)
	require.NoError(t, err)
	require.Len(t, wants, 2, "db1 never runs on node-a")
	assert.True(t, wants[0].Local)
	assert.Equal(t, "/dev/mhcodi/web1/root/node-a", wants[0].Link)
	tg := wants[1].Target
	require.NotNil(t, tg)
	assert.Equal(t, "192.0.2.12:3260", tg.Portal.String())
	assert.Equal(t, "iqn.2026-11.org.mhcodi:demo.node-a.initiator", tg.Initiator)
	assert.Equal(t, 7*time.Second, tg.ReplacementTimeout)

	// node-b sees both guests' legs: the same paths node-a and node-c see
	// for the guests they share with it.
	wb, err := Plan(cfg, "node-b", nil)
	require.NoError(t, err)
	assert.Len(t, wb, 4)

	q := loadTest(t, "qemu", "/dev/mhcodi")
	wq, err := Plan(q, "node-a", nil)
	require.NoError(t, err)
	assert.Nil(t, wq[1].Target)
	assert.Empty(t, wq[1].Link, "qemu reaches the remote leg itself")
}

// fakeBackend is a kernel that logs in whatever is asked, with a disk
// whose serial is the leg's.
type fakeBackend struct {
	mu       sync.Mutex
	sessions []Session
	logins   int
	next     int
	refuse   bool
}

func (f *fakeBackend) Name() string   { return configs.InitiatorOpenISCSI }
func (f *fakeBackend) Recovers() bool { return true }
func (f *fakeBackend) Login(_ context.Context, t Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logins++
	if f.refuse {
		return &RefusedError{Reason: "not authorized"}
	}
	p, _ := naming.ParseIQN(t.IQN)
	f.next++
	name := "sd" + string(rune('a'+f.next-1))
	f.sessions = append(f.sessions, Session{ID: f.next, Target: t.IQN, State: SessionLoggedIn, Device: Device{Path: "/dev/" + name, Name: name, Serial: naming.Serial(p.Leg)}})
	return nil
}
func (f *fakeBackend) Logout(_ context.Context, s Session) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.sessions {
		if f.sessions[i].ID == s.ID {
			f.sessions = append(f.sessions[:i], f.sessions[i+1:]...)
			break
		}
	}
	return nil
}
func (f *fakeBackend) Sessions(context.Context) ([]Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Session(nil), f.sessions...), nil
}

// The importer against real links and a real state file: every leg
// linked and up, then a reload that drops a guest unlinks and logs out.
func TestImporterRun(t *testing.T) {
	linkDir := filepath.Join(t.TempDir(), "mhcodi")
	cfg := loadTest(t, "open-iscsi", linkDir)
	require.NoError(t, os.MkdirAll(filepath.Join(cfg.Dir, "volumes"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(cfg.Dir, "volumes", "mhc-db1-root"), nil, 0o644))
	fb := &fakeBackend{}
	state := filepath.Join(t.TempDir(), "initiator-node-b.json")
	im, err := New(Options{Config: cfg, Node: "node-b", Backend: fb, StateFile: state, Interval: 20 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- im.Run(ctx) }()
	defer func() { cancel(); <-done }()

	require.Eventually(t, func() bool {
		st, err := ReadState(state)
		if err != nil || len(st.Legs) != 4 {
			return false
		}
		for _, l := range st.Legs {
			if l.Leg == "web1/root/node-b" { // its file was never made
				continue
			}
			if l.State != StateUp {
				return false
			}
		}
		return true
	}, 5*time.Second, 20*time.Millisecond)
	dest, err := os.Readlink(filepath.Join(linkDir, "web1", "root", "node-a"))
	require.NoError(t, err)
	assert.Regexp(t, `^/dev/sd[ab]$`, dest)
	dest, err = os.Readlink(filepath.Join(linkDir, "db1", "root", "node-b"))
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(cfg.Dir, "volumes", "mhc-db1-root"), dest)
	st, err := ReadState(state)
	require.NoError(t, err)
	assert.False(t, st.Stale(time.Now()))
	assert.True(t, im.Healthy())

	// db1 leaves the config.
	text, err := os.ReadFile(cfg.Path)
	require.NoError(t, err)
	i := strings.Index(string(text), "  - name: db1")
	j := strings.Index(string(text), "initiator:")
	require.NoError(t, os.WriteFile(cfg.Path, append(text[:i:i], text[j:]...), 0o644))
	ncfg, err := configs.Load(cfg.Path)
	require.NoError(t, err)
	require.NoError(t, im.Reload(ncfg))
	require.Eventually(t, func() bool {
		_, err := os.Lstat(filepath.Join(linkDir, "db1"))
		ss, _ := fb.Sessions(ctx)
		return os.IsNotExist(err) && len(ss) == 1
	}, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, 2, fb.logins, "one login per remote leg")
}

func TestLinks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "mhcodi")
	l := Links{Dir: dir}
	p := filepath.Join(dir, "web1", "root", "node-b")
	require.NoError(t, l.Set(p, "/dev/sda"))
	require.NoError(t, l.Set(p, "/dev/sdb"))
	// A foreign file and a crash leftover.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README"), nil, 0o644))
	require.NoError(t, os.Symlink("/x", filepath.Join(dir, "web1", "root", tmpPrefix+"x")))
	got, err := l.Scan()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{p: "/dev/sdb"}, got)
	_, err = os.Lstat(filepath.Join(dir, "web1", "root", tmpPrefix+"x"))
	assert.True(t, os.IsNotExist(err), "leftover removed")
	assert.Error(t, l.Set(filepath.Join(dir, "..", "etc"), "/x"), "outside the link dir")
	require.NoError(t, l.Remove(p))
	_, err = os.Stat(filepath.Join(dir, "web1"))
	assert.True(t, os.IsNotExist(err), "empty guest directory removed")
	_, err = os.Stat(filepath.Join(dir, "README"))
	assert.NoError(t, err, "foreign file left alone")
	empty, err := Links{Dir: filepath.Join(dir, "none")}.Scan()
	require.NoError(t, err)
	assert.Empty(t, empty)
}

// A fake sysfs tree shaped like the kernel's.
func TestSysfsSessions(t *testing.T) {
	root := t.TempDir()
	host := filepath.Join(root, "devices", "platform", "host2", "session3")
	sdev := filepath.Join(host, "target2:0:0", "2:0:0:0")
	require.NoError(t, os.MkdirAll(filepath.Join(sdev, "block", "sdb"), 0o755))
	vpd := append([]byte{0, 0x80, 0, 20}, []byte("MHC0123456789ABCDEF0")...)
	require.NoError(t, os.WriteFile(filepath.Join(sdev, "vpd_pg80"), vpd, 0o444))
	cls := filepath.Join(host, "iscsi_session", "session3")
	require.NoError(t, os.MkdirAll(cls, 0o755))
	require.NoError(t, os.Symlink(host, filepath.Join(cls, "device")))
	require.NoError(t, os.WriteFile(filepath.Join(cls, "targetname"), []byte("iqn.2026-11.org.mhcodi:demo.node-b.web1.root\n"), 0o444))
	require.NoError(t, os.WriteFile(filepath.Join(cls, "state"), []byte("LOGGED_IN\n"), 0o444))
	require.NoError(t, os.WriteFile(filepath.Join(cls, "recovery_tmo"), []byte("120\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "class", "iscsi_session"), 0o755))
	require.NoError(t, os.Symlink(cls, filepath.Join(root, "class", "iscsi_session", "session3")))
	conn := filepath.Join(root, "class", "iscsi_connection", "connection3:0")
	require.NoError(t, os.MkdirAll(conn, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(conn, "persistent_address"), []byte("10.0.0.2\n"), 0o444))
	require.NoError(t, os.WriteFile(filepath.Join(conn, "persistent_port"), []byte("3260\n"), 0o444))

	s := Sysfs{Root: root}
	ss, err := s.Sessions()
	require.NoError(t, err)
	require.Len(t, ss, 1)
	assert.Equal(t, Session{ID: 3, Target: "iqn.2026-11.org.mhcodi:demo.node-b.web1.root", Portal: "10.0.0.2:3260", State: SessionLoggedIn,
		Device: Device{Path: "/dev/sdb", Name: "sdb", Serial: "MHC0123456789ABCDEF0"}}, ss[0])
	require.NoError(t, s.SetRecoveryTimeout(3, 10))
	b, _ := os.ReadFile(filepath.Join(cls, "recovery_tmo"))
	assert.Equal(t, "10", string(b))
	none, err := Sysfs{Root: t.TempDir()}.Sessions()
	require.NoError(t, err)
	assert.Empty(t, none)
}
