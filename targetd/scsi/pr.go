package scsi

import (
	"maps"
	"slices"
)

// Persistent reservation types (SPC-4 table 207).
const (
	prWriteExclusive    = 0x1
	prExclusiveAccess   = 0x3
	prWriteExclusiveRO  = 0x5
	prExclusiveAccessRO = 0x6
	prWriteExclusiveAR  = 0x7
	prExclusiveAccessAR = 0x8
)

// PERSISTENT RESERVE IN/OUT service actions.
const (
	saReadKeys       = 0x00
	saReadResv       = 0x01
	saReportCaps     = 0x02
	saReadFullStatus = 0x03

	saRegister        = 0x00
	saReserve         = 0x01
	saRelease         = 0x02
	saClear           = 0x03
	saPreempt         = 0x04
	saPreemptAbort    = 0x05
	saRegisterIgnore  = 0x06
	saRegisterAndMove = 0x07
)

// prReservation is the persistent reservation of an LU.
type prReservation struct {
	holder Nexus // meaningless for all-registrants types
	typ    byte
}

func validPRType(t byte) bool {
	switch t {
	case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRO,
		prExclusiveAccessRO, prWriteExclusiveAR, prExclusiveAccessAR:
		return true
	}
	return false
}

func allRegistrants(t byte) bool { return t == prWriteExclusiveAR || t == prExclusiveAccessAR }

// isHolder reports whether n holds the reservation: every registrant does
// for all-registrants types (SPC-4 5.13.10.5).
func (s *luState) isHolder(n Nexus) bool {
	if s.res == nil {
		return false
	}
	if allRegistrants(s.res.typ) {
		_, ok := s.regs[n]
		return ok
	}
	return s.res.holder == n
}

// access classifies commands for the reservation conflict tables.
type access uint8

const (
	accessAllowed access = iota // never conflicts (INQUIRY, PR IN/OUT...)
	accessRead                  // conflicts under exclusive access types
	accessWrite                 // conflicts under every type
)

// accessOf classifies an opcode (SPC-4 table 62, SBC-3 table 13).
func accessOf(op byte) access {
	switch op {
	case opInquiry, opRequestSense, opReportLUNs, opTestUnitReady,
		opReadCapacity10, opServiceActionIn16, opMaintenanceIn,
		opPRIn, opPROut:
		return accessAllowed
	case opRead6, opRead10, opRead12, opRead16, opVerify10, opVerify12,
		opVerify16, opPrefetch10, opPrefetch16, opModeSense6, opModeSense10:
		return accessRead
	case opWrite6, opWrite10, opWrite12, opWrite16, opWriteVerify10,
		opWriteVerify12, opWriteVerify16, opWriteSame10, opWriteSame16,
		opUnmap, opCompareAndWrite, opOrWrite16, opSyncCache10,
		opSyncCache16, opModeSelect6, opModeSelect10, opReserve6,
		opReserve10, opRelease6, opRelease10, opStartStopUnit:
		return accessWrite
	}
	return accessAllowed // unknown opcodes fail as such
}

// prConflict applies the persistent reservation conflict table to a
// command of class a from n; the caller checked s.res != nil.
func prConflict(s *luState, n Nexus, a access) bool {
	if a == accessAllowed || s.isHolder(n) {
		return false
	}
	_, registered := s.regs[n]
	switch s.res.typ {
	case prWriteExclusive:
		return a == accessWrite
	case prExclusiveAccess:
		return true
	case prWriteExclusiveRO, prWriteExclusiveAR:
		return !registered && a == accessWrite
	case prExclusiveAccessRO, prExclusiveAccessAR:
		return !registered
	}
	return false
}

// allowedUnderSPC2 lists what other nexuses may still do while an LU is
// RESERVEd (SPC-2 5.5.1): RELEASE from them is a GOOD no-op.
func allowedUnderSPC2(op byte) bool {
	switch op {
	case opInquiry, opRequestSense, opReportLUNs, opRelease6, opRelease10, opMaintenanceIn:
		return true
	}
	return false
}

// prIn handles PERSISTENT RESERVE IN (SPC-4 6.13).
func (x *exec) prIn() Result {
	cdb := x.cmd.CDB
	alloc := int(be16(cdb[7:]))
	s := x.lu.state.Load()
	var b []byte
	switch cdb[1] & 0x1f {
	case saReadKeys:
		keys := s.sortedRegs()
		b = make([]byte, 8, 8+8*len(keys))
		be32put(b, s.generation)
		be32put(b[4:], uint32(8*len(keys)))
		for _, r := range keys {
			b = be64append(b, r.key)
		}
	case saReadResv:
		b = make([]byte, 8)
		be32put(b, s.generation)
		if s.res != nil {
			be32put(b[4:], 16)
			d := make([]byte, 16)
			if !allRegistrants(s.res.typ) {
				be64put(d, s.regs[s.res.holder])
			}
			d[13] = s.res.typ // SCOPE 0 (LU)
			b = append(b, d...)
		}
	case saReportCaps:
		b = make([]byte, 8)
		be16put(b, 8)
		b[2] = 0x10 // CRH: RESERVE(6/10) yields to persistent reservations
		b[3] = 0x80 // TMV; ALLOW COMMANDS 000b; PTPL_A=0 (no APTPL)
		// Every type: WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX; EX_AC_AR.
		b[4], b[5] = 0x80|0x40|0x20|0x08|0x02, 0x01
	case saReadFullStatus:
		b = x.readFullStatus(s)
	default:
		return invalidCDBField(1, 4)
	}
	b = allocLen(b, alloc)
	return Result{Status: StatusGood, Data: b, TransferLen: uint32(len(b))}
}

type reg struct {
	n   Nexus
	key uint64
}

// sortedRegs returns registrations in a stable order (by initiator port,
// then target port) so that READ KEYS is deterministic.
func (s *luState) sortedRegs() []reg {
	out := make([]reg, 0, len(s.regs))
	for _, n := range slices.SortedFunc(maps.Keys(s.regs), func(a, b Nexus) int {
		if c := compareStr(a.InitiatorPort(), b.InitiatorPort()); c != 0 {
			return c
		}
		return compareStr(a.TargetPort(), b.TargetPort())
	}) {
		out = append(out, reg{n: n, key: s.regs[n]})
	}
	return out
}

func compareStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func be64append(b []byte, v uint64) []byte {
	var t [8]byte
	be64put(t[:], v)
	return append(b, t[:]...)
}

// readFullStatus builds READ FULL STATUS data (SPC-4 6.13.5) with an
// iSCSI TransportID (format 01b: name and ISID) per registration.
func (x *exec) readFullStatus(s *luState) []byte {
	b := make([]byte, 8)
	be32put(b, s.generation)
	for _, r := range s.sortedRegs() {
		d := make([]byte, 24)
		be64put(d, r.key)
		if s.isHolder(r.n) {
			d[12] = 0x01 // R_HOLDER
			d[13] = s.res.typ
		}
		be16put(d[18:], r.n.RelativePortID)
		tid := iscsiTransportID(r.n)
		be32put(d[20:], uint32(len(tid)))
		b = append(b, d...)
		b = append(b, tid...)
	}
	be32put(b[4:], uint32(len(b)-8))
	return b
}

// iscsiTransportID is the TransportID of an iSCSI initiator port (SPC-4
// 7.6.4.6, format 01b): "<name>,i,0x<isid>", null terminated, padded to a
// multiple of four bytes.
func iscsiTransportID(n Nexus) []byte {
	name := n.InitiatorPort()
	l := (len(name) + 1 + 3) &^ 3
	b := make([]byte, 4+l)
	b[0] = 0x40 | 0x05 // FORMAT CODE 01b, PROTOCOL IDENTIFIER iSCSI
	be16put(b[2:], uint16(l))
	copy(b[4:], name)
	return b
}

// prOutParamLen is the length of the basic PR OUT parameter list.
const prOutParamLen = 24

// prOut handles PERSISTENT RESERVE OUT (SPC-4 6.14, 5.13). All service
// actions run under LU.mu on a copy of the state that is published only on
// success.
func (x *exec) prOut() Result {
	cdb := x.cmd.CDB
	sa, scope, typ := cdb[1]&0x1f, cdb[2]>>4, cdb[2]&0x0f
	plen := int(be32(cdb[5:]))
	xfer := uint32(plen)
	switch {
	case sa > saRegisterIgnore:
		// REGISTER AND MOVE needs a TransportID of another port; we have
		// one port per nexus and say no.
		return withXfer(invalidCDBField(1, 4), xfer)
	case plen != prOutParamLen:
		return withXfer(illegalRequest(ascParamListLengthError), xfer)
	case len(x.cmd.Data) < plen:
		return withXfer(illegalRequest(ascParamListLengthError), xfer)
	}
	p := x.cmd.Data[:plen]
	key, saKey := be64(p[0:]), be64(p[8:])
	flags := p[20]
	switch {
	case flags&0x08 != 0: // SPEC_I_PT
		return withXfer(invalidParamField(20), xfer)
	case flags&0x04 != 0: // ALL_TG_PT: we report ATP_C=0
		return withXfer(invalidParamField(20), xfer)
	case flags&0x01 != 0: // APTPL: PTPL_C=0, reservations do not persist power loss
		return withXfer(invalidParamField(20), xfer)
	}
	// SCOPE and TYPE only matter to RESERVE, RELEASE and PREEMPT.
	if sa == saReserve || sa == saRelease || sa == saPreempt || sa == saPreemptAbort {
		if scope != 0 {
			return withXfer(invalidCDBField(2, 7), xfer)
		}
		if !validPRType(typ) {
			return withXfer(invalidCDBField(2, 3), xfer)
		}
	}
	n := x.cmd.Nexus
	if sp := x.lu.state.Load().spc2; sp != nil && *sp != n {
		return withXfer(reservationConflict(), xfer)
	}

	var res Result
	var preempted []Nexus
	x.lu.mutate(func(s *luState) bool {
		var ok bool
		res, preempted, ok = s.prOut(n, sa, typ, key, saKey)
		return ok
	})
	if sa == saPreemptAbort && len(preempted) != 0 {
		// Abort the preempted nexuses' tasks and wait for them, so that no
		// write of a preempted initiator can land after we answer GOOD.
		set := make(map[Nexus]bool, len(preempted))
		for _, p := range preempted {
			set[p] = true
		}
		ms := x.lu.tasks.abortWhere(func(k taskKey) bool { return set[k.nexus] })
		x.lu.tasks.wait(ms, x.ctx.Done())
	}
	return withXfer(res, xfer)
}

// prOut applies a PR OUT service action to s (a private copy) for nexus
// n. It returns the result, the nexuses whose registrations were
// preempted, and whether s changed and must be published.
func (s *luState) prOut(n Nexus, sa, typ byte, key, saKey uint64) (Result, []Nexus, bool) {
	cur, registered := s.regs[n]
	if sa != saRegisterIgnore && registered && key != cur {
		return reservationConflict(), nil, false
	}
	switch sa {
	case saRegister, saRegisterIgnore:
		if sa == saRegister && !registered && key != 0 {
			return reservationConflict(), nil, false
		}
		if saKey == 0 {
			if registered {
				s.unregister(n)
			}
		} else {
			s.regs[n] = saKey
		}
		s.generation++
		return good(), nil, true
	}
	if !registered {
		return reservationConflict(), nil, false
	}
	switch sa {
	case saReserve:
		if s.res != nil {
			if s.isHolder(n) && s.res.typ == typ {
				return good(), nil, false
			}
			return reservationConflict(), nil, false
		}
		s.res = &prReservation{holder: n, typ: typ}
		return good(), nil, true

	case saRelease:
		if s.res == nil || !s.isHolder(n) {
			return good(), nil, false
		}
		if s.res.typ != typ {
			return illegalRequest(ascInvalidReleaseOfPR), nil, false
		}
		s.releaseReservation(&n)
		return good(), nil, true

	case saClear:
		for r := range s.regs {
			if r != n {
				s.addUA(r, ascReservationsPreempted)
			}
		}
		s.regs = map[Nexus]uint64{}
		s.res = nil
		s.generation++
		return good(), nil, true

	case saPreempt, saPreemptAbort:
		return s.preempt(n, typ, saKey)
	}
	return invalidCDBField(1, 4), nil, false
}

// unregister removes n's registration; a reservation held by n alone goes
// with it, and the last registrant of an all-registrants reservation
// takes the reservation away (SPC-4 5.13.11.2.3).
func (s *luState) unregister(n Nexus) {
	holder := s.isHolder(n)
	delete(s.regs, n)
	if s.res == nil || !holder {
		return
	}
	if allRegistrants(s.res.typ) {
		if len(s.regs) == 0 {
			s.res = nil
		}
		return
	}
	s.releaseReservation(&n)
}

// releaseReservation drops the reservation; registrants-only and
// all-registrants reservations tell the other registrants with
// RESERVATIONS RELEASED (SPC-4 5.13.11.2.2).
func (s *luState) releaseReservation(by *Nexus) {
	typ := s.res.typ
	s.res = nil
	if typ == prWriteExclusive || typ == prExclusiveAccess {
		return
	}
	for r := range s.regs {
		if r != *by {
			s.addUA(r, ascReservationsReleased)
		}
	}
}

// preempt implements PREEMPT and PREEMPT AND ABORT (SPC-4 5.13.11.2.4).
// The issuer's own registration is never removed.
func (s *luState) preempt(n Nexus, typ byte, saKey uint64) (Result, []Nexus, bool) {
	removeKey := func(k uint64) []Nexus {
		var out []Nexus
		for r, rk := range s.regs {
			if rk == k && r != n {
				out = append(out, r)
			}
		}
		for _, r := range out {
			delete(s.regs, r)
			s.addUA(r, ascRegistrationsPreempted)
		}
		return out
	}
	switch {
	case s.res == nil:
		if saKey == 0 {
			return invalidParamField(8), nil, false
		}
		out := removeKey(saKey)
		if len(out) == 0 {
			return reservationConflict(), nil, false
		}
		s.generation++
		return good(), out, true

	case allRegistrants(s.res.typ):
		if saKey != 0 {
			out := removeKey(saKey)
			if len(out) == 0 {
				return reservationConflict(), nil, false
			}
			s.generation++
			return good(), out, true
		}
		// SA key 0 preempts every other registrant and the reservation,
		// which becomes the issuer's with the new type.
		var out []Nexus
		for r := range s.regs {
			if r != n {
				out = append(out, r)
			}
		}
		for _, r := range out {
			delete(s.regs, r)
			s.addUA(r, ascRegistrationsPreempted)
		}
		s.res = &prReservation{holder: n, typ: typ}
		s.generation++
		return good(), out, true

	case s.regs[s.res.holder] == saKey:
		// Preempting the holder: its reservation passes to the issuer.
		oldType := s.res.typ
		out := removeKey(saKey)
		s.res = &prReservation{holder: n, typ: typ}
		if oldType != typ {
			for r := range s.regs {
				if r != n {
					s.addUA(r, ascReservationsReleased)
				}
			}
		}
		s.generation++
		return good(), out, true

	default:
		if saKey == 0 {
			return invalidParamField(8), nil, false
		}
		out := removeKey(saKey)
		if len(out) == 0 {
			return reservationConflict(), nil, false
		}
		s.generation++
		return good(), out, true
	}
}

// reserve handles RESERVE(6) and RESERVE(10) (SPC-2 7.21/7.22).
func (x *exec) reserve() Result {
	cdb := x.cmd.CDB
	if cdb[0] == opReserve10 && cdb[1]&0x03 != 0 {
		return invalidCDBField(1, 1) // third-party reservations
	}
	n := x.cmd.Nexus
	var res Result
	x.lu.mutate(func(s *luState) bool {
		// CRH=1 (SPC-4 5.13.3): a persistent reservation wins.
		if s.res != nil {
			if s.isHolder(n) {
				res = good()
			} else {
				res = reservationConflict()
			}
			return false
		}
		if s.spc2 != nil {
			if *s.spc2 == n {
				res = good()
			} else {
				res = reservationConflict()
			}
			return false
		}
		s.spc2 = &n
		res = good()
		return true
	})
	return res
}

// release handles RELEASE(6) and RELEASE(10): releasing a reservation one
// does not hold is a GOOD no-op.
func (x *exec) release() Result {
	n := x.cmd.Nexus
	var res Result
	x.lu.mutate(func(s *luState) bool {
		res = good()
		if s.res != nil && !s.isHolder(n) {
			res = reservationConflict()
			return false
		}
		if s.spc2 != nil && *s.spc2 == n {
			s.spc2 = nil
			return true
		}
		return false
	})
	return res
}
