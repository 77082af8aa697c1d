package scsi

// opInfo describes one supported command for REPORT SUPPORTED OPERATION
// CODES: its CDB usage data is the bitmap of the CDB bits the device
// server looks at (SPC-4 6.35.3).
type opInfo struct {
	op    byte
	sa    uint16
	hasSA bool
	usage []byte
}

// Repeated CDB usage patterns.
var (
	ff4 = []byte{0xff, 0xff, 0xff, 0xff}
	ff8 = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// rw10 etc. build usage data for READ/WRITE-style CDBs: byte 1 flags,
// LBA, group number and transfer length, control byte.
func rw10(op, flags byte) []byte { return cat([]byte{op, flags}, ff4, []byte{0x1f, 0xff, 0xff, 0x00}) }
func rw12(op, flags byte) []byte { return cat([]byte{op, flags}, ff4, ff4, []byte{0x1f, 0x00}) }
func rw16(op, flags byte) []byte { return cat([]byte{op, flags}, ff8, ff4, []byte{0x1f, 0x00}) }

// Byte-1 usage: PROTECT field, DPO, FUA (and FUA_NV) for READ/WRITE;
// PROTECT, DPO, BYTCHK for VERIFY and WRITE AND VERIFY.
const (
	rwFlags     = 0xe0 | 0x10 | 0x08 | 0x02
	verifyFlags = 0xe0 | 0x10 | 0x06
)

// supportedOps lists every command we implement, ascending by opcode and
// service action. UNMAP is dropped for fully provisioned LUs.
var supportedOps = []opInfo{
	{op: opTestUnitReady, usage: []byte{opTestUnitReady, 0, 0, 0, 0, 0}},
	{op: opRequestSense, usage: []byte{opRequestSense, 0x01, 0, 0, 0xff, 0}},
	{op: opRead6, usage: []byte{opRead6, 0x1f, 0xff, 0xff, 0xff, 0}},
	{op: opWrite6, usage: []byte{opWrite6, 0x1f, 0xff, 0xff, 0xff, 0}},
	{op: opInquiry, usage: []byte{opInquiry, 0x01, 0xff, 0xff, 0xff, 0}},
	{op: opModeSelect6, usage: []byte{opModeSelect6, 0x11, 0, 0, 0xff, 0}},
	{op: opReserve6, usage: []byte{opReserve6, 0, 0, 0, 0, 0}},
	{op: opRelease6, usage: []byte{opRelease6, 0, 0, 0, 0, 0}},
	{op: opModeSense6, usage: []byte{opModeSense6, 0x08, 0xff, 0xff, 0xff, 0}},
	{op: opStartStopUnit, usage: []byte{opStartStopUnit, 0x01, 0, 0x0f, 0xf7, 0}},
	{op: opReadCapacity10, usage: []byte{opReadCapacity10, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0}},
	{op: opRead10, usage: rw10(opRead10, rwFlags)},
	{op: opWrite10, usage: rw10(opWrite10, rwFlags)},
	{op: opWriteVerify10, usage: rw10(opWriteVerify10, verifyFlags)},
	{op: opVerify10, usage: rw10(opVerify10, verifyFlags)},
	{op: opPrefetch10, usage: rw10(opPrefetch10, 0x02)},
	{op: opSyncCache10, usage: rw10(opSyncCache10, 0x06)},
	{op: opWriteSame10, usage: rw10(opWriteSame10, 0xe0|0x10|0x08)},
	{op: opUnmap, usage: []byte{opUnmap, 0x01, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0}},
	{op: opModeSelect10, usage: []byte{opModeSelect10, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opReserve10, usage: []byte{opReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	{op: opRelease10, usage: []byte{opRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	{op: opModeSense10, usage: []byte{opModeSense10, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0}},
	{op: opPRIn, sa: saReadKeys, hasSA: true, usage: prInUsage},
	{op: opPRIn, sa: saReadResv, hasSA: true, usage: prInUsage},
	{op: opPRIn, sa: saReportCaps, hasSA: true, usage: prInUsage},
	{op: opPRIn, sa: saReadFullStatus, hasSA: true, usage: prInUsage},
	{op: opPROut, sa: saRegister, hasSA: true, usage: prOutUsage},
	{op: opPROut, sa: saReserve, hasSA: true, usage: prOutUsage},
	{op: opPROut, sa: saRelease, hasSA: true, usage: prOutUsage},
	{op: opPROut, sa: saClear, hasSA: true, usage: prOutUsage},
	{op: opPROut, sa: saPreempt, hasSA: true, usage: prOutUsage},
	{op: opPROut, sa: saPreemptAbort, hasSA: true, usage: prOutUsage},
	{op: opPROut, sa: saRegisterIgnore, hasSA: true, usage: prOutUsage},
	{op: opRead16, usage: rw16(opRead16, rwFlags)},
	{op: opCompareAndWrite, usage: cat([]byte{opCompareAndWrite, rwFlags}, ff8, []byte{0, 0, 0, 0xff, 0x1f, 0})},
	{op: opWrite16, usage: rw16(opWrite16, rwFlags)},
	{op: opOrWrite16, usage: rw16(opOrWrite16, rwFlags)},
	{op: opWriteVerify16, usage: rw16(opWriteVerify16, verifyFlags)},
	{op: opVerify16, usage: rw16(opVerify16, verifyFlags)},
	{op: opPrefetch16, usage: rw16(opPrefetch16, 0x02)},
	{op: opSyncCache16, usage: rw16(opSyncCache16, 0x06)},
	{op: opWriteSame16, usage: rw16(opWriteSame16, 0xe0|0x10|0x08|0x01)},
	{op: opServiceActionIn16, sa: saReadCapacity16, hasSA: true,
		usage: cat([]byte{opServiceActionIn16, 0x1f}, ff8, ff4, []byte{0, 0})},
	{op: opServiceActionIn16, sa: saGetLBAStatus, hasSA: true,
		usage: cat([]byte{opServiceActionIn16, 0x1f}, ff8, ff4, []byte{0, 0})},
	{op: opReportLUNs, usage: []byte{opReportLUNs, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opMaintenanceIn, sa: saReportSupportedOps, hasSA: true,
		usage: []byte{opMaintenanceIn, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0}},
	{op: opRead12, usage: rw12(opRead12, rwFlags)},
	{op: opWrite12, usage: rw12(opWrite12, rwFlags)},
	{op: opWriteVerify12, usage: rw12(opWriteVerify12, verifyFlags)},
	{op: opVerify12, usage: rw12(opVerify12, verifyFlags)},
}

var (
	prInUsage  = []byte{opPRIn, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0}
	prOutUsage = []byte{opPROut, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0}
)

// ops returns the commands this LU supports.
func (lu *LU) ops() []opInfo {
	if lu.cfg.ThinProvisioned {
		return supportedOps
	}
	out := make([]opInfo, 0, len(supportedOps))
	for _, o := range supportedOps {
		if o.op != opUnmap {
			out = append(out, o)
		}
	}
	return out
}

// opHasSA reports whether an opcode is a service-action command.
func opHasSA(op byte) bool {
	switch op {
	case opPRIn, opPROut, opServiceActionIn16, opMaintenanceIn:
		return true
	}
	return false
}

// timeoutsDescriptor is the COMMAND TIMEOUTS DESCRIPTOR (SPC-4 6.35.4):
// no nominal time, 30 s recommended.
func timeoutsDescriptor() []byte {
	b := make([]byte, 12)
	be16put(b, 0x0a)
	be32put(b[8:], 30)
	return b
}

// reportSupportedOpcodes handles REPORT SUPPORTED OPERATION CODES
// (SPC-4 6.35) with all four reporting options and RCTD.
func (x *exec) reportSupportedOpcodes() Result {
	cdb := x.cmd.CDB
	rctd := cdb[2]&0x80 != 0
	options := cdb[2] & 0x07
	reqOp, reqSA := cdb[3], be16(cdb[4:])
	alloc := int(be32(cdb[6:]))
	ops := x.lu.ops()
	var b []byte
	switch options {
	case 0:
		b = make([]byte, 4)
		for _, o := range ops {
			d := make([]byte, 8)
			d[0] = o.op
			be16put(d[2:], o.sa)
			if o.hasSA {
				d[5] |= 0x01 // SERVACTV
			}
			if rctd {
				d[5] |= 0x02 // CTDP
			}
			be16put(d[6:], uint16(len(o.usage)))
			b = append(b, d...)
			if rctd {
				b = append(b, timeoutsDescriptor()...)
			}
		}
		be32put(b, uint32(len(b)-4))
	case 1, 2, 3:
		hasSA := opHasSA(reqOp)
		switch {
		case options == 1 && hasSA, options == 2 && !hasSA:
			return invalidCDBField(2, 2)
		case !hasSA:
			reqSA = 0
		}
		b = make([]byte, 4)
		b[1] = 0x01 // SUPPORT: not supported
		for _, o := range ops {
			if o.op == reqOp && o.sa == reqSA {
				b[1] = 0x03 // SUPPORT: supported as the standard says
				be16put(b[2:], uint16(len(o.usage)))
				b = append(b, o.usage...)
				if rctd {
					b[1] |= 0x80 // CTDP
					b = append(b, timeoutsDescriptor()...)
				}
				break
			}
		}
	default:
		return invalidCDBField(2, 2)
	}
	b = allocLen(b, alloc)
	return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
}
