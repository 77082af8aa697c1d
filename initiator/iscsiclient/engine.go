package iscsiclient

import (
	"encoding/binary"
	"fmt"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
)

// outPDU is a PDU the engine wants sent. Data may alias a command's
// buffer: the caller of Do waits until the command completes, and a
// command completes only once the connection can no longer send it.
type outPDU struct {
	h    pdu.Header
	data []byte
}

// task is one outstanding command.
type task struct {
	itt  uint32
	cmd  Command
	edtl uint32
	// Reads: bytes received and the next DataSN expected.
	got       uint32
	expDataSN uint32
	// Writes: the R2T sequence expected next.
	expR2TSN uint32

	done bool
	err  error
	resp Response
	// ch is closed by Session once the task finished.
	ch chan struct{}
}

// engine is the full feature phase protocol state of one connection:
// command sequence numbers, the target's window, outstanding tasks and
// pings. It does no I/O and reads no clock; Session serialises calls.
type engine struct {
	p   Params
	lun uint64

	cmdSN     uint32 // the next CmdSN to use
	expCmdSN  uint32
	maxCmdSN  uint32
	expStatSN uint32
	nextITT   uint32

	tasks map[uint32]*task
	// pingITT is the ITT of our outstanding NOP-Out ping (0 when none:
	// ITT 0 is never allocated).
	pingITT uint32
	// logoutITT is the ITT of a Logout Request in flight; logoutDone is
	// set when its response arrived.
	logoutITT  uint32
	logoutDone bool
}

func newEngine(p Params, lun uint64, cmdSN, expCmdSN, maxCmdSN, expStatSN uint32) *engine {
	return &engine{p: p, lun: lun, cmdSN: cmdSN, expCmdSN: expCmdSN, maxCmdSN: maxCmdSN,
		expStatSN: expStatSN, nextITT: 1, tasks: map[uint32]*task{}}
}

// snLE reports a <= b in serial number arithmetic (RFC 1982).
func snLE(a, b uint32) bool { return int32(b-a) >= 0 }

// windowOpen reports whether a non-immediate command may be sent now.
func (e *engine) windowOpen() bool { return snLE(e.cmdSN, e.maxCmdSN) }

// allocITT returns a tag no outstanding task, ping or logout uses; never 0
// or the reserved value.
func (e *engine) allocITT() uint32 {
	for {
		itt := e.nextITT
		e.nextITT++
		if itt == 0 || itt == pdu.Reserved || itt == e.pingITT || itt == e.logoutITT {
			continue
		}
		if _, busy := e.tasks[itt]; !busy {
			return itt
		}
	}
}

// start registers cmd and returns the PDUs that carry it: the SCSI
// Command with immediate data and any unsolicited Data-Out. The window
// must be open.
func (e *engine) start(cmd Command) (*task, []outPDU) {
	t := &task{itt: e.allocITT(), cmd: cmd, ch: make(chan struct{})}
	if cmd.Read || cmd.Write {
		t.edtl = uint32(len(cmd.Data))
	}
	e.tasks[t.itt] = t

	var h pdu.Header
	h.SetOpcode(pdu.OpSCSICmd)
	flags := byte(0x01) // ATTR: simple
	if cmd.Read {
		flags |= 0x40
	}
	if cmd.Write {
		flags |= 0x20
	}
	h.SetLUNField(pdu.EncodeLUN(e.lun))
	h.SetITT(t.itt)
	h.PutU32(pdu.OffTTT, t.edtl) // expected data transfer length
	h.PutU32(pdu.OffCmdSN, e.cmdSN)
	h.PutU32(pdu.OffExpSN, e.expStatSN)
	copy(h.CDB(), cmd.CDB[:])
	e.cmdSN++

	var imm []byte
	var unsol []outPDU
	if cmd.Write && t.edtl > 0 {
		seg := e.p.TargetMaxRecvDataSegmentLength
		first := min(e.p.FirstBurstLength, t.edtl)
		sent := uint32(0)
		if e.p.ImmediateData {
			sent = min(first, seg)
			imm = cmd.Data[:sent]
		}
		if !e.p.InitialR2T {
			// Unsolicited Data-Out up to FirstBurstLength.
			var dataSN uint32
			for sent < first {
				n := min(seg, first-sent)
				var d pdu.Header
				d.SetOpcode(pdu.OpDataOut)
				if sent+n == first {
					d[1] = 0x80
				}
				d.SetLUNField(pdu.EncodeLUN(e.lun))
				d.SetITT(t.itt)
				d.PutU32(pdu.OffTTT, pdu.Reserved)
				d.PutU32(pdu.OffExpSN, e.expStatSN)
				d.PutU32(pdu.OffDataSN, dataSN)
				d.PutU32(pdu.OffOffset, sent)
				unsol = append(unsol, outPDU{h: d, data: cmd.Data[sent : sent+n]})
				dataSN++
				sent += n
			}
		}
	}
	if len(unsol) == 0 {
		flags |= 0x80 // F: no unsolicited Data-Out follows
	}
	h[1] = flags
	return t, append([]outPDU{{h: h, data: imm}}, unsol...)
}

// ping returns a NOP-Out ping, or false when one is already outstanding.
// It is immediate, so it needs no window and does not consume a CmdSN.
func (e *engine) ping() (outPDU, bool) {
	if e.pingITT != 0 {
		return outPDU{}, false
	}
	e.pingITT = e.allocITT()
	var h pdu.Header
	h[0] = 0x40 | byte(pdu.OpNOPOut)
	h[1] = 0x80
	h.SetITT(e.pingITT)
	h.PutU32(pdu.OffTTT, pdu.Reserved)
	h.PutU32(pdu.OffCmdSN, e.cmdSN)
	h.PutU32(pdu.OffExpSN, e.expStatSN)
	return outPDU{h: h}, true
}

// logout returns a Logout Request closing the session.
func (e *engine) logout() outPDU {
	e.logoutITT = e.allocITT()
	var h pdu.Header
	h[0] = 0x40 | byte(pdu.OpLogoutReq)
	h[1] = 0x80 // reason 0: close the session
	h.SetITT(e.logoutITT)
	h.PutU32(pdu.OffCmdSN, e.cmdSN)
	h.PutU32(pdu.OffExpSN, e.expStatSN)
	return outPDU{h: h}
}

// received is what handling one PDU produced.
type received struct {
	out      []outPDU
	finished []*task
	// windowMoved says MaxCmdSN advanced, so waiting commands may go.
	windowMoved bool
	// pingAnswered says our NOP-Out ping got its NOP-In.
	pingAnswered bool
}

// handle processes one PDU from the target. An error is a protocol
// violation after which the connection cannot be trusted.
func (e *engine) handle(h *pdu.Header, data []byte) (received, error) {
	var r received
	op := h.Opcode()
	r.windowMoved = e.updateSN(h, op)
	switch op {
	case pdu.OpDataIn:
		return r, e.dataIn(h, data, &r)
	case pdu.OpSCSIResp:
		return r, e.scsiResponse(h, data, &r)
	case pdu.OpR2T:
		return r, e.r2t(h, &r)
	case pdu.OpNOPIn:
		if itt := h.ITT(); itt != pdu.Reserved {
			if itt == e.pingITT {
				e.pingITT = 0
				r.pingAnswered = true
			}
			return r, nil
		}
		if ttt := h.U32(pdu.OffTTT); ttt != pdu.Reserved {
			// The target pings us: answer with its TTT and data.
			var o pdu.Header
			o[0] = 0x40 | byte(pdu.OpNOPOut)
			o[1] = 0x80
			o.SetLUNField(h.LUNField())
			o.SetITT(pdu.Reserved)
			o.PutU32(pdu.OffTTT, ttt)
			o.PutU32(pdu.OffCmdSN, e.cmdSN)
			o.PutU32(pdu.OffExpSN, e.expStatSN)
			r.out = append(r.out, outPDU{h: o, data: append([]byte(nil), data...)})
		}
		return r, nil
	case pdu.OpLogoutResp:
		if h.ITT() == e.logoutITT {
			e.logoutDone = true
		}
		return r, nil
	case pdu.OpReject:
		return r, e.reject(h, data, &r)
	case pdu.OpAsyncMsg, pdu.OpTaskMgmtResp, pdu.OpTextResp:
		// Async events (logout requested, connection drop) end in the
		// connection closing, which is handled as a loss anyway.
		return r, nil
	}
	return r, fmt.Errorf("unexpected %v from the target", op)
}

// carriesStatus reports whether a PDU consumed a StatSN (RFC 7143
// §11.7.4: Data-In only when it carries status; R2T and unsolicited NOP-In
// only report the next one).
func carriesStatus(h *pdu.Header, op pdu.Opcode) bool {
	switch op {
	case pdu.OpDataIn:
		return h[1]&0x01 != 0
	case pdu.OpR2T:
		return false
	case pdu.OpNOPIn:
		return h.ITT() != pdu.Reserved
	}
	return true
}

// updateSN takes ExpStatSN, ExpCmdSN and MaxCmdSN from a target PDU.
func (e *engine) updateSN(h *pdu.Header, op pdu.Opcode) bool {
	if carriesStatus(h, op) {
		if sn := h.U32(pdu.OffCmdSN) + 1; snLE(e.expStatSN, sn) {
			e.expStatSN = sn
		}
	}
	exp, max := h.U32(pdu.OffExpSN), h.U32(pdu.OffMaxCmdSN)
	// §4.2.2.1: a MaxCmdSN below ExpCmdSN-1 is invalid and ignored.
	if !snLE(exp-1, max) {
		return false
	}
	if snLE(e.expCmdSN, exp) {
		e.expCmdSN = exp
	}
	if snLE(e.maxCmdSN, max) && max != e.maxCmdSN {
		e.maxCmdSN = max
		return true
	}
	return false
}

func (e *engine) finish(t *task, err error, r *received) {
	t.done, t.err = true, err
	delete(e.tasks, t.itt)
	r.finished = append(r.finished, t)
}

func (e *engine) dataIn(h *pdu.Header, data []byte, r *received) error {
	t := e.tasks[h.ITT()]
	if t == nil || !t.cmd.Read {
		return fmt.Errorf("Data-In for unknown or non-read ITT 0x%x", h.ITT())
	}
	off := h.U32(pdu.OffOffset)
	if dsn := h.U32(pdu.OffDataSN); dsn != t.expDataSN {
		return fmt.Errorf("Data-In for ITT 0x%x has DataSN %d, expected %d", t.itt, dsn, t.expDataSN)
	}
	end := uint64(off) + uint64(len(data))
	if off != t.got || end > uint64(len(t.cmd.Data)) {
		return fmt.Errorf("Data-In for ITT 0x%x at offset %d+%d, expected offset %d within %d bytes", t.itt, off, len(data), t.got, len(t.cmd.Data))
	}
	copy(t.cmd.Data[off:end], data)
	t.got = uint32(end)
	t.expDataSN++
	if h[1]&0x01 != 0 { // S: status in this PDU
		t.resp = Response{N: int(t.got), Residual: h.U32(pdu.OffResidual)}
		var err error
		if st := h[3]; st != StatusGood {
			err = &SCSIError{Op: t.cmd.Op, Status: st}
		}
		e.finish(t, err, r)
	}
	return nil
}

func (e *engine) scsiResponse(h *pdu.Header, data []byte, r *received) error {
	t := e.tasks[h.ITT()]
	if t == nil {
		return fmt.Errorf("SCSI Response for unknown ITT 0x%x", h.ITT())
	}
	t.resp = Response{N: int(t.got), Residual: h.U32(pdu.OffResidual)}
	var err error
	switch {
	case h[2] != 0:
		err = &ResponseError{Op: t.cmd.Op, Response: h[2]}
	case h[3] != StatusGood:
		se := &SCSIError{Op: t.cmd.Op, Status: h[3]}
		if len(data) >= 2 {
			n := int(binary.BigEndian.Uint16(data))
			if n <= len(data)-2 {
				se.parseSense(append([]byte(nil), data[2:2+n]...))
			}
		}
		err = se
	}
	e.finish(t, err, r)
	return nil
}

// r2t answers an R2T with the Data-Out PDUs of the burst it asks for.
func (e *engine) r2t(h *pdu.Header, r *received) error {
	t := e.tasks[h.ITT()]
	if t == nil || !t.cmd.Write {
		return fmt.Errorf("R2T for unknown or non-write ITT 0x%x", h.ITT())
	}
	if sn := h.U32(pdu.OffDataSN); sn != t.expR2TSN {
		return fmt.Errorf("R2T for ITT 0x%x has R2TSN %d, expected %d", t.itt, sn, t.expR2TSN)
	}
	t.expR2TSN++
	off, n := h.U32(pdu.OffOffset), h.U32(pdu.OffResidual)
	if n == 0 || uint64(off)+uint64(n) > uint64(len(t.cmd.Data)) {
		return fmt.Errorf("R2T for ITT 0x%x asks for %d bytes at %d of %d", t.itt, n, off, len(t.cmd.Data))
	}
	ttt := h.U32(pdu.OffTTT)
	seg := e.p.TargetMaxRecvDataSegmentLength
	var dataSN uint32
	for sent := uint32(0); sent < n; {
		k := min(seg, n-sent)
		var d pdu.Header
		d.SetOpcode(pdu.OpDataOut)
		if sent+k == n {
			d[1] = 0x80
		}
		d.SetLUNField(h.LUNField())
		d.SetITT(t.itt)
		d.PutU32(pdu.OffTTT, ttt)
		d.PutU32(pdu.OffExpSN, e.expStatSN)
		d.PutU32(pdu.OffDataSN, dataSN)
		d.PutU32(pdu.OffOffset, off+sent)
		r.out = append(r.out, outPDU{h: d, data: t.cmd.Data[off+sent : off+sent+k]})
		dataSN++
		sent += k
	}
	return nil
}

// reject ends the command whose header the Reject carries.
func (e *engine) reject(h *pdu.Header, data []byte, r *received) error {
	if len(data) < pdu.BHSLen {
		return fmt.Errorf("target sent a Reject (reason 0x%02x) without the rejected header", h[2])
	}
	var bad pdu.Header
	copy(bad[:], data)
	if t := e.tasks[bad.ITT()]; t != nil && bad.Opcode() == pdu.OpSCSICmd {
		e.finish(t, &RejectError{Op: t.cmd.Op, Reason: h[2]}, r)
		return nil
	}
	if bad.Opcode() == pdu.OpDataOut {
		// The target ends the command itself with CHECK CONDITION.
		return nil
	}
	return fmt.Errorf("target rejected %v (reason 0x%02x)", bad.Opcode(), h[2])
}

// failAll ends every outstanding task with err.
func (e *engine) failAll(err error) []*task {
	var r received
	for _, t := range e.tasks {
		e.finish(t, err, &r)
	}
	return r.finished
}
