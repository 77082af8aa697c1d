package scsi

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func ws10(flags byte, lba uint32, n uint16) []byte { return rw10c(opWriteSame10, flags, lba, n) }
func ws16(flags byte, lba uint64, n uint32) []byte { return rw16c(opWriteSame16, flags, lba, n) }

func TestWriteSameWritesPattern(t *testing.T) {
	f := newFixture(t)
	pat := make([]byte, 512)
	for i := range pat {
		pat[i] = byte(i)
	}
	want := f.dev.Bytes()
	for n := 1; n <= 5; n++ {
		res := f.good(nexusA, ws10(0, uint32(10*n), uint16(n)), pat)
		assert.EqualValues(t, 512, res.TransferLen)
		for b := 0; b < n; b++ {
			copy(want[(10*n+b)*512:], pat)
		}
	}
	f.good(nexusA, ws16(0, testBlocks-3, 3), pat)
	for b := testBlocks - 3; b < testBlocks; b++ {
		copy(want[b*512:], pat)
	}
	assert.Equal(t, want, f.dev.Bytes())

	// Zero blocks (WSNZ=1): refused, nothing written.
	want = f.dev.Bytes()
	requireSense(t, f.do(nexusA, ws16(0, testBlocks-10, 0), fill(512, 0x77)), SenseIllegalRequest, ascInvalidFieldInCDB)
	requireSense(t, f.do(nexusA, ws10(0x08, 0, 0), make([]byte, 512)), SenseIllegalRequest, ascInvalidFieldInCDB)
	assert.Equal(t, want, f.dev.Bytes())

	requireSense(t, f.do(nexusA, ws10(0, testBlocks-1, 2), pat), SenseIllegalRequest, ascLBAOutOfRange)
	requireSense(t, f.do(nexusA, ws10(0, testBlocks+1, 0), pat), SenseIllegalRequest, ascLBAOutOfRange)
	requireSense(t, f.do(nexusA, ws16(0, 1<<63, 0), pat), SenseIllegalRequest, ascLBAOutOfRange)
	// Data-Out must be exactly one block.
	requireSense(t, f.do(nexusA, ws10(0, 0, 1), pat[:256]), SenseIllegalRequest, ascInvalidFieldInIU)
	requireSense(t, f.do(nexusA, ws10(0, 0, 1), fill(1024, 1)), SenseIllegalRequest, ascInvalidFieldInIU)
	// UNMAP on a fully provisioned LU, ANCHOR, WRPROTECT.
	requireSense(t, f.do(nexusA, ws10(0x08, 0, 1), make([]byte, 512)), SenseIllegalRequest, ascInvalidFieldInCDB)
	requireSense(t, f.do(nexusA, ws10(0x10, 0, 1), make([]byte, 512)), SenseIllegalRequest, ascInvalidFieldInCDB)
	requireSense(t, f.do(nexusA, ws16(0x20, 0, 1), make([]byte, 512)), SenseIllegalRequest, ascInvalidFieldInCDB)
	want = f.dev.Bytes()

	// NDOB: zeroes without Data-Out.
	res := f.good(nexusA, ws16(0x01, 10, 2), nil)
	assert.Zero(t, res.TransferLen)
	copy(want[10*512:], make([]byte, 1024))
	assert.Equal(t, want, f.dev.Bytes())
}

func TestWriteSameLimit(t *testing.T) {
	f := newFixture(t, func(c *LUConfig) { c.MaxWriteSameBlocks = 8 })
	f.good(nexusA, ws10(0, 0, 8), fill(512, 1))
	requireSense(t, f.do(nexusA, ws10(0, 0, 9), fill(512, 1)), SenseIllegalRequest, ascInvalidFieldInCDB)
	res := f.good(nexusA, inquiryCDB(true, vpdBlockLimits, 64), nil)
	assert.EqualValues(t, 8, be64(res.Data[36:]))
}

func TestWriteSameUnmap(t *testing.T) {
	for _, zeroes := range []bool{true, false} {
		dev := NewMemDev(testBlocks*512, zeroes)
		f := newFixture(t, thin, func(c *LUConfig) { c.Dev = dev })
		f.good(nexusA, rw10c(opWrite10, 0, 0, 8), fill(8*512, 0xff))
		f.good(nexusA, ws10(0x08, 2, 3), make([]byte, 512))
		got := f.dev.Bytes()
		// Either way the blocks read back as the (zero) pattern: discarded
		// when discard zeroes, written otherwise.
		assert.Equal(t, make([]byte, 3*512), got[2*512:5*512])
		assert.Equal(t, fill(2*512, 0xff), got[:2*512])
		assert.Equal(t, fill(3*512, 0xff), got[5*512:8*512])

		// A non-zero pattern with UNMAP is written.
		f.good(nexusA, ws16(0x08, 2, 1), fill(512, 0x42))
		assert.Equal(t, fill(512, 0x42), f.dev.Bytes()[2*512:3*512])
	}
}

func unmapParams(descs ...[2]uint64) []byte {
	p := make([]byte, 8+16*len(descs))
	be16put(p, uint16(len(p)-2))
	be16put(p[2:], uint16(16*len(descs)))
	for i, d := range descs {
		be64put(p[8+16*i:], d[0])
		be32put(p[8+16*i+8:], uint32(d[1]))
	}
	return p
}

func unmapCDB(plen int) []byte {
	c := make([]byte, 10)
	c[0] = opUnmap
	be16put(c[7:], uint16(plen))
	return c
}

func TestUnmap(t *testing.T) {
	f := newFixture(t, thin)
	f.good(nexusA, rw10c(opWrite10, 0, 0, 16), fill(16*512, 'a'))
	p := unmapParams([2]uint64{1, 2}, [2]uint64{10, 3}, [2]uint64{testBlocks, 0})
	res := f.good(nexusA, unmapCDB(len(p)), p)
	assert.EqualValues(t, len(p), res.TransferLen)
	want := fill(16*512, 'a')
	copy(want[512:], make([]byte, 1024))
	copy(want[10*512:], make([]byte, 3*512))
	assert.Equal(t, want, f.dev.Bytes()[:16*512])

	// No descriptors, zero-length list: GOOD.
	f.good(nexusA, unmapCDB(0), nil)
	p = unmapParams()
	f.good(nexusA, unmapCDB(len(p)), p)

	// One bad descriptor among good ones: nothing is unmapped.
	before := f.dev.Bytes()
	p = unmapParams([2]uint64{4, 1}, [2]uint64{testBlocks - 1, 2})
	requireSense(t, f.do(nexusA, unmapCDB(len(p)), p), SenseIllegalRequest, ascLBAOutOfRange)
	assert.Equal(t, before, f.dev.Bytes())

	// Parameter list length errors, ANCHOR, short Data-Out.
	requireSense(t, f.do(nexusA, unmapCDB(4), make([]byte, 4)), SenseIllegalRequest, ascParamListLengthError)
	p = unmapParams([2]uint64{4, 1})
	requireSense(t, f.do(nexusA, unmapCDB(len(p)), p[:20]), SenseIllegalRequest, ascParamListLengthError)
	bad := append([]byte(nil), p...)
	be16put(bad[2:], 32) // more descriptors than the list holds
	requireSense(t, f.do(nexusA, unmapCDB(len(bad)), bad), SenseIllegalRequest, ascParamListLengthError)
	c := unmapCDB(len(p))
	c[1] = 1
	requireSense(t, f.do(nexusA, c, p), SenseIllegalRequest, ascInvalidFieldInCDB)
	assert.Equal(t, before, f.dev.Bytes())

	// Limits.
	g := newFixture(t, thin, func(c *LUConfig) { c.MaxUnmapBlocks = 4; c.MaxUnmapDescriptors = 2 })
	p = unmapParams([2]uint64{0, 3}, [2]uint64{5, 2})
	requireSense(t, g.do(nexusA, unmapCDB(len(p)), p), SenseIllegalRequest, ascInvalidFieldInParamList)
	p = unmapParams([2]uint64{0, 1}, [2]uint64{5, 1}, [2]uint64{9, 1})
	requireSense(t, g.do(nexusA, unmapCDB(len(p)), p), SenseIllegalRequest, ascInvalidFieldInParamList)

	// Fully provisioned: UNMAP does not exist.
	h := newFixture(t)
	requireSense(t, h.do(nexusA, unmapCDB(len(p)), p), SenseIllegalRequest, ascInvalidOpcode)
}

func TestUnmap4K(t *testing.T) {
	f := newFixture(t, thin, bs4k)
	f.good(nexusA, rw10c(opWrite10, 0, 0, 4), fill(4*4096, 'z'))
	p := unmapParams([2]uint64{1, 2})
	f.good(nexusA, unmapCDB(len(p)), p)
	want := fill(4*4096, 'z')
	copy(want[4096:], make([]byte, 8192))
	assert.Equal(t, want, f.dev.Bytes()[:4*4096])
}
