package scsi

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadWriteRoundTrip(t *testing.T) {
	for _, bsMod := range []func(*LUConfig){func(*LUConfig) {}, bs4k} {
		f := newFixture(t, bsMod)
		bs := int(f.lu.BlockSize())
		cases := []struct {
			name      string
			write, rd func(lba uint32, n int) []byte
		}{
			{"6", func(l uint32, n int) []byte { return rw6(opWrite6, l, byte(n)) }, func(l uint32, n int) []byte { return rw6(opRead6, l, byte(n)) }},
			{"10", func(l uint32, n int) []byte { return rw10c(opWrite10, 0, l, uint16(n)) }, func(l uint32, n int) []byte { return rw10c(opRead10, 0, l, uint16(n)) }},
			{"12", func(l uint32, n int) []byte { return rw12c(opWrite12, 0, l, uint32(n)) }, func(l uint32, n int) []byte { return rw12c(opRead12, 0, l, uint32(n)) }},
			{"16", func(l uint32, n int) []byte { return rw16c(opWrite16, 0, uint64(l), uint32(n)) }, func(l uint32, n int) []byte { return rw16c(opRead16, 0, uint64(l), uint32(n)) }},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				lba := uint32(10 + 20*i)
				data := fill(3*bs, byte('a'+i))
				res := f.good(nexusA, c.write(lba, 3), data)
				assert.EqualValues(t, 3*bs, res.TransferLen)
				res = f.good(nexusA, c.rd(lba, 3), nil)
				assert.Equal(t, data, res.Data)
				assert.EqualValues(t, 3*bs, res.TransferLen)
				f.tgt.Release(&res)
				assert.Nil(t, res.Data)
				assert.Equal(t, data, f.dev.Bytes()[int(lba)*bs:int(lba+3)*bs])
			})
		}
	}
}

func TestRead6ZeroMeans256(t *testing.T) {
	f := newFixture(t)
	res := f.good(nexusA, rw6(opRead6, 0, 0), nil)
	assert.Len(t, res.Data, 256*512)
}

func TestReadWriteErrors(t *testing.T) {
	f := newFixture(t, func(c *LUConfig) { c.MaxTransferBlocks = 64 })
	nb := uint32(testBlocks)

	requireSense(t, f.do(nexusA, rw10c(opRead10, 0, nb, 1), nil), SenseIllegalRequest, ascLBAOutOfRange)
	requireSense(t, f.do(nexusA, rw10c(opRead10, 0, nb-1, 2), nil), SenseIllegalRequest, ascLBAOutOfRange)
	requireSense(t, f.do(nexusA, rw16c(opRead16, 0, 1<<63, 1), nil), SenseIllegalRequest, ascLBAOutOfRange)
	requireSense(t, f.do(nexusA, rw16c(opRead16, 0, ^uint64(0), 1), nil), SenseIllegalRequest, ascLBAOutOfRange)
	requireSense(t, f.do(nexusA, rw10c(opRead10, 0, nb+1, 0), nil), SenseIllegalRequest, ascLBAOutOfRange)
	requireSense(t, f.do(nexusA, rw6(opRead6, nb, 1), nil), SenseIllegalRequest, ascLBAOutOfRange)

	// Zero blocks inside the LU is not an error and moves nothing.
	res := f.good(nexusA, rw10c(opRead10, 0, 0, 0), nil)
	assert.Empty(t, res.Data)
	f.good(nexusA, rw10c(opWrite10, 0, 5, 0), nil)

	// Transfer over MaxTransferBlocks: INVALID FIELD IN CDB at the length.
	res = f.do(nexusA, rw10c(opRead10, 0, 0, 65), nil)
	requireSense(t, res, SenseIllegalRequest, ascInvalidFieldInCDB)
	assert.Equal(t, []byte{0xc0, 0, 7}, res.Sense[15:18], "field pointer to byte 7")
	requireSense(t, f.do(nexusA, rw10c(opWrite10, 0, 0, 65), make([]byte, 65*512)), SenseIllegalRequest, ascInvalidFieldInCDB)

	// RDPROTECT/WRPROTECT without protection information.
	for p := byte(1); p < 8; p++ {
		requireSense(t, f.do(nexusA, rw10c(opRead10, p<<5, 0, 1), nil), SenseIllegalRequest, ascInvalidFieldInCDB)
		requireSense(t, f.do(nexusA, rw16c(opWrite16, p<<5, 0, 1), make([]byte, 512)), SenseIllegalRequest, ascInvalidFieldInCDB)
		requireSense(t, f.do(nexusA, rw10c(opVerify10, p<<5, 0, 1), nil), SenseIllegalRequest, ascInvalidFieldInCDB)
	}
	assert.Equal(t, make([]byte, testBlocks*512), f.dev.Bytes(), "nothing written")

	// Unknown opcode.
	res = f.do(nexusA, []byte{0xc5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil)
	requireSense(t, res, SenseIllegalRequest, ascInvalidOpcode)
	res = f.do(nexusA, []byte{0x04, 0, 0, 0, 0, 0}, nil) // FORMAT UNIT
	requireSense(t, res, SenseIllegalRequest, ascInvalidOpcode)
}

func TestDPOAndFUA(t *testing.T) {
	f := newFixture(t)
	data := fill(512, 1)
	for _, op := range []byte{opWrite10, opWrite12, opWrite16} {
		before := f.dev.Syncs()
		var c []byte
		switch op {
		case opWrite10:
			c = rw10c(op, 0x18, 1, 1)
		case opWrite12:
			c = rw12c(op, 0x18, 1, 1)
		default:
			c = rw16c(op, 0x18, 1, 1)
		}
		f.good(nexusA, c, data)
		assert.Equal(t, before+1, f.dev.Syncs(), "FUA write syncs")
	}
	before := f.dev.Syncs()
	f.good(nexusA, rw10c(opWrite10, 0x10, 1, 1), data) // DPO only
	assert.Equal(t, before, f.dev.Syncs(), "write-back write does not sync")
	f.good(nexusA, rw10c(opRead10, 0x18, 1, 1), nil)
	f.good(nexusA, rw16c(opRead16, 0x18, 1, 1), nil)
	f.good(nexusA, rw10c(opSyncCache10, 0, 0, 0), nil)
	assert.Equal(t, before+1, f.dev.Syncs())
	f.good(nexusA, rw16c(opSyncCache16, 0, 1, 5), nil)
	requireSense(t, f.do(nexusA, rw16c(opSyncCache16, 0, testBlocks, 0), nil), SenseIllegalRequest, ascLBAOutOfRange)
	f.good(nexusA, rw10c(opPrefetch10, 0, 0, 8), nil)
	f.good(nexusA, rw16c(opPrefetch16, 0, 0, 0), nil)
	requireSense(t, f.do(nexusA, rw16c(opPrefetch16, 0, testBlocks-1, 2), nil), SenseIllegalRequest, ascLBAOutOfRange)
}

func TestWriteCacheDisabledSyncsEveryWrite(t *testing.T) {
	off := false
	f := newFixture(t, func(c *LUConfig) { c.WriteCacheEnabled = &off })
	f.good(nexusA, rw10c(opWrite10, 0, 0, 1), fill(512, 9))
	assert.EqualValues(t, 1, f.dev.Syncs())
}

func TestReadOnly(t *testing.T) {
	f := newFixture(t, readOnly, thin)
	requireSense(t, f.do(nexusA, rw10c(opWrite10, 0, 0, 1), fill(512, 1)), SenseDataProtect, ascWriteProtected)
	ws := rw10c(opWriteSame10, 0, 0, 1)
	requireSense(t, f.do(nexusA, ws, fill(512, 1)), SenseDataProtect, ascWriteProtected)
	f.good(nexusA, rw10c(opRead10, 0, 0, 1), nil)
	res := f.good(nexusA, []byte{opModeSense6, 0, pageAllPages, 0, 255, 0}, nil)
	assert.Equal(t, byte(0x90), res.Data[2], "WP and DPOFUA")
	assert.Equal(t, make([]byte, testBlocks*512), f.dev.Bytes())
}

// TestDataOutLength covers what libiscsi's iSCSIResiduals suite checks: a
// write never touches bytes outside the CDB's range, never writes a
// partial block, and writes the whole blocks that did arrive.
func TestDataOutLength(t *testing.T) {
	for _, op := range []byte{opWrite10, opWriteVerify10} {
		f := newFixture(t)
		f.good(nexusA, rw10c(opWrite10, 0, 0, 2), fill(1024, 'a'))
		want := f.dev.Bytes()

		// EDTL > TL: only the CDB's block is written.
		res := f.good(nexusA, rw10c(op, 0, 0, 1), fill(10000, 'b'))
		assert.EqualValues(t, 512, res.TransferLen)
		copy(want[0:512], fill(512, 'b'))
		require.Equal(t, want, f.dev.Bytes())

		// EDTL == 0 and EDTL == 200 with a one-block write: nothing written.
		for _, n := range []int{0, 200} {
			res = f.good(nexusA, rw10c(op, 0, 1, 1), fill(n, 'c'))
			assert.EqualValues(t, 512, res.TransferLen)
			require.Equal(t, want, f.dev.Bytes())
		}

		// EDTL one block, TL two blocks: first block written, second kept.
		res = f.good(nexusA, rw10c(op, 0, 0, 2), fill(512, 'd'))
		assert.EqualValues(t, 1024, res.TransferLen)
		copy(want[0:512], fill(512, 'd'))
		require.Equal(t, want, f.dev.Bytes())

		// 1.5 blocks for two: only the whole block.
		res = f.good(nexusA, rw10c(op, 0, 2, 2), fill(768, 'e'))
		copy(want[1024:1536], fill(512, 'e'))
		require.Equal(t, want, f.dev.Bytes())
	}
}

func TestStrictDataOut(t *testing.T) {
	dev := NewMemDev(testBlocks*512, true)
	lu, err := NewLU(LUConfig{Dev: dev})
	require.NoError(t, err)
	tgt := NewTarget(TargetOptions{StrictDataOut: true})
	require.NoError(t, tgt.AddLU(0, lu))
	res, err := tgt.Execute(context.Background(), &Command{Nexus: nexusA, CDB: rw10c(opWrite10, 0, 0, 2), Data: fill(512, 'x')})
	require.NoError(t, err)
	requireSense(t, res, SenseIllegalRequest, ascInvalidFieldInIU)
	assert.EqualValues(t, 1024, res.TransferLen)
	assert.Equal(t, make([]byte, testBlocks*512), dev.Bytes())
}

func TestVerify(t *testing.T) {
	f := newFixture(t)
	data := make([]byte, 4*512)
	for i := range data {
		data[i] = byte(i * 7)
	}
	f.good(nexusA, rw10c(opWrite10, 0, 8, 4), data)
	for _, c := range [][]byte{rw10c(opVerify10, 0x02, 8, 4), rw12c(opVerify12, 0x02, 8, 4), rw16c(opVerify16, 0x12, 8, 4)} {
		f.good(nexusA, c, data)
		bad := append([]byte(nil), data...)
		bad[1000] ^= 0xff
		res := f.do(nexusA, c, bad)
		requireSense(t, res, SenseMiscompare, ascMiscompareDuringVerify)
		assert.Equal(t, byte(0xf0), res.Sense[0], "VALID fixed sense")
		assert.EqualValues(t, 1000, be32(res.Sense[3:]), "INFORMATION: offset of the miscompare")
	}
	// BYTCHK=0: no data, no compare.
	f.good(nexusA, rw10c(opVerify10, 0x10, 8, 4), nil)
	requireSense(t, f.do(nexusA, rw10c(opVerify10, 0, testBlocks, 1), nil), SenseIllegalRequest, ascLBAOutOfRange)
	requireSense(t, f.do(nexusA, rw10c(opVerify10, 0x04, 8, 1), nil), SenseIllegalRequest, ascInvalidFieldInCDB)
	// BYTCHK=11b: one block compared with each.
	f.good(nexusA, rw10c(opWrite10, 0, 20, 3), fill(3*512, 0x5a))
	f.good(nexusA, rw10c(opVerify10, 0x06, 20, 3), fill(512, 0x5a))
	res := f.do(nexusA, rw10c(opVerify10, 0x06, 19, 3), fill(512, 0x5a))
	requireSense(t, res, SenseMiscompare, ascMiscompareDuringVerify)
}

func TestWriteAndVerifySyncs(t *testing.T) {
	f := newFixture(t)
	f.good(nexusA, rw16c(opWriteVerify16, 0x02, 3, 1), fill(512, 3))
	f.good(nexusA, rw12c(opWriteVerify12, 0x10, 4, 1), fill(512, 4))
	assert.EqualValues(t, 2, f.dev.Syncs())
	assert.Equal(t, fill(512, 3), f.dev.Bytes()[3*512:4*512])
}

func TestCompareAndWrite(t *testing.T) {
	f := newFixture(t, func(c *LUConfig) { c.MaxTransferBlocks = 16 })
	f.good(nexusA, rw16c(opWrite16, 0, 100, 2), fill(1024, 'A'))
	data := append(fill(1024, 'A'), fill(1024, 'B')...)
	res := f.good(nexusA, cawCDB(100, 2), data)
	assert.EqualValues(t, 2048, res.TransferLen)
	assert.Equal(t, fill(1024, 'B'), f.dev.Bytes()[100*512:102*512])

	// Miscompare: nothing written, offset of the first differing byte.
	before := f.dev.Bytes()
	data = append(fill(1024, 'B'), fill(1024, 'C')...)
	data[1024-27] = 'X'
	res = f.do(nexusA, cawCDB(100, 2), data)
	requireSense(t, res, SenseMiscompare, ascMiscompareDuringVerify)
	assert.EqualValues(t, 1024-27, be32(res.Sense[3:]))
	assert.Equal(t, before, f.dev.Bytes())

	// Data-Out of the wrong size (libiscsi InvalidDataOutSize): nothing done.
	requireSense(t, f.do(nexusA, cawCDB(100, 1), append(fill(512, 'B'), fill(1536, 'Z')...)), SenseIllegalRequest, ascInvalidFieldInCDB)
	requireSense(t, f.do(nexusA, cawCDB(100, 3), fill(2048, 'B')), SenseIllegalRequest, ascInvalidFieldInCDB)
	// 256 blocks do not fit the one-byte field: 0 with 512 blocks of data.
	requireSense(t, f.do(nexusA, cawCDB(100, 0), fill(2*256*512, 'B')), SenseIllegalRequest, ascInvalidFieldInCDB)
	assert.Equal(t, before, f.dev.Bytes())

	// Over MAXIMUM COMPARE AND WRITE LENGTH, beyond the end, zero blocks.
	requireSense(t, f.do(nexusA, cawCDB(0, 17), make([]byte, 34*512)), SenseIllegalRequest, ascInvalidFieldInCDB)
	requireSense(t, f.do(nexusA, cawCDB(testBlocks-1, 2), make([]byte, 2048)), SenseIllegalRequest, ascLBAOutOfRange)
	f.good(nexusA, cawCDB(0, 0), nil)
	assert.Equal(t, before, f.dev.Bytes())
}

// TestCompareAndWriteAtomic runs COMPARE AND WRITE increments of a
// counter block against plain writers of the same block: with atomic
// CAW, every successful CAW is a distinct increment, and the final value
// is the number of successes (writers only rewrite the current value).
func TestCompareAndWriteAtomic(t *testing.T) {
	f := newFixture(t)
	block := func(v uint64) []byte {
		b := make([]byte, 512)
		for i := 0; i < 512; i += 8 {
			be64put(b[i:], v)
		}
		return b
	}
	f.good(nexusA, rw16c(opWrite16, 0, 7, 1), block(0))
	const workers, rounds = 4, 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	success := 0
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for r := 0; r < rounds; r++ {
				res := f.do(nexusA, rw16c(opRead16, 0, 7, 1), nil)
				cur := be64(res.Data)
				f.tgt.Release(&res)
				res = f.do(nexusA, cawCDB(7, 1), append(block(cur), block(cur+1)...))
				if res.Status == StatusGood {
					mu.Lock()
					success++
					mu.Unlock()
				}
			}
		})
		// A torn write would show as a block mixing two values.
		wg.Go(func() {
			for r := 0; r < rounds; r++ {
				res := f.do(nexusB, rw16c(opRead16, 0, 7, 1), nil)
				ok := bytes.Equal(res.Data, block(be64(res.Data)))
				f.tgt.Release(&res)
				if !ok {
					t.Error("torn block")
					return
				}
			}
		})
	}
	wg.Wait()
	got := f.do(nexusA, rw16c(opRead16, 0, 7, 1), nil)
	assert.Equal(t, block(uint64(success)), got.Data)
	assert.Positive(t, success)
}

func TestOrWrite(t *testing.T) {
	f := newFixture(t)
	f.good(nexusA, rw16c(opWrite16, 0, 5, 1), fill(512, 0x0f))
	f.good(nexusA, rw16c(opOrWrite16, 0, 5, 1), fill(512, 0xf0))
	assert.Equal(t, fill(512, 0xff), f.dev.Bytes()[5*512:6*512])
	requireSense(t, f.do(nexusA, rw16c(opOrWrite16, 0, testBlocks, 1), fill(512, 1)), SenseIllegalRequest, ascLBAOutOfRange)
}

func TestBufPool(t *testing.T) {
	p := NewBufPool()
	b, h := p.Get(4096)
	assert.Len(t, b, 4096)
	assert.Equal(t, 4096, cap(b))
	p.Put(h)
	b, h = p.Get(700)
	assert.Len(t, b, 700)
	assert.Equal(t, 1024, cap(b))
	p.Put(h)
	b, h = p.Get(64 << 20)
	assert.Nil(t, h)
	assert.Len(t, b, 64<<20)
	p.Put(nil)
}
