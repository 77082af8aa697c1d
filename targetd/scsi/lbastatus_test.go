package scsi

import (
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mapDev is a MemDev that keeps, like a sparse file, which allocation
// units of gran bytes have storage: a write allocates the units it
// touches, a discard frees the units wholly inside it (and zeroes the
// rest of its range, as a hole punch does).
type mapDev struct {
	*MemDev
	gran int64
	mu   sync.Mutex
	used []bool
	err  error // returned by Mapped when set
}

func newMapDev(size, gran int64) *mapDev {
	return &mapDev{MemDev: NewMemDev(size, true), gran: gran, used: make([]bool, (size+gran-1)/gran)}
}

func (m *mapDev) WriteAt(p []byte, off int64) (int, error) {
	n, err := m.MemDev.WriteAt(p, off)
	m.mu.Lock()
	defer m.mu.Unlock()
	for u := off / m.gran; u*m.gran < off+int64(n); u++ {
		m.used[u] = true
	}
	return n, err
}

func (m *mapDev) Discard(off, n int64) error {
	if err := m.MemDev.Discard(off, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for u := (off + m.gran - 1) / m.gran; (u+1)*m.gran <= off+n; u++ {
		m.used[u] = false
	}
	return nil
}

func (m *mapDev) Mapped(off, limit int64) (bool, int64, error) {
	if m.err != nil {
		return false, 0, m.err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u := off / m.gran
	state := m.used[u]
	end := (u + 1) * m.gran
	for int(end/m.gran) < len(m.used) && m.used[end/m.gran] == state {
		end += m.gran
	}
	return state, min(end-off, limit), nil
}

func glsCDB(lba uint64, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opServiceActionIn16, saGetLBAStatus
	be64put(c[2:], lba)
	be32put(c[10:], alloc)
	return c
}

// lbaDesc is one decoded LBA status descriptor.
type lbaDesc struct {
	lba    uint64
	blocks uint32
	status byte
}

// lbaStatus runs GET LBA STATUS and decodes its answer, checking the
// header and that the descriptors follow each other from lba on.
func (f *fixture) lbaStatus(lba uint64, alloc uint32) []lbaDesc {
	f.t.Helper()
	res := f.good(nexusA, glsCDB(lba, alloc), nil)
	d := res.Data
	require.GreaterOrEqual(f.t, len(d), 24, "at least one descriptor")
	require.Zero(f.t, (len(d)-8)%16)
	require.EqualValues(f.t, len(d)-4, be32(d), "PARAMETER DATA LENGTH")
	require.EqualValues(f.t, len(d), res.TransferLen)
	var out []lbaDesc
	next := lba
	for p := d[8:]; len(p) > 0; p = p[16:] {
		e := lbaDesc{lba: be64(p), blocks: be32(p[8:]), status: p[12] & 0x0f}
		require.Equal(f.t, next, e.lba, "descriptors are contiguous from the starting LBA")
		require.NotZero(f.t, e.blocks)
		next += uint64(e.blocks)
		out = append(out, e)
	}
	return out
}

// TestGetLBAStatus: on a thin LU whose device can tell, GET LBA STATUS
// reports deallocated and mapped extents as writes and UNMAP make them,
// the first descriptor at the starting LBA, as many as the allocation
// length holds; a starting LBA past the end is out of range.
func TestGetLBAStatus(t *testing.T) {
	dev := newMapDev(testBlocks*512, 512)
	f := newFixture(t, thin, func(c *LUConfig) { c.Dev = dev })

	assert.Equal(t, []lbaDesc{{0, testBlocks, lbaDeallocated}}, f.lbaStatus(0, 4096), "a new sparse volume")

	f.good(nexusA, rw10c(opWrite10, 0, 10, 10), fill(10*512, 'x'))
	assert.Equal(t, []lbaDesc{{0, 10, 1}, {10, 10, 0}, {20, testBlocks - 20, 1}}, f.lbaStatus(0, 4096))
	assert.Equal(t, []lbaDesc{{0, 10, 1}}, f.lbaStatus(0, 24), "one descriptor fits")
	assert.Equal(t, []lbaDesc{{15, 5, 0}, {20, testBlocks - 20, 1}}, f.lbaStatus(15, 40), "from inside an extent")
	assert.Equal(t, []lbaDesc{{testBlocks - 1, 1, 1}}, f.lbaStatus(testBlocks-1, 4096), "the last block")

	p := unmapParams([2]uint64{12, 2})
	f.good(nexusA, unmapCDB(len(p)), p)
	assert.Equal(t, []lbaDesc{{10, 2, 0}, {12, 2, 1}, {14, 6, 0}, {20, testBlocks - 20, 1}}, f.lbaStatus(10, 4096))
	f.good(nexusA, ws16(0x08, 10, 2), make([]byte, 512)) // WRITE SAME with UNMAP of zeroes deallocates
	assert.Equal(t, []lbaDesc{{10, 4, 1}, {14, 6, 0}}, f.lbaStatus(10, 40))

	// Out of range, whatever the allocation length.
	for _, lba := range []uint64{testBlocks, testBlocks + 1, 1 << 63, math.MaxUint64} {
		requireSense(t, f.do(nexusA, glsCDB(lba, 24), nil), SenseIllegalRequest, ascLBAOutOfRange)
		requireSense(t, f.do(nexusA, glsCDB(lba, 0), nil), SenseIllegalRequest, ascLBAOutOfRange)
	}
	// A short allocation length truncates; the header still counts one
	// descriptor. Zero is no error.
	res := f.good(nexusA, glsCDB(0, 12), nil)
	assert.Equal(t, []byte{0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0}, res.Data)
	assert.EqualValues(t, 12, res.TransferLen)
	res = f.good(nexusA, glsCDB(0, 0), nil)
	assert.Empty(t, res.Data)
	// REPORT TYPE (byte 14) is not offered.
	c := glsCDB(0, 24)
	c[14] = 0x02
	requireSense(t, f.do(nexusA, c, nil), SenseIllegalRequest, ascInvalidFieldInCDB)
}

// TestGetLBAStatusDescriptorLimit: alternating extents stop at
// maxLBAStatusDescs descriptors, and the next command picks up after.
func TestGetLBAStatusDescriptorLimit(t *testing.T) {
	dev := newMapDev(testBlocks*512, 512)
	f := newFixture(t, thin, func(c *LUConfig) { c.Dev = dev })
	for lba := uint32(0); lba < 300; lba += 2 {
		f.good(nexusA, rw10c(opWrite10, 0, lba, 1), fill(512, 1))
	}
	ds := f.lbaStatus(0, 1<<20)
	require.Len(t, ds, maxLBAStatusDescs)
	for i, d := range ds {
		assert.Equal(t, lbaDesc{uint64(i), 1, byte(i % 2)}, d)
	}
	assert.Equal(t, lbaDesc{maxLBAStatusDescs, 1, 0}, f.lbaStatus(maxLBAStatusDescs, 1<<20)[0])
}

// TestGetLBAStatusUnalignedHoles: holes of a device whose allocation unit
// is not the logical block: a block is deallocated only if all of it is.
func TestGetLBAStatusUnalignedHoles(t *testing.T) {
	// 4 KiB allocation units under 512-byte blocks: writing one block
	// maps its whole unit (8 blocks).
	dev := newMapDev(testBlocks*512, 4096)
	f := newFixture(t, thin, func(c *LUConfig) { c.Dev = dev })
	f.good(nexusA, rw10c(opWrite10, 0, 17, 1), fill(512, 1))
	assert.Equal(t, []lbaDesc{{0, 16, 1}, {16, 8, 0}, {24, testBlocks - 24, 1}}, f.lbaStatus(0, 4096))
	assert.Equal(t, []lbaDesc{{20, 4, 0}}, f.lbaStatus(20, 24))

	// 1 KiB units under 4 KiB blocks: a 1 KiB hole inside block 1 leaves
	// it mapped (the first mapped run ends inside it and takes it along).
	dev = newMapDev(16*4096, 1024)
	g := newFixture(t, thin, bs4k, func(c *LUConfig) { c.Dev = dev })
	g.good(nexusA, rw10c(opWrite10, 0, 0, 4), fill(4*4096, 1))
	require.NoError(t, dev.Discard(4096+1024, 1024))
	assert.Equal(t, []lbaDesc{{0, 2, 0}, {2, 2, 0}, {4, 12, 1}}, g.lbaStatus(0, 4096))
	assert.Equal(t, []lbaDesc{{1, 1, 0}, {2, 2, 0}, {4, 12, 1}}, g.lbaStatus(1, 4096), "a hole that starts in the block and ends in it")
	require.NoError(t, dev.Discard(4096+3072, 1024))
	assert.Equal(t, []lbaDesc{{1, 1, 0}, {2, 2, 0}, {4, 12, 1}}, g.lbaStatus(1, 4096), "a hole that starts in the block and runs to its end")
	require.NoError(t, dev.Discard(2*4096, 1024))
	assert.Equal(t, []lbaDesc{{2, 1, 0}, {3, 1, 0}, {4, 12, 1}}, g.lbaStatus(2, 4096), "a hole that starts the block and ends in it")
	require.NoError(t, dev.Discard(4096, 4096))
	assert.Equal(t, []lbaDesc{{0, 1, 0}, {1, 1, 1}, {2, 1, 0}, {3, 1, 0}, {4, 12, 1}}, g.lbaStatus(0, 4096))
}

// TestGetLBAStatusMappedWhenUnknown: a fully provisioned LU, and a thin
// one whose device cannot tell, report everything mapped ("mapped or
// unknown"), never deallocated.
func TestGetLBAStatusMappedWhenUnknown(t *testing.T) {
	full := newFixture(t, func(c *LUConfig) { c.Dev = newMapDev(testBlocks*512, 512) })
	assert.Equal(t, []lbaDesc{{0, testBlocks, 0}}, full.lbaStatus(0, 4096))
	blind := newFixture(t, thin) // MemDev has no Mapped
	assert.Equal(t, []lbaDesc{{5, testBlocks - 5, 0}}, blind.lbaStatus(5, 4096))
}

// TestGetLBAStatusDeviceError: a device that cannot answer fails the
// command (HARDWARE ERROR) rather than guessing.
func TestGetLBAStatusDeviceError(t *testing.T) {
	dev := newMapDev(testBlocks*512, 512)
	dev.err = errors.New("lseek: input/output error")
	f := newFixture(t, thin, func(c *LUConfig) { c.Dev = dev })
	requireSense(t, f.do(nexusA, glsCDB(0, 24), nil), SenseHardwareError, ascInternalTargetFailure)
}

// hugeDev is a device of 2^32+10 blocks that holds no data: enough to see
// a descriptor cut at the largest NUMBER OF LOGICAL BLOCKS.
type hugeDev struct{ *MemDev }

const hugeBlocks = 1<<32 + 10

func (hugeDev) Size() int64 { return hugeBlocks * 512 }
func (hugeDev) Mapped(off, limit int64) (bool, int64, error) {
	return false, min(hugeBlocks*512-off, limit), nil
}

func TestGetLBAStatusLongExtent(t *testing.T) {
	f := newFixture(t, thin, func(c *LUConfig) { c.Dev = hugeDev{NewMemDev(512, true)} })
	assert.Equal(t, []lbaDesc{{0, math.MaxUint32, 1}, {math.MaxUint32, 11, 1}}, f.lbaStatus(0, 4096))
}

// TestGetLBAStatusReported: REPORT SUPPORTED OPERATION CODES lists GET
// LBA STATUS, since LBPME promises it (SBC-4 4.7.3.1).
func TestGetLBAStatusReported(t *testing.T) {
	f := newFixture(t, thin)
	res := f.good(nexusA, rsocCDB(false, 2, opServiceActionIn16, saGetLBAStatus, 64), nil)
	assert.Equal(t, byte(0x03), res.Data[1]&0x07, "SUPPORT: supported")
	assert.EqualValues(t, 16, be16(res.Data[2:]))
	assert.Equal(t, []byte{opServiceActionIn16, 0x1f}, res.Data[4:6])
}

// TestGetLBAStatusUnmapSingle runs the steps of libiscsi 1.19's
// GetLBAStatus.UnmapSingle with SBC-4's expectation: the first descriptor
// starts at the starting LBA. libiscsi's second loop wants it at
// i+lbppb for a request at i+1, which only lbppb 1 can satisfy; targetd's
// legs have lbppb 8, so the conformance run lists that one assertion as
// an expected failure and this test covers the rest for both.
func TestGetLBAStatusUnmapSingle(t *testing.T) {
	for _, lbppb := range []uint64{1, 8} {
		dev := newMapDev(testBlocks*512, int64(lbppb)*512)
		f := newFixture(t, thin, func(c *LUConfig) { c.Dev = dev; c.PhysicalBlockSize = uint32(lbppb) * 512 })
		unmap := func(lba, n uint64) {
			p := unmapParams([2]uint64{lba, n})
			f.good(nexusA, unmapCDB(len(p)), p)
		}
		write := func() { f.good(nexusA, rw10c(opWrite10, 0, 0, uint16(256+lbppb)), fill(int(256+lbppb)*512, 'A')) }

		write()
		for i := uint64(0); i+lbppb <= 256; i += lbppb {
			unmap(i, lbppb)
			assert.Equal(t, lbaDesc{i, uint32(lbppb), lbaDeallocated}, f.lbaStatus(i, 24)[0], "lbppb %d: unmapped at %d", lbppb, i)
			assert.Equal(t, lbaDesc{i + lbppb, 256 - uint32(i), 0}, f.lbaStatus(i+lbppb, 24)[0], "lbppb %d: mapped after %d", lbppb, i)
		}
		for i := lbppb; i+lbppb <= 256; i += lbppb {
			write()
			unmap(0, i)
			assert.Equal(t, lbaDesc{0, uint32(i), lbaDeallocated}, f.lbaStatus(0, 24)[0], "lbppb %d: %d unmapped", lbppb, i)
			d := f.lbaStatus(i+1, 24)[0]
			assert.Equal(t, i+1, d.lba, "lbppb %d: starts at the starting LBA", lbppb)
			assert.Equal(t, byte(0), d.status, "lbppb %d: mapped at %d", lbppb, i+1)
		}
	}
}
