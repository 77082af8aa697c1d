package scsi

import (
	"bytes"
	"errors"
	"io"
	"math"
	"syscall"
)

// xferLen converts blocks to a byte count for Result.TransferLen,
// saturating at the field's maximum for absurd CDBs.
func (lu *LU) xferLen(blocks uint64) uint32 {
	if blocks > math.MaxUint32>>lu.shift {
		return math.MaxUint32
	}
	return uint32(blocks << lu.shift)
}

func readError() Result  { return checkCondition(SenseMediumError, ascUnrecoveredReadError) }
func writeError() Result { return checkCondition(SenseMediumError, ascWriteError) }
func writeProtected() Result {
	return checkCondition(SenseDataProtect, ascWriteProtected)
}

// writeFailed is the answer to a write or sync the device failed with
// err. On a thin-provisioned LU a device out of space (the
// filesystem under a sparse file is full, a thin pool is exhausted, a
// quota is reached) is SPACE ALLOCATION FAILED WRITE PROTECT, what SBC-4
// asks of a thin-provisioned LU that cannot allocate (its resource
// exhaustion rules): the initiator and its operator learn "add space",
// where MEDIUM ERROR would claim the medium is bad.
func (x *exec) writeFailed(err error) Result {
	if x.lu.cfg.ThinProvisioned && (errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)) {
		return checkCondition(SenseDataProtect, ascSpaceAllocFailedWP)
	}
	return writeError()
}

// readFull fills p from off; a short read is an error even with io.EOF
// (the device shrank under us).
func readFull(d BlockDev, p []byte, off int64) error {
	n, err := d.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// withXfer sets TransferLen on a result.
func withXfer(res Result, n uint32) Result {
	res.TransferLen = n
	return res
}

// read handles READ(6/10/12/16).
func (x *exec) read() Result {
	cdb := x.cmd.CDB
	op := cdb[0]
	rw := decodeRW(cdb)
	xfer := x.lu.xferLen(uint64(rw.blocks))
	if op != opRead6 && rw.flags&0xe0 != 0 {
		return withXfer(invalidCDBField(1, 7), xfer) // RDPROTECT without PI
	}
	if res, ok := x.capacityCheck(rw.lba, rw.blocks, lenField(op), true); !ok {
		return withXfer(res, xfer)
	}
	if rw.blocks == 0 {
		return good()
	}
	buf, bp := x.pool.Get(int(xfer))
	if x.stopped() {
		x.pool.Put(bp)
		return Result{}
	}
	if err := readFull(x.lu.dev, buf, int64(rw.lba)<<x.lu.shift); err != nil {
		x.pool.Put(bp)
		return withXfer(readError(), xfer)
	}
	return withPooled(Result{Status: StatusGood, Data: buf, TransferLen: xfer}, bp)
}

// dataOut returns the Data-Out bytes a write of want bytes may use: only
// the CDB's bytes when more arrived, only whole blocks when fewer arrived
// (see TargetOptions.StrictDataOut), and ok=false with the result to send
// when the command must not write at all.
func (x *exec) dataOut(want int) (data []byte, res Result, ok bool) {
	data = x.cmd.Data
	if len(data) >= want {
		return data[:want], Result{}, true
	}
	if x.strict {
		return nil, illegalRequest(ascInvalidFieldInIU), false
	}
	return data[:len(data)&^int(x.lu.bs-1)], Result{}, true
}

// write handles WRITE(6/10/12/16) and WRITE AND VERIFY(10/12/16).
func (x *exec) write(verify bool) Result {
	cdb := x.cmd.CDB
	op := cdb[0]
	rw := decodeRW(cdb)
	xfer := x.lu.xferLen(uint64(rw.blocks))
	if op != opWrite6 && rw.flags&0xe0 != 0 {
		return withXfer(invalidCDBField(1, 7), xfer) // WRPROTECT without PI
	}
	if verify && rw.flags&0x04 != 0 {
		return withXfer(invalidCDBField(1, 2), xfer) // BYTCHK 10b/11b reserved
	}
	data, res, done := x.writeData(rw, xfer, lenField(op))
	if done {
		return res
	}
	// FUA is bit 3 of byte 1 in 10/12/16-byte WRITEs; WRITE AND VERIFY
	// verifies from the medium, so it makes the data durable too.
	durable := verify || (op != opWrite6 && rw.flags&0x08 != 0)
	return withXfer(x.writeAt(data, rw.lba, durable), xfer)
}

// writeData runs the checks every Data-Out write shares once its own CDB
// fields are checked: range, write protection, a zero block count, the
// Data-Out itself and an abort. It returns the data to write, or done and
// the result to answer with.
func (x *exec) writeData(rw rwCDB, xfer uint32, lenField int) (data []byte, res Result, done bool) {
	if res, ok := x.capacityCheck(rw.lba, rw.blocks, lenField, true); !ok {
		return nil, withXfer(res, xfer), true
	}
	if x.lu.cfg.ReadOnly {
		return nil, withXfer(writeProtected(), xfer), true
	}
	if rw.blocks == 0 {
		return nil, good(), true
	}
	data, res, ok := x.dataOut(int(xfer))
	if !ok {
		return nil, withXfer(res, xfer), true
	}
	if len(data) == 0 || x.stopped() {
		return nil, withXfer(good(), xfer), true
	}
	return data, Result{}, false
}

// writeAt writes data at lba under the shared stripe locks and makes it
// durable when asked or when the write cache is off.
func (x *exec) writeAt(data []byte, lba uint64, durable bool) Result {
	blocks := uint64(len(data)) >> x.lu.shift
	mask := x.lu.lockStripes(lba, blocks, false)
	_, err := x.lu.dev.WriteAt(data, int64(lba)<<x.lu.shift)
	x.lu.unlockStripes(mask, false)
	if err != nil {
		return x.writeFailed(err)
	}
	return x.syncIf(durable)
}

// syncIf calls Dev.Sync when durable is set or WCE is clear.
func (x *exec) syncIf(durable bool) Result {
	if durable || !x.lu.wce.Load() {
		if err := x.lu.dev.Sync(); err != nil {
			return x.writeFailed(err)
		}
	}
	return good()
}

// verify handles VERIFY(10/12/16) with BYTCHK 00b (check the range), 01b
// (compare the Data-Out with the medium) and 11b (compare one block of
// Data-Out with every block of the range).
func (x *exec) verify() Result {
	cdb := x.cmd.CDB
	op := cdb[0]
	rw := decodeRW(cdb)
	bytchk := rw.flags >> 1 & 3
	var xfer uint32
	switch bytchk {
	case 1:
		xfer = x.lu.xferLen(uint64(rw.blocks))
	case 3:
		xfer = x.lu.bs
	}
	if rw.flags&0xe0 != 0 {
		return withXfer(invalidCDBField(1, 7), xfer) // VRPROTECT without PI
	}
	if bytchk == 2 {
		return withXfer(invalidCDBField(1, 2), xfer)
	}
	if res, ok := x.capacityCheck(rw.lba, rw.blocks, lenField(op), bytchk == 1); !ok {
		return withXfer(res, xfer)
	}
	if rw.blocks == 0 || bytchk == 0 {
		return withXfer(good(), xfer)
	}
	data, res, ok := x.dataOut(int(xfer))
	if !ok {
		return withXfer(res, xfer)
	}
	if bytchk == 3 && len(data) < int(x.lu.bs) {
		return withXfer(good(), xfer) // nothing arrived to compare with
	}
	blocks := uint64(rw.blocks)
	if bytchk == 1 {
		blocks = uint64(len(data)) >> x.lu.shift
	}
	return withXfer(x.compare(rw.lba, blocks, data, bytchk == 3), xfer)
}

// compareChunk bounds the buffer used to compare long ranges.
const compareChunk = 1 << 20

// compare reads blocks at lba and compares them with data (or, with
// repeat, each block with data's first block), reporting MISCOMPARE at the
// first differing byte of the Data-Out.
func (x *exec) compare(lba, blocks uint64, data []byte, repeat bool) Result {
	bs := uint64(x.lu.bs)
	chunkBlocks := uint64(compareChunk) / bs
	buf, bp := x.pool.Get(int(min(blocks, chunkBlocks) * bs))
	defer x.pool.Put(bp)
	for done := uint64(0); done < blocks; {
		if x.stopped() {
			return Result{}
		}
		n := min(blocks-done, chunkBlocks)
		b := buf[:n*bs]
		if err := readFull(x.lu.dev, b, int64((lba+done)*bs)); err != nil {
			return readError()
		}
		for i := uint64(0); i < n; i++ {
			got := b[i*bs : (i+1)*bs]
			var want []byte
			off := (done + i) * bs
			if repeat {
				want, off = data[:bs], 0
			} else {
				want = data[off : off+bs]
			}
			if !bytes.Equal(got, want) {
				return miscompare(int(off) + firstDiff(got, want))
			}
		}
		done += n
	}
	return good()
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// maxCAW is the MAXIMUM COMPARE AND WRITE LENGTH in blocks.
func (lu *LU) maxCAW() uint32 { return min(maxCompareAndWrite, lu.cfg.MaxTransferBlocks) }

// compareAndWrite handles COMPARE AND WRITE (SBC-3 5.2): the compare and
// the write are atomic against every other write to the same blocks, as
// they hold the stripes exclusively.
func (x *exec) compareAndWrite() Result {
	cdb := x.cmd.CDB
	lba := be64(cdb[2:])
	n := uint32(cdb[13])
	xfer := x.lu.xferLen(2 * uint64(n))
	if cdb[1]&0xe0 != 0 {
		return withXfer(invalidCDBField(1, 7), xfer)
	}
	// The Data-Out is the compare data then the write data: any other
	// size means the two halves cannot be told apart, so nothing is done.
	// The NUMBER OF LOGICAL BLOCKS is blamed, which also catches an
	// initiator that put 256 blocks into the one-byte field (libiscsi's
	// CompareAndWrite tests do, expecting INVALID FIELD IN CDB).
	if len(x.cmd.Data) != int(xfer) {
		return withXfer(invalidCDBField(13, -1), xfer)
	}
	if n == 0 {
		return withXfer(good(), xfer) // SBC-3: not an error, nothing done
	}
	if n > x.lu.maxCAW() {
		return withXfer(invalidCDBField(13, -1), xfer)
	}
	if res, ok := x.capacityCheck(lba, n, 13, false); !ok {
		return withXfer(res, xfer)
	}
	if x.lu.cfg.ReadOnly {
		return withXfer(writeProtected(), xfer)
	}
	half := int(xfer / 2)
	verifyData, writeData := x.cmd.Data[:half], x.cmd.Data[half:]
	mask := x.lu.lockStripes(lba, uint64(n), true)
	defer x.lu.unlockStripes(mask, true)
	if res := x.compare(lba, uint64(n), verifyData, false); res.Status != StatusGood {
		return withXfer(res, xfer)
	}
	if x.stopped() {
		return Result{}
	}
	if _, err := x.lu.dev.WriteAt(writeData, int64(lba)<<x.lu.shift); err != nil {
		return withXfer(x.writeFailed(err), xfer)
	}
	return withXfer(x.syncIf(cdb[1]&0x08 != 0), xfer)
}

// orWrite handles ORWRITE(16) (SBC-3 5.9) with the default boolean
// operation, OR: read, OR the Data-Out in, write, atomically like COMPARE
// AND WRITE.
func (x *exec) orWrite() Result {
	cdb := x.cmd.CDB
	rw := decodeRW(cdb)
	xfer := x.lu.xferLen(uint64(rw.blocks))
	if rw.flags&0xe0 != 0 {
		return withXfer(invalidCDBField(1, 7), xfer) // ORPROTECT without PI
	}
	data, res, done := x.writeData(rw, xfer, 10)
	if done {
		return res
	}
	blocks := uint64(len(data)) >> x.lu.shift
	buf, bp := x.pool.Get(len(data))
	defer x.pool.Put(bp)
	mask := x.lu.lockStripes(rw.lba, blocks, true)
	defer x.lu.unlockStripes(mask, true)
	off := int64(rw.lba) << x.lu.shift
	if err := readFull(x.lu.dev, buf, off); err != nil {
		return withXfer(readError(), xfer)
	}
	for i := range buf {
		buf[i] |= data[i]
	}
	if _, err := x.lu.dev.WriteAt(buf, off); err != nil {
		return withXfer(x.writeFailed(err), xfer)
	}
	return withXfer(x.syncIf(rw.flags&0x08 != 0), xfer)
}

// rangeOf decodes the LBA and block count of SYNCHRONIZE CACHE and
// PRE-FETCH (10 and 16).
func rangeOf(cdb []byte) (lba uint64, blocks uint32, lenByte int) {
	if cdbLen(cdb[0]) == 10 {
		return uint64(be32(cdb[2:])), uint32(be16(cdb[7:])), 7
	}
	return be64(cdb[2:]), be32(cdb[10:]), 10
}

// rangeCheck validates a range where 0 blocks means "to the end".
func (x *exec) rangeCheck(lba uint64, blocks uint32, lenByte int) (Result, bool) {
	if blocks == 0 {
		if lba >= x.lu.numBlocks() {
			return lbaOutOfRange(), false
		}
		return Result{}, true
	}
	return x.capacityCheck(lba, blocks, lenByte, false)
}

// syncCache handles SYNCHRONIZE CACHE(10/16). The BlockDev can only sync
// everything, so the range is only validated.
func (x *exec) syncCache() Result {
	lba, blocks, lb := rangeOf(x.cmd.CDB)
	if res, ok := x.rangeCheck(lba, blocks, lb); !ok {
		return res
	}
	if err := x.lu.dev.Sync(); err != nil {
		return x.writeFailed(err)
	}
	return good()
}

// prefetch handles PRE-FETCH(10/16): validated, then nothing to do; GOOD
// (not CONDITION MET) says the cache made no promise.
func (x *exec) prefetch() Result {
	lba, blocks, lb := rangeOf(x.cmd.CDB)
	if res, ok := x.rangeCheck(lba, blocks, lb); !ok {
		return res
	}
	return good()
}
