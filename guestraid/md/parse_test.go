package md

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The testdata files are Debian mdadm 4.2's output in the VM test.

func TestParseExamine(t *testing.T) {
	b, err := os.ReadFile("testdata/examine-split.txt")
	require.NoError(t, err)
	s, err := ParseExamine(string(b))
	require.NoError(t, err)
	assert.Equal(t, &Super{
		ArrayUUID: "c59b3c9b:621d05f7:305eda9b:7e73ff79", DevUUID: "beb91572:d7d5c451:50522bc1:9688834c",
		Name: "demo-root", Level: "raid1", Devices: 2, Events: 66, Slot: 1, ArrayState: ".A", State: "clean",
	}, s)
	assert.True(t, s.ActiveIn(1))
	assert.False(t, s.ActiveIn(0))
	assert.False(t, s.ActiveIn(2))
	assert.False(t, s.ActiveIn(-1))

	_, err = ParseExamine("mdadm: No md superblock detected on /dev/vda.\n")
	assert.Error(t, err)
}

func TestParseExamineSpare(t *testing.T) {
	s, err := ParseExamine("     Array UUID : u\n         Events : 3\n    Device Role : spare\n    Array State : A. ('A' == active)\n")
	require.NoError(t, err)
	assert.Equal(t, -1, s.Slot)
	assert.Equal(t, "A.", s.ArrayState)
}

func TestParseBitmap(t *testing.T) {
	b, err := os.ReadFile("testdata/examine-bitmap.txt")
	require.NoError(t, err)
	bm, err := ParseBitmap(string(b))
	require.NoError(t, err)
	assert.Equal(t, Bitmap{ChunkBytes: 1 << 20, Bits: 255, Dirty: 255, Events: 18}, bm)
	assert.Equal(t, int64(255<<20), bm.DirtyBytes())

	bm, err = ParseBitmap("       Chunksize : 64 MB\n          Bitmap : 4 bits (chunks), 1 dirty (25.0%)\n")
	require.NoError(t, err)
	assert.Equal(t, int64(64<<20), bm.DirtyBytes())
	_, err = ParseBitmap("mdadm: invalid bitmap magic 0x0, the bitmap file appears to be corrupted\n")
	assert.Error(t, err)
}

func TestParseSyncCompleted(t *testing.T) {
	f, ok := ParseSyncCompleted("1024 / 524288")
	assert.True(t, ok)
	assert.InDelta(t, 1024.0/524288, f, 1e-12)
	_, ok = ParseSyncCompleted("none")
	assert.False(t, ok)
	_, ok = ParseSyncCompleted("delayed")
	assert.False(t, ok)
}

func TestSysfsArray(t *testing.T) {
	root := t.TempDir()
	write := func(p, v string) {
		require.NoError(t, os.MkdirAll(root+"/"+dir(p), 0o755))
		require.NoError(t, os.WriteFile(root+"/"+p, []byte(v+"\n"), 0o644))
	}
	write("block/md0/md/array_state", "clean")
	write("block/md0/md/degraded", "1")
	write("block/md0/md/raid_disks", "2")
	write("block/md0/md/sync_action", "recover")
	write("block/md0/md/sync_completed", "2048 / 522240")
	write("block/md0/md/mismatch_cnt", "0")
	write("block/md0/md/bitmap/chunksize", "1048576")
	write("block/md0/size", "522240")
	write("block/md0/md/dev-vda/state", "in_sync")
	write("block/md0/md/dev-vda/slot", "0")
	write("block/md0/md/dev-vdb/state", "spare,write_mostly,failfast")
	write("block/md0/md/dev-vdb/slot", "1")
	write("block/vda/serial", "MHC-LEG-A")
	write("block/vdb/serial", "MHC-LEG-B")
	write("block/vdb/stat", "     100        0     4000       10      200        0     9000       20        0       30       30        0        0        0        0        0        0")
	s := Sysfs{Root: root}

	a, err := s.Array("md0")
	require.NoError(t, err)
	assert.True(t, a.Running)
	assert.Equal(t, 1, a.Degraded)
	assert.Equal(t, int64(522240*512), a.Bytes)
	assert.Equal(t, int64(1<<20), a.BitmapChunk)
	m, ok := a.Member("vdb")
	require.True(t, ok)
	assert.Equal(t, 1, m.Slot)
	assert.True(t, m.Has("write_mostly"))

	stopped, err := s.Array("md1")
	require.NoError(t, err)
	assert.False(t, stopped.Running)

	serials, err := s.Serials()
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"MHC-LEG-A": "vda", "MHC-LEG-B": "vdb"}, serials)
	ws, err := s.WriteSectors("vdb")
	require.NoError(t, err)
	assert.Equal(t, uint64(9000), ws)
}

func dir(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}
