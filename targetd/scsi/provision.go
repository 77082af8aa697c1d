package scsi

// writeSameChunk bounds the pattern buffer of WRITE SAME: long ranges are
// written in chunks of this size, checking for aborts in between.
const writeSameChunk = 1 << 20

// writeSame handles WRITE SAME(10/16) (SBC-3 5.41, 5.42): the pattern is
// really written, block by block; with the UNMAP bit, a zero pattern on a
// device whose discarded blocks read back as zeroes is discarded instead,
// which reads back identically (SBC-3 4.7.3.4).
func (x *exec) writeSame() Result {
	cdb := x.cmd.CDB
	op := cdb[0]
	var lba uint64
	var blocks uint32
	var lenByte int
	ndob := false
	if op == opWriteSame10 {
		lba, blocks, lenByte = uint64(be32(cdb[2:])), uint32(be16(cdb[7:])), 7
		if cdb[1]&0x06 != 0 {
			return invalidCDBField(1, 2) // obsolete PBDATA/LBDATA
		}
	} else {
		lba, blocks, lenByte = be64(cdb[2:]), be32(cdb[10:]), 10
		ndob = cdb[1]&0x01 != 0
		if cdb[1]&0x06 != 0 {
			return invalidCDBField(1, 2)
		}
	}
	unmap := cdb[1]&0x08 != 0
	xfer := x.lu.bs
	if ndob {
		xfer = 0
	}
	switch {
	case cdb[1]&0xe0 != 0:
		return withXfer(invalidCDBField(1, 7), xfer) // WRPROTECT without PI
	case cdb[1]&0x10 != 0:
		return withXfer(invalidCDBField(1, 4), xfer) // ANCHOR: no ANC_SUP
	case unmap && !x.lu.cfg.ThinProvisioned:
		return withXfer(invalidCDBField(1, 3), xfer)
	}
	nb := x.lu.numBlocks()
	n := uint64(blocks)
	if lba >= nb || n > nb-lba {
		return withXfer(lbaOutOfRange(), xfer)
	}
	// WSNZ=1: a zero block count ("to the last LBA") is refused, so that
	// one command never rewrites a whole volume, and so are counts above
	// MAXIMUM WRITE SAME LENGTH.
	if n == 0 || n > uint64(x.lu.cfg.MaxWriteSameBlocks) {
		return withXfer(invalidCDBField(lenByte, -1), xfer)
	}
	if x.lu.cfg.ReadOnly {
		return withXfer(writeProtected(), xfer)
	}
	var pattern []byte
	if !ndob {
		// Exactly one block of Data-Out: anything else cannot be a pattern.
		if len(x.cmd.Data) != int(x.lu.bs) {
			return withXfer(illegalRequest(ascInvalidFieldInIU), xfer)
		}
		pattern = x.cmd.Data
	}
	zero := ndob || allZero(pattern)
	mask := x.lu.lockStripes(lba, n, false)
	defer x.lu.unlockStripes(mask, false)
	if unmap && zero && x.lu.dev.DiscardZeroes() {
		if x.stopped() {
			return Result{}
		}
		if err := x.lu.dev.Discard(int64(lba)<<x.lu.shift, int64(n)<<x.lu.shift); err != nil {
			return withXfer(x.writeFailed(err), xfer)
		}
		return withXfer(x.syncIf(false), xfer)
	}
	bs := uint64(x.lu.bs)
	chunkBlocks := min(n, writeSameChunk/bs)
	buf, bp := x.pool.Get(int(chunkBlocks * bs))
	defer x.pool.Put(bp)
	if zero {
		clear(buf)
	} else {
		for i := uint64(0); i < chunkBlocks; i++ {
			copy(buf[i*bs:], pattern)
		}
	}
	for done := uint64(0); done < n; {
		if x.stopped() {
			return Result{}
		}
		c := min(n-done, chunkBlocks)
		if _, err := x.lu.dev.WriteAt(buf[:c*bs], int64((lba+done)*bs)); err != nil {
			return withXfer(x.writeFailed(err), xfer)
		}
		done += c
	}
	return withXfer(x.syncIf(false), xfer)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// unmap handles UNMAP (SBC-3 5.28). Every descriptor is validated before
// any block is discarded, so a bad list changes nothing.
func (x *exec) unmap() Result {
	cdb := x.cmd.CDB
	if !x.lu.cfg.ThinProvisioned {
		// LBPU=0: the command is not supported at all (libiscsi's Unmap.VPD
		// checks that UNMAP availability matches the VPD).
		return invalidOpcode()
	}
	plen := int(be16(cdb[7:]))
	if cdb[1]&0x01 != 0 {
		return withXfer(invalidCDBField(1, 0), uint32(plen)) // ANCHOR
	}
	if plen == 0 {
		return good()
	}
	if plen < 8 || len(x.cmd.Data) < plen {
		return withXfer(illegalRequest(ascParamListLengthError), uint32(plen))
	}
	if x.lu.cfg.ReadOnly {
		return withXfer(writeProtected(), uint32(plen))
	}
	p := x.cmd.Data[:plen]
	dl, bdl := int(be16(p[0:])), int(be16(p[2:]))
	if dl < 6 || bdl > plen-8 {
		return withXfer(illegalRequest(ascParamListLengthError), uint32(plen))
	}
	// A trailing partial descriptor is ignored (SBC-3 5.28.2).
	count := bdl / 16
	if count > int(x.lu.cfg.MaxUnmapDescriptors) {
		return withXfer(invalidParamField(2), uint32(plen))
	}
	nb := x.lu.numBlocks()
	var total uint64
	for i := 0; i < count; i++ {
		d := p[8+16*i:]
		lba, n := be64(d), uint64(be32(d[8:]))
		if lba > nb || n > nb-lba {
			return withXfer(lbaOutOfRange(), uint32(plen))
		}
		total += n
		if total > uint64(x.lu.cfg.MaxUnmapBlocks) {
			return withXfer(invalidParamField(8+16*i+8), uint32(plen))
		}
	}
	for i := 0; i < count; i++ {
		d := p[8+16*i:]
		lba, n := be64(d), uint64(be32(d[8:]))
		if n == 0 {
			continue
		}
		if x.stopped() {
			return Result{}
		}
		mask := x.lu.lockStripes(lba, n, false)
		err := x.lu.dev.Discard(int64(lba)<<x.lu.shift, int64(n)<<x.lu.shift)
		x.lu.unlockStripes(mask, false)
		if err != nil {
			return withXfer(x.writeFailed(err), uint32(plen))
		}
	}
	return withXfer(good(), uint32(plen))
}
