package scsi

// Software write protection (SPC-4 control mode page, SWP bit).
//
// An initiator may set SWP with MODE SELECT to make the LU refuse every
// command that writes the medium with DATA PROTECT, WRITE PROTECTED, and
// MODE SENSE then reports WP in its header, so that a Linux initiator
// marks the disk read-only on its next revalidation. Like WCE it is not
// saved (MODE SELECT with SP=1 is refused): a targetd restart clears it,
// so it cannot outlive the session that asked for it by more than a
// process. It is what libiscsi's Sanitize.Readonly and
// ModeSense6.Control-SWP need to run at all.
//
// The check sits in the command gate, before the handler decodes the CDB,
// because the handlers' own write-protect checks read LUConfig.ReadOnly
// only: a write under SWP therefore gets DATA PROTECT even where a
// read-only LU would first have answered ILLEGAL REQUEST for a bad field
// (SAM-5 orders neither before the other).

// ctrlSWP is the SWP bit in byte 4 of the control mode page.
const ctrlSWP = 0x08

// setSWP sets the SWP bit and reports whether it changed.
func (lu *LU) setSWP(on bool) bool { return lu.swp.Swap(on) != on }

// writesMedium reports whether op is a command SWP refuses: every command
// the LU implements that writes or deallocates logical blocks (UNMAP only
// where it exists, so that a fully provisioned LU still calls it an
// invalid opcode).
func (lu *LU) writesMedium(op byte) bool {
	switch op {
	case opWrite6, opWrite10, opWrite12, opWrite16,
		opWriteVerify10, opWriteVerify12, opWriteVerify16,
		opCompareAndWrite, opOrWrite16,
		opWriteSame10, opWriteSame16:
		return true
	case opUnmap:
		return lu.cfg.ThinProvisioned
	}
	return false
}
