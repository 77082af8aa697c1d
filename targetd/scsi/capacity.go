package scsi

import "math"

// readCapacity10 handles READ CAPACITY(10) (SBC-3 5.15).
func (x *exec) readCapacity10() Result {
	cdb := x.cmd.CDB
	if cdb[8]&0x01 == 0 && be32(cdb[2:]) != 0 {
		return invalidCDBField(2, -1) // LBA without PMI
	}
	b := make([]byte, 8)
	// 0xFFFFFFFF tells the initiator to use READ CAPACITY(16).
	last := uint32(math.MaxUint32)
	if nb := x.lu.numBlocks(); nb == 0 {
		last = 0
	} else if nb-1 < math.MaxUint32 {
		last = uint32(nb - 1)
	}
	be32put(b, last)
	be32put(b[4:], x.lu.bs)
	return Result{Status: StatusGood, Data: b, TransferLen: 8}
}

// readCapacity16 handles READ CAPACITY(16) (SBC-3 5.16): capacity, the
// physical block exponent and the provisioning bits (LBPME, LBPRZ).
func (x *exec) readCapacity16() Result {
	cdb := x.cmd.CDB
	alloc := int(be32(cdb[10:]))
	b := make([]byte, 32)
	nb := x.lu.numBlocks()
	if nb > 0 {
		be64put(b, nb-1)
	}
	be32put(b[8:], x.lu.bs)
	b[13] = x.lu.lbppbe
	if x.lu.cfg.ThinProvisioned {
		b[14] = 0x80 // LBPME
		if x.lu.dev.DiscardZeroes() {
			b[14] |= 0x40 // LBPRZ
		}
	}
	b = allocLen(b, alloc)
	return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
}
