package scsi

// requestSense handles REQUEST SENSE (SPC-4 6.39): it returns, and
// clears, the oldest pending unit attention of the nexus, or NO SENSE.
func (x *exec) requestSense() Result {
	cdb := x.cmd.CDB
	if cdb[1]&0x01 != 0 {
		return invalidCDBField(1, 0) // DESC: descriptor format unsupported
	}
	alloc := int(cdb[4])
	n := x.cmd.Nexus
	s := senseInfo{key: SenseNoSense, asc: ascNone}
	if len(x.lu.state.Load().ua[n]) != 0 {
		x.lu.mutate(func(st *luState) bool {
			code, ok := st.popUA(n)
			if ok {
				s = senseInfo{key: SenseUnitAttention, asc: code}
			}
			return ok
		})
	}
	b := allocLen(s.bytes(), alloc)
	return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
}

// startStopUnit handles START STOP UNIT (SBC-3 5.25). A volume cannot be
// spun down or ejected: the command succeeds, and a stop flushes the
// cache unless NO_FLUSH is set.
func (x *exec) startStopUnit() Result {
	cdb := x.cmd.CDB
	if cdb[4]&0x02 != 0 { // LOEJ
		return invalidCDBField(4, 1)
	}
	start, noFlush := cdb[4]&0x01 != 0, cdb[4]&0x04 != 0
	if !start && !noFlush {
		if err := x.lu.dev.Sync(); err != nil {
			return x.writeFailed(err)
		}
	}
	return good()
}
