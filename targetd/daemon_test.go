package targetd

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/targetd/controlapi"
	"github.com/mhcodi/mhcodi/targetd/volume"
)

// loopback copies configs/examples/loopback.yaml into a temp dir (its
// volume dirs are relative to it), with edit applied, creates node-a's
// legs and returns the config.
func loopback(t *testing.T, edit func(string) string) *configs.Config {
	t.Helper()
	b, err := os.ReadFile("../configs/examples/loopback.yaml")
	require.NoError(t, err)
	text := string(b)
	if edit != nil {
		text = edit(text)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "cluster.yaml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	cfg, err := configs.Load(p)
	require.NoError(t, err)
	be, err := volume.New(cfg.StorageFor("node-a"))
	require.NoError(t, err)
	for _, l := range cfg.LegsOn("node-a") {
		_, err := be.Create(context.Background(), l.Volume, int64(l.Size))
		require.NoError(t, err)
	}
	return cfg
}

func newDaemon(t *testing.T, cfg *configs.Config) *Daemon {
	t.Helper()
	d, err := New(Options{
		Config: cfg, Node: "node-a", StateDir: t.TempDir(), Listen: "127.0.0.1:0",
		ExtraInitiators: []string{"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"},
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { d.Shutdown(context.Background()) })
	return d
}

const demoIQN = "iqn.2026-11.org.mhcodi:demo.node-a.demo.root"

func TestAuthorize(t *testing.T) {
	d := newDaemon(t, loopback(t, nil))
	nodeB := "iqn.2026-11.org.mhcodi:demo.node-b.initiator"

	dec, err := d.authorize(nodeB, demoIQN, false)
	require.NoError(t, err)
	assert.True(t, dec.Allowed, "a node of the cluster")
	assert.Nil(t, dec.CHAP, "no secrets file, no CHAP")

	dec, _ = d.authorize("iqn.1994-05.com.redhat:stranger", demoIQN, false)
	assert.False(t, dec.Allowed, "an initiator from outside the cluster")

	dec, _ = d.authorize("iqn.2026-11.org.mhcodi:other.node-b.initiator", demoIQN, false)
	assert.False(t, dec.Allowed, "the same node name in another cluster")

	dec, _ = d.authorize(nodeB, "iqn.2026-11.org.mhcodi:demo.node-a.demo.nope", false)
	assert.True(t, dec.NotFound)

	dec, _ = d.authorize("iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test", demoIQN, false)
	assert.True(t, dec.Allowed, "an --allow-initiator extra")

	assert.Len(t, d.discover(nodeB), 1)
	assert.Empty(t, d.discover("iqn.1994-05.com.redhat:stranger"))
}

func TestAuthorizeCHAP(t *testing.T) {
	cfg := loopback(t, func(s string) string {
		return strings.Replace(s, "timeouts:", "security:\n  chap_secrets: secrets.yaml\n\ntimeouts:", 1)
	})
	secrets := "nodes:\n  node-a:\n    initiator: node-a-initiator-secret\n    target: node-a-target-secret\n  node-b:\n    initiator: node-b-initiator-secret\n"
	require.NoError(t, os.WriteFile(cfg.Security.CHAPSecrets, []byte(secrets), 0o600))
	d := newDaemon(t, cfg)
	dec, err := d.authorize("iqn.2026-11.org.mhcodi:demo.node-b.initiator", demoIQN, false)
	require.NoError(t, err)
	require.NotNil(t, dec.CHAP)
	assert.Equal(t, "iqn.2026-11.org.mhcodi:demo.node-b.initiator", dec.CHAP.User)
	assert.Equal(t, "node-b-initiator-secret", dec.CHAP.Secret)
	require.NotNil(t, dec.MutualCHAP)
	assert.Equal(t, demoIQN, dec.MutualCHAP.User)
	assert.Equal(t, "node-a-target-secret", dec.MutualCHAP.Secret)
}

func TestFenceEpochs(t *testing.T) {
	d := newDaemon(t, loopback(t, nil))
	nodeA := "iqn.2026-11.org.mhcodi:demo.node-a.initiator"
	nodeB := "iqn.2026-11.org.mhcodi:demo.node-b.initiator"

	res, err := d.Fence("demo", "", "node-b", 5)
	require.NoError(t, err)
	assert.Equal(t, []string{demoIQN}, res.Targets)
	dec, _ := d.authorize(nodeA, demoIQN, false)
	assert.False(t, dec.Allowed, "fenced to node-b")
	dec, _ = d.authorize(nodeB, demoIQN, false)
	assert.True(t, dec.Allowed)
	assert.Empty(t, d.discover(nodeA), "a fenced export is not listed to others")

	_, err = d.Fence("demo", "root", "node-b", 5)
	assert.NoError(t, err, "the same owner at the same epoch is a no-op")
	_, err = d.Fence("demo", "root", "node-a", 5)
	assert.ErrorIs(t, err, controlapi.ErrStaleEpoch, "another owner at the same epoch")
	_, err = d.Fence("demo", "root", "node-a", 4)
	assert.ErrorIs(t, err, controlapi.ErrStaleEpoch, "an older epoch")
	_, err = d.Fence("demo", "root", "node-a", 6)
	assert.NoError(t, err)
	_, err = d.Fence("nosuch", "", "node-a", 7)
	assert.ErrorContains(t, err, "exports no leg of nosuch")
	_, err = d.Fence("demo", "", "node-z", 7)
	assert.ErrorContains(t, err, `owner node "node-z" is not defined`)

	// The state survives a restart.
	fs, err := openFenceStore(d.fence.path)
	require.NoError(t, err)
	assert.Equal(t, nodeA, fs.get(demoIQN).Owner)
	assert.Equal(t, uint64(6), fs.get(demoIQN).Epoch)
}

func TestCorruptFenceStateRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fence.json")
	require.NoError(t, os.WriteFile(p, []byte("{not json"), 0o600))
	_, err := openFenceStore(p)
	assert.ErrorContains(t, err, "refusing to start")
}

func TestWriteLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.jsonl")
	l, err := openWriteLog(p)
	require.NoError(t, err)
	l.record("t1", "I1", 1)
	l.record("t1", "i1", 1) // same, case-insensitively
	l.record("t1", "i2", 1)
	l.record("t1", "i2", 2)
	require.NoError(t, l.Close())
	recs, err := controlapi.ReadWriteLog(p)
	require.NoError(t, err)
	require.Len(t, recs, 3)
	assert.Equal(t, "i1", recs[0].Initiator)
	assert.Equal(t, uint64(2), recs[2].Epoch)
}

func TestReload(t *testing.T) {
	cfg := loopback(t, nil)
	d := newDaemon(t, cfg)
	require.Len(t, d.Exports(), 1)

	// A second guest appears: its leg is created, then exported on reload.
	b, err := os.ReadFile(cfg.Path)
	require.NoError(t, err)
	orig := string(b)
	i := strings.Index(orig, "\ntimeouts:")
	text := orig[:i] + "\n  - name: extra\n    memory: 256M\n    disks:\n      - name: data\n        size: 16M\n        legs: [node-a, node-b]\n" + orig[i:]
	require.NoError(t, os.WriteFile(cfg.Path, []byte(text), 0o644))
	cfg2, err := configs.Load(cfg.Path)
	require.NoError(t, err)
	err = d.Reload(cfg2)
	require.Error(t, err, "the new leg's volume does not exist yet")
	assert.Contains(t, err.Error(), "mhcodi volume create --node node-a --guest extra")
	assert.Len(t, d.Exports(), 1, "a failed reload changes nothing")

	be, err := volume.New(cfg2.StorageFor("node-a"))
	require.NoError(t, err)
	_, err = be.Create(context.Background(), "mhc-extra-data", 16<<20)
	require.NoError(t, err)
	require.NoError(t, d.Reload(cfg2))
	assert.Len(t, d.Exports(), 2)

	// And back: the extra export is withdrawn.
	require.NoError(t, d.Reload(cfg))
	ex := d.Exports()
	require.Len(t, ex, 1)
	assert.Equal(t, demoIQN, ex[0].Target)
}
