package scsi

import (
	"fmt"
	"math"
)

// saGetLBAStatus is GET LBA STATUS, a SERVICE ACTION IN(16) command.
const saGetLBAStatus = 0x12

// maxLBAStatusDescs bounds the LBA status descriptors of one GET LBA
// STATUS, and with them the device lookups one command makes (at most two
// lseeks each on a file); the initiator asks again from where we stopped.
const maxLBAStatusDescs = 64

// lbaDeallocated is the PROVISIONING STATUS of a deallocated extent; 0 is
// "mapped or unknown".
const lbaDeallocated = 0x1

// getLBAStatus handles GET LBA STATUS (SBC-4 5.8): from the starting LBA
// on, extents of mapped and deallocated blocks as the BlockDev's
// BlockMapper sees them, as many as the allocation length holds (up to
// maxLBAStatusDescs), the first starting exactly at the starting LBA.
func (x *exec) getLBAStatus() Result {
	cdb := x.cmd.CDB
	start := be64(cdb[2:])
	alloc := int(be32(cdb[10:]))
	if cdb[14] != 0 {
		// Reserved in SBC-3; later SBC-4 revisions put REPORT TYPE
		// here, which we do not offer: answering "all LBAs" to a request
		// for only some would mislead the initiator.
		return invalidCDBField(14, -1)
	}
	nb := x.lu.numBlocks()
	if start >= nb {
		return lbaOutOfRange()
	}
	want := min(max((alloc-8)/16, 1), maxLBAStatusDescs)
	b := make([]byte, 8, 8+16*want)
	for lba := start; lba < nb && len(b) < cap(b); {
		if x.stopped() {
			return Result{}
		}
		mapped, blocks, err := x.lu.lbaExtent(lba, nb)
		if err != nil {
			return checkCondition(SenseHardwareError, ascInternalTargetFailure)
		}
		var d [16]byte
		be64put(d[:], lba)
		be32put(d[8:], uint32(blocks))
		if !mapped {
			d[12] = lbaDeallocated
		}
		b = append(b, d[:]...)
		lba += blocks
	}
	be32put(b, uint32(len(b)-4))
	b = allocLen(b, alloc)
	return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
}

// lbaExtent reports the provisioning state of block lba and how many
// blocks from it on share it (1 to min(nb-lba, 2^32-1), what one
// descriptor can hold). A block is deallocated only when all of it is: a
// device whose holes do not fall on block boundaries has the block that
// straddles one reported mapped, since part of it has storage.
func (lu *LU) lbaExtent(lba, nb uint64) (mapped bool, blocks uint64, err error) {
	rest := min(nb-lba, math.MaxUint32)
	if lu.mapper == nil || !lu.cfg.ThinProvisioned {
		return true, rest, nil
	}
	limit := int64(rest << lu.shift)
	m, n, err := lu.mapper.Mapped(int64(lba<<lu.shift), limit)
	if err != nil {
		return false, 0, fmt.Errorf("block status at LBA %d: %w", lba, err)
	}
	if n < 1 || n > limit {
		return false, 0, fmt.Errorf("block status at LBA %d: the device reported %d bytes of %d", lba, n, limit)
	}
	bs := int64(lu.bs)
	if m {
		return true, uint64((n + bs - 1) / bs), nil
	}
	if whole := uint64(n / bs); whole > 0 {
		return false, whole, nil
	}
	return true, 1, nil // the hole ends inside this block
}
