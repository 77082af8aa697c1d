package scsi

import (
	"context"
	"testing"
	"time"
)

const fuzzBlocks = 64

// writeRanges decodes, independently of the code under test, the blocks a
// CDB (and, for UNMAP, its parameter list) may change: [from, to) pairs.
func writeRanges(cdb, data []byte) [][2]uint64 {
	if len(cdb) == 0 {
		return nil
	}
	u64 := func(b []byte) uint64 {
		var v uint64
		for _, c := range b {
			v = v<<8 | uint64(c)
		}
		return v
	}
	span := func(lba, n uint64) [][2]uint64 { return [][2]uint64{{lba, lba + n}} }
	need := func(n int) bool { return len(cdb) >= n }
	switch cdb[0] {
	case opWrite6:
		if need(6) {
			n := u64(cdb[4:5])
			if n == 0 {
				n = 256
			}
			return span(u64(cdb[1:4])&0x1fffff, n)
		}
	case opWrite10, opWriteVerify10:
		if need(10) {
			return span(u64(cdb[2:6]), u64(cdb[7:9]))
		}
	case opWrite12, opWriteVerify12:
		if need(12) {
			return span(u64(cdb[2:6]), u64(cdb[6:10]))
		}
	case opWrite16, opWriteVerify16, opOrWrite16:
		if need(16) {
			return span(u64(cdb[2:10]), u64(cdb[10:14]))
		}
	case opCompareAndWrite:
		if need(16) {
			return span(u64(cdb[2:10]), u64(cdb[13:14]))
		}
	case opWriteSame10:
		if need(10) {
			return span(u64(cdb[2:6]), u64(cdb[7:9]))
		}
	case opWriteSame16:
		if need(16) {
			return span(u64(cdb[2:10]), u64(cdb[10:14]))
		}
	case opUnmap:
		if need(10) {
			plen := int(u64(cdb[7:9]))
			var out [][2]uint64
			for off := 8; off+16 <= min(plen, len(data)); off += 16 {
				out = append(out, span(u64(data[off:off+8]), u64(data[off+8:off+12]))...)
			}
			return out
		}
	}
	return nil
}

// FuzzExecute runs arbitrary CDBs and Data-Out against a small LU and
// checks that nothing panics or hangs and that the only blocks that change
// are inside the ranges the CDB (or UNMAP list) names.
func FuzzExecute(f *testing.F) {
	seeds := [][]byte{
		rw10c(opWrite10, 0, 1, 2), rw6(opWrite6, 3, 0), rw12c(opWriteVerify12, 0x02, 5, 1),
		rw16c(opWrite16, 0x08, 60, 4), rw16c(opOrWrite16, 0, 2, 1), cawCDB(4, 1),
		ws10(0, 2, 3), ws16(0x08, 1, 0), ws16(0x01, 7, 2), unmapCDB(24),
		rw10c(opVerify10, 0x02, 0, 1), rw10c(opRead10, 0, 0, 2), inquiryCDB(true, 0x83, 255),
		prOutCDB(saRegisterIgnore, 0), prOutCDB(saReserve, prWriteExclusive),
		[]byte{opModeSelect6, 0x10, 0, 0, 24, 0}, rsocCDB(true, 0, 0, 0, 4096), reportLUNsCDB(64),
		[]byte{opModeSense10, 0x10, pageAllPages, 0, 0, 0, 0, 1, 0, 0}, reserve6(),
	}
	for i, s := range seeds {
		data := fill(1024, byte(i))
		if s[0] == opUnmap {
			data = unmapParams([2]uint64{3, 2})
		}
		f.Add(s, data, i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, cdb, data []byte, thinLU bool) {
		if len(cdb) > 32 {
			cdb = cdb[:32]
		}
		if len(data) > 1<<16 {
			data = data[:1<<16]
		}
		dev := NewMemDev(fuzzBlocks*512, true)
		pattern := make([]byte, fuzzBlocks*512)
		for i := range pattern {
			pattern[i] = byte(i*31 + 7)
		}
		dev.WriteAt(pattern, 0)
		lu, err := NewLU(LUConfig{Dev: dev, ThinProvisioned: thinLU, PhysicalBlockSize: 4096, MaxTransferBlocks: 128})
		if err != nil {
			t.Fatal(err)
		}
		tgt := NewTarget(TargetOptions{})
		if err := tgt.AddLU(0, lu); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := &Command{Nexus: nexusA, CDB: cdb, Data: data, ExpectedLen: uint32(len(data))}
		res, err := tgt.Execute(ctx, cmd)
		if err != nil {
			t.Fatalf("Execute: %v", err)
		}
		if res.Status == StatusGood && len(res.Data) > 0 && res.TransferLen != uint32(len(res.Data)) {
			t.Fatalf("Data-In of %d bytes with TransferLen %d", len(res.Data), res.TransferLen)
		}
		if res.Status == StatusCheckCondition {
			if _, _, _, ok := Sense(res.Sense); !ok {
				t.Fatalf("CHECK CONDITION without sense")
			}
		}
		tgt.Release(&res)
		after := dev.Bytes()
		ranges := writeRanges(cdb, data)
		for i := range after {
			if after[i] == pattern[i] {
				continue
			}
			blk := uint64(i / 512)
			ok := false
			for _, r := range ranges {
				if blk >= r[0] && blk < r[1] {
					ok = true
					break
				}
			}
			if !ok {
				t.Fatalf("byte %d (block %d) changed outside %v by CDB % x", i, blk, ranges, cdb)
			}
		}
	})
}
