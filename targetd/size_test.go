package targetd

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
)

// resizeLeg sets the size of node-a's leg file of the demo disk.
func resizeLeg(t *testing.T, cfg *configs.Config, size int64) {
	t.Helper()
	legs := cfg.LegsOn("node-a")
	require.Len(t, legs, 1)
	require.NoError(t, os.Truncate(legs[0].Location, size))
}

// TestSmallerVolumeRefusedAtStart: a 100M volume for a disk the cluster
// file makes 256M is not exported; the message names the volume and both
// sizes.
func TestSmallerVolumeRefusedAtStart(t *testing.T) {
	cfg := loopback(t, nil)
	resizeLeg(t, cfg, 100<<20)
	_, err := New(Options{
		Config: cfg, Node: "node-a", StateDir: t.TempDir(), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.Error(t, err)
	for _, want := range []string{
		"volume mhc-demo-root is 100M (104857600 bytes)",
		"gives disk root of guest demo 256M (268435456 bytes)",
		cfg.Path,
		"refusing to export a leg smaller than its disk",
	} {
		assert.Contains(t, err.Error(), want)
	}
}

// TestLargerVolumeExportedWithWarning: a volume larger than its disk (an
// extend the cluster file does not show yet) is served whole, with a
// warning naming both sizes.
func TestLargerVolumeExportedWithWarning(t *testing.T) {
	cfg := loopback(t, nil)
	resizeLeg(t, cfg, 512<<20)
	var logs syncbuf.Buffer
	d, err := New(Options{
		Config: cfg, Node: "node-a", StateDir: t.TempDir(), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	t.Cleanup(func() { d.Shutdown(context.Background()) })
	ex := d.Exports()
	require.Len(t, ex, 1)
	assert.Equal(t, int64(512<<20), ex[0].Size)
	lines := logs.Lines("level=WARN", "volume is larger than its disk in the cluster file")
	require.Len(t, lines, 1)
	assert.Contains(t, lines[0], "volume=mhc-demo-root size=536870912 size_configured=268435456")
}

// TestReloadRefusesSmallerVolume: a reload that makes a disk larger than
// its exported volume, or brings a new leg whose volume is too small,
// fails and changes nothing.
func TestReloadRefusesSmallerVolume(t *testing.T) {
	cfg := loopback(t, nil)
	d := newDaemon(t, cfg)
	b, err := os.ReadFile(cfg.Path)
	require.NoError(t, err)
	orig := string(b)

	// The file now says 512M; the exported volume has 256M.
	grown := strings.Replace(orig, "size: 256M", "size: 512M", 1)
	require.NoError(t, os.WriteFile(cfg.Path, []byte(grown), 0o644))
	cfg2, err := configs.Load(cfg.Path)
	require.NoError(t, err)
	err = d.Reload(cfg2)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "volume mhc-demo-root is 256M (268435456 bytes), but the cluster file "+cfg.Path+" gives disk root of guest demo 512M (536870912 bytes)")
	require.Len(t, d.Exports(), 1, "the export stays as it was")

	// The volume shrank under a running targetd: the next reload refuses.
	resizeLeg(t, cfg, 200<<20)
	err = d.Reload(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "volume mhc-demo-root is 200M (209715200 bytes)")
	resizeLeg(t, cfg, 256<<20)
	require.NoError(t, d.Reload(cfg))

	// A new leg whose volume is too small is not exported.
	i := strings.Index(orig, "\ntimeouts:")
	text := orig[:i] + "\n  - name: extra\n    memory: 256M\n    disks:\n      - name: data\n        size: 16M\n        legs: [node-a, node-b]\n" + orig[i:]
	require.NoError(t, os.WriteFile(cfg.Path, []byte(text), 0o644))
	cfg3, err := configs.Load(cfg.Path)
	require.NoError(t, err)
	var extra configs.LegInfo
	for _, l := range cfg3.LegsOn("node-a") {
		if l.Guest == "extra" {
			extra = l
		}
	}
	require.NoError(t, os.WriteFile(extra.Location, nil, 0o600))
	require.NoError(t, os.Truncate(extra.Location, 8<<20))
	err = d.Reload(cfg3)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "volume mhc-extra-data is 8M (8388608 bytes), but the cluster file "+cfg.Path+" gives disk data of guest extra 16M (16777216 bytes)")
	assert.Len(t, d.Exports(), 1, "a failed reload changes nothing")
}
