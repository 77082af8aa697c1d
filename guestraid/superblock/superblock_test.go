package superblock

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// leg makes a device image with a 1.2 superblock whose data starts at
// dataOff bytes and spans dataSize bytes.
func leg(dataOff, dataSize int64, events uint64) []byte {
	d := make([]byte, dataOff+dataSize)
	sb := d[Offset:]
	le := binary.LittleEndian
	le.PutUint32(sb[0:], Magic)
	le.PutUint32(sb[4:], 1)
	le.PutUint32(sb[8:], 1) // bitmap
	copy(sb[16:32], bytes.Repeat([]byte{0xab}, 16))
	copy(sb[32:], "demo-root")
	le.PutUint32(sb[72:], 1)
	le.PutUint32(sb[92:], 2)
	le.PutUint32(sb[96:], 8)
	le.PutUint64(sb[128:], uint64(dataOff/512))
	le.PutUint64(sb[136:], uint64(dataSize/512))
	le.PutUint64(sb[144:], Offset/512)
	le.PutUint64(sb[200:], events)
	return d
}

func TestParse(t *testing.T) {
	s, err := Read(bytes.NewReader(leg(1<<20, 1<<20, 42)))
	require.NoError(t, err)
	assert.Equal(t, "demo-root", s.Name)
	assert.Equal(t, int64(1<<20), s.DataOffset)
	assert.Equal(t, int64(1<<20), s.DataSize)
	assert.Equal(t, uint64(42), s.Events)
	assert.Equal(t, "abababab:abababab:abababab:abababab", s.ArrayUUID)
	assert.True(t, s.HasBitmap())
	assert.Equal(t, uint32(2), s.RaidDisks)

	_, err = Read(bytes.NewReader(make([]byte, 8192)))
	assert.ErrorIs(t, err, ErrNoSuperblock)
}

func TestCompareData(t *testing.T) {
	// Different data offsets, same data: identical.
	a, b := leg(1<<20, 64<<10, 1), leg(2<<20, 64<<10, 1)
	copy(a[1<<20:], "hello")
	copy(b[2<<20:], "hello")
	off, err := CompareData(bytes.NewReader(a), bytes.NewReader(b))
	require.NoError(t, err)
	assert.Equal(t, int64(-1), off)
	b[2<<20+1000] = 1
	off, err = CompareData(bytes.NewReader(a), bytes.NewReader(b))
	require.NoError(t, err)
	assert.Equal(t, int64(1000), off)
}
