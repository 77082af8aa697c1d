package iscsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// errLogout ends the read loop after a logout response went out.
var errLogout = errors.New("logout")

// protoError is a protocol violation: reject (if reason != 0) and drop.
type protoError struct {
	reason byte
	msg    string
}

func (e *protoError) Error() string { return "protocol error: " + e.msg }

func protoErrf(reason byte, format string, args ...any) error {
	return &protoError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// fullFeature reads and serves PDUs until the connection ends.
func (c *conn) fullFeature() error {
	s := c.sess
	c.r.MaxDataLen = int(s.params.TargetMaxRecvDataSegmentLength)
	c.r.Digests = pdu.Digests{Header: s.params.HeaderDigest, Data: s.params.DataDigest}
	c.sendMu.Lock()
	c.w.Digests = c.r.Digests
	c.sendMu.Unlock()
	if c.srv.cfg.NopInterval > 0 || c.srv.cfg.IdleKick > 0 {
		go c.pinger()
	}
	hdrLen := pdu.BHSLen
	if c.r.Digests.Header {
		hdrLen += 4
	}
	for {
		// What the commands run here queued goes out before the reader
		// waits for the network, together.
		if c.r.Buffered() < hdrLen {
			if err := c.flush(); err != nil {
				return err
			}
			if c.r.Buffered() == 0 {
				c.awaitData()
			}
		}
		var h pdu.Header
		if err := c.r.ReadHeader(&h); err != nil {
			if errors.Is(err, pdu.ErrDataTooLong) {
				c.reject(rejectProtocolError, &h)
			}
			return err
		}
		c.lastRecv.Store(time.Now().UnixNano())
		if n := h.DataLen(); n > 0 && c.r.Buffered() < n {
			// Its data segment is still on its way: the queue need
			// not wait for it.
			if err := c.flush(); err != nil {
				return err
			}
		}
		err := c.dispatch(&h)
		if err == nil {
			continue
		}
		if errors.Is(err, errLogout) {
			return nil
		}
		var pe *protoError
		if errors.As(err, &pe) && pe.reason != 0 {
			c.reject(pe.reason, &h)
		}
		if errors.Is(err, pdu.ErrDataDigest) {
			c.reject(rejectDataDigest, &h)
		}
		return err
	}
}

// ordered reports whether a request takes part in CmdSN ordering.
func ordered(h *pdu.Header) bool {
	switch h.Opcode() {
	case pdu.OpSCSICmd, pdu.OpTaskMgmtReq, pdu.OpTextReq, pdu.OpLogoutReq:
		return true
	case pdu.OpNOPOut:
		return h.ITT() != pdu.Reserved
	}
	return false
}

func (c *conn) dispatch(h *pdu.Header) error {
	s := c.sess
	if ordered(h) {
		switch s.checkCmdSN(h) {
		case ignore:
			c.log.Debug("request outside the CmdSN window ignored", "op", h.Opcode(), "cmdsn", h.U32(pdu.OffCmdSN))
			return c.r.SkipData()
		case hold:
			data := make([]byte, h.DataLen())
			if err := c.r.ReadData(data); err != nil {
				return err
			}
			s.addHeld(h, data)
			return nil
		}
		if err := c.deliver(h, nil); err != nil {
			return err
		}
		for hd := s.nextHeld(); hd != nil; hd = s.nextHeld() {
			if err := c.deliver(&hd.h, hd.data); err != nil {
				return err
			}
		}
		return nil
	}
	switch h.Opcode() {
	case pdu.OpDataOut:
		return c.dataOut(h)
	case pdu.OpNOPOut:
		return c.nopOut(h, nil)
	case pdu.OpSNACKReq:
		c.r.SkipData()
		return c.reject(rejectNotSupported, h) // ErrorRecoveryLevel 0: no SNACK
	case pdu.OpLoginReq:
		c.r.SkipData()
		return protoErrf(rejectProtocolError, "Login Request in full feature phase")
	}
	c.r.SkipData()
	return c.reject(rejectNotSupported, h)
}

// deliver serves a request whose CmdSN turn has come. data is its data
// segment if it was read already (a held request), else nil.
func (c *conn) deliver(h *pdu.Header, data []byte) error {
	if c.sess.discovery {
		switch h.Opcode() {
		case pdu.OpTextReq, pdu.OpLogoutReq, pdu.OpNOPOut:
		default:
			if data == nil {
				c.r.SkipData()
			}
			return protoErrf(rejectProtocolError, "%v in a discovery session", h.Opcode())
		}
	}
	switch h.Opcode() {
	case pdu.OpSCSICmd:
		return c.scsiCommand(h, data)
	case pdu.OpTaskMgmtReq:
		if data == nil {
			if err := c.r.SkipData(); err != nil {
				return err
			}
		}
		return c.taskMgmt(h)
	case pdu.OpTextReq:
		if data == nil {
			data = make([]byte, h.DataLen())
			if err := c.r.ReadData(data); err != nil {
				return err
			}
		}
		return c.text(h, data)
	case pdu.OpLogoutReq:
		if data == nil {
			if err := c.r.SkipData(); err != nil {
				return err
			}
		}
		return c.logout(h)
	case pdu.OpNOPOut:
		return c.nopOut(h, data)
	}
	return fmt.Errorf("deliver: unexpected %v", h.Opcode())
}

// readInto reads the pending data segment into dst, or copies an already
// read one.
func (c *conn) readInto(dst, have []byte) error {
	if have != nil {
		copy(dst, have)
		return nil
	}
	return c.r.ReadData(dst)
}

// scsiCommand starts a SCSI Command.
func (c *conn) scsiCommand(h *pdu.Header, have []byte) error {
	s := c.sess
	imm := h.Immediate()
	if imm {
		s.mu.Lock()
		s.immediate++
		s.mu.Unlock()
	}
	// Until the task exists, every way out gives its slot back.
	owned := false
	defer func() {
		if !owned {
			s.release(imm)
		}
	}()
	skip := func() error {
		if have == nil {
			return c.r.SkipData()
		}
		return nil
	}
	final := h[1]&0x80 != 0
	rd, wr := h[1]&0x40 != 0, h[1]&0x20 != 0
	edtl := h.U32(pdu.OffTTT)
	itt := h.ITT()
	dlen := uint32(h.DataLen())
	p := &s.params

	switch {
	case dlen > 0 && !wr:
		skip()
		return protoErrf(rejectProtocolError, "SCSI Command with %d data bytes but no W bit", dlen)
	case dlen > 0 && !p.ImmediateData:
		skip()
		return protoErrf(rejectProtocolError, "immediate data sent but ImmediateData=No was negotiated")
	case dlen > edtl:
		skip()
		return protoErrf(rejectProtocolError, "%d bytes of immediate data for an expected transfer of %d", dlen, edtl)
	case dlen > p.FirstBurstLength:
		skip()
		return protoErrf(rejectProtocolError, "%d bytes of immediate data exceed FirstBurstLength %d", dlen, p.FirstBurstLength)
	case wr && !final && p.InitialR2T:
		skip()
		return protoErrf(rejectProtocolError, "unsolicited Data-Out announced (F=0) but InitialR2T=Yes")
	case wr && edtl > maxWriteBuffer:
		skip()
		return protoErrf(rejectOutOfResources, "expected transfer of %d bytes exceeds %d", edtl, maxWriteBuffer)
	}
	s.mu.Lock()
	_, busy := s.tasks[itt]
	ended := s.ended
	s.mu.Unlock()
	if busy || itt == pdu.Reserved {
		skip()
		return c.reject(rejectTaskInProgress, h)
	}
	if ended {
		skip()
		return nil
	}
	lun, ok := pdu.DecodeLUN(h.LUNField())
	if !ok {
		lun = 1 << 62 // an address form we do not serve: no such LU
	}
	cdb := make([]byte, 16, 16+len(c.r.AHS()))
	copy(cdb, h.CDB())
	cdb = appendExtendedCDB(cdb, c.r.AHS())

	ctx, cancel := context.WithCancel(context.Background())
	t := &task{
		s: s, itt: itt, lun: lun, edtl: edtl, ctx: ctx, cancel: cancel, immediate: imm,
		done: make(chan struct{}), start: time.Now(),
		cmd: scsi.Command{
			Nexus: s.nexus, LUN: lun, Tag: itt, Attr: scsi.TaskAttr(h[1] & 7),
			CDB: cdb, ExpectedLen: edtl, Read: rd, Write: wr,
		},
	}
	if wr && edtl > 0 {
		bufLen := edtl
		if edtl > inlineMaxBytes {
			// deferredWrite: only the first burst's room now; the
			// whole buffer comes with the write budget, before the
			// first R2T.
			t.deferred = true
			bufLen = max(dlen, 1)
			if !final {
				bufLen = max(bufLen, min(p.FirstBurstLength, edtl))
			}
		}
		t.cmd.Data = c.srv.bufs.get(int(bufLen))
		if err := c.readInto(t.cmd.Data[:dlen], have); err != nil {
			c.srv.bufs.put(t.cmd.Data)
			if errors.Is(err, pdu.ErrDataDigest) {
				// The header was sound, so the stream is in step: reject
				// the PDU and end the command, not the session.
				c.reject(rejectDataDigest, h)
				return c.checkCondition(itt, senseAbortedCommand, 0x47, 0x05) // PROTOCOL SERVICE CRC ERROR
			}
			return err
		}
		t.got = dlen
		if !final {
			t.unsolicited = true
			t.unsolLimit = min(p.FirstBurstLength, edtl)
			t.nextOffset = t.unsolLimit
		} else {
			t.nextOffset = dlen
		}
	} else if err := skip(); err != nil {
		return err
	}
	s.mu.Lock()
	s.tasks[itt] = t
	s.mu.Unlock()
	owned = true
	if t.cmd.Write && t.got < edtl {
		if t.unsolicited && t.got >= t.unsolLimit {
			t.unsolicited = false
		}
		if !t.unsolicited {
			return c.sendR2Ts(t)
		}
		return nil
	}
	c.execute(t)
	return nil
}

// appendExtendedCDB adds the bytes of an Extended CDB AHS (type 1) to cdb.
func appendExtendedCDB(cdb, ahs []byte) []byte {
	for len(ahs) >= 4 {
		n := int(binary.BigEndian.Uint16(ahs[0:2]))
		typ := ahs[2]
		if 3+n > len(ahs) {
			break
		}
		if typ == 1 && n > 1 {
			cdb = append(cdb, ahs[4:3+n]...)
		}
		step := 3 + n
		step += pdu.Padding(step)
		if step > len(ahs) {
			break
		}
		ahs = ahs[step:]
	}
	return cdb
}

// maxWriteBuffer bounds one command's write buffer.
const maxWriteBuffer = 32 << 20

// sendR2Ts asks for the next pieces of a write, up to MaxOutstandingR2T.
// A large write's buffer is allocated here, before its first R2T, once the
// server's write budget has room for it (see deferredWrite); when it has
// not, a goroutine waits for the room and sends the R2Ts, and the reader
// goes on (the data cannot come before the R2T asking for it).
func (c *conn) sendR2Ts(t *task) error {
	p := &c.sess.params
	if len(t.r2ts) >= int(max(p.MaxOutstandingR2T, 1)) || t.nextOffset >= t.edtl {
		return nil
	}
	if t.deferred {
		n, ok := c.srv.writeBudget.tryAcquire(int64(t.edtl))
		if !ok {
			c.awaitWriteBudget(t)
			return nil
		}
		t.grow(c.srv, n)
	}
	return c.sendHeaders(c.buildR2Ts(t, c.sess.newTTT))
}

// buildR2Ts makes the R2Ts t may have outstanding now and records them in
// t; ttt hands out target transfer tags.
func (c *conn) buildR2Ts(t *task, ttt func() uint32) []pdu.Header {
	p := &c.sess.params
	var hs []pdu.Header
	for len(t.r2ts) < int(max(p.MaxOutstandingR2T, 1)) && t.nextOffset < t.edtl {
		n := min(p.MaxBurstLength, t.edtl-t.nextOffset)
		r := &r2t{ttt: ttt(), offset: t.nextOffset, length: n}
		t.r2ts = append(t.r2ts, r)
		t.nextOffset += n
		var h pdu.Header
		h.SetOpcode(pdu.OpR2T)
		h[1] = 0x80
		h.SetLUNField(pdu.EncodeLUN(t.lun))
		h.SetITT(t.itt)
		h.PutU32(pdu.OffTTT, r.ttt)
		h.PutU32(pdu.OffDataSN, t.r2tSN)
		t.r2tSN++
		h.PutU32(pdu.OffOffset, r.offset)
		h.PutU32(pdu.OffResidual, r.length)
		hs = append(hs, h)
	}
	return hs
}

func (c *conn) sendHeaders(hs []pdu.Header) error {
	for i := range hs {
		if err := c.send(&hs[i], nil, false); err != nil {
			return err
		}
	}
	return nil
}

// awaitWriteBudget waits, on a goroutine of its own, until the write
// budget has room for t, then gives t its buffer and sends its first R2Ts.
// Until then only t's own state is touched, under t.mu, which the reader
// takes (receiving) before it uses t for a Data-Out: the R2Ts go out after
// t.mu is released, and no Data-Out can come before them.
func (c *conn) awaitWriteBudget(t *task) {
	s := c.sess
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.running.Add(1)
	s.mu.Unlock()
	t.mu.Lock()
	t.awaiting = true
	t.mu.Unlock()
	go func() {
		defer s.running.Done()
		defer func() {
			t.mu.Lock()
			t.awaiting = false
			t.mu.Unlock()
		}()
		n, err := c.srv.writeBudget.acquire(t.ctx, int64(t.edtl))
		if err != nil {
			return // aborted
		}
		// Tags first: newTTT takes s.mu, which is never taken under t.mu.
		ttts := make([]uint32, max(s.params.MaxOutstandingR2T, 1))
		for i := range ttts {
			ttts[i] = s.newTTT()
		}
		next := 0
		t.mu.Lock()
		if t.aborted || t.state != taskReceiving {
			t.mu.Unlock()
			c.srv.writeBudget.release(n)
			return
		}
		t.grow(c.srv, n)
		hs := c.buildR2Ts(t, func() uint32 { next++; return ttts[next-1] })
		t.awaiting = false
		t.mu.Unlock()
		c.sendHeaders(hs)
	}()
}

// dataOut places a Data-Out PDU's data into its task's buffer.
func (c *conn) dataOut(h *pdu.Header) error {
	s := c.sess
	s.mu.Lock()
	t := s.tasks[h.ITT()]
	s.mu.Unlock()
	if t != nil && t.abortedReceiving() {
		c.finish(t, nil)
		t = nil
	}
	if t == nil || !t.receiving() {
		// A task aborted or ignored (CmdSN outside the window) may still
		// have data in flight: drop it quietly.
		return c.r.SkipData()
	}
	if t.awaitingBudget() {
		// No R2T went out yet, and no unsolicited data is expected.
		return c.dataOutError(t, h, fmt.Sprintf("Data-Out for ITT 0x%x before its R2T", t.itt))
	}
	ttt := h.U32(pdu.OffTTT)
	off := h.U32(pdu.OffOffset)
	n := uint32(h.DataLen())
	dsn := h.U32(pdu.OffDataSN)
	final := h.Final()
	end := uint64(off) + uint64(n)
	if ttt == pdu.Reserved {
		if !t.unsolicited {
			c.r.SkipData()
			return protoErrf(rejectProtocolError, "unsolicited Data-Out for ITT 0x%x that expects none", t.itt)
		}
		if off != t.got || end > uint64(t.unsolLimit) || dsn != t.unsolDataSN {
			return c.dataOutError(t, h, fmt.Sprintf("unsolicited Data-Out out of order: offset %d (want %d), length %d (limit %d), DataSN %d (want %d)",
				off, t.got, n, t.unsolLimit, dsn, t.unsolDataSN))
		}
		if err := c.r.ReadData(t.cmd.Data[off:end]); err != nil {
			return c.dataOutReadError(t, h, err)
		}
		t.got += n
		t.unsolDataSN++
		if final {
			if t.got != t.unsolLimit {
				return c.failTask(t, h, rejectProtocolError, fmt.Sprintf("unsolicited burst ended at %d bytes, FirstBurstLength or EDTL is %d", t.got, t.unsolLimit))
			}
			t.unsolicited = false
		}
	} else {
		var r *r2t
		ri := -1
		for i, x := range t.r2ts {
			if x.ttt == ttt {
				r, ri = x, i
				break
			}
		}
		if r == nil {
			return c.dataOutError(t, h, fmt.Sprintf("Data-Out with unknown target transfer tag 0x%x", ttt))
		}
		if off != r.offset+r.got || end > uint64(r.offset+r.length) || dsn != r.expDataSN {
			return c.dataOutError(t, h, fmt.Sprintf("Data-Out out of order: offset %d (want %d), length %d (burst ends at %d), DataSN %d (want %d)",
				off, r.offset+r.got, n, r.offset+r.length, dsn, r.expDataSN))
		}
		if err := c.r.ReadData(t.cmd.Data[off:end]); err != nil {
			return c.dataOutReadError(t, h, err)
		}
		r.got += n
		r.expDataSN++
		t.got += n
		if final {
			if r.got != r.length {
				return c.failTask(t, h, rejectProtocolError, fmt.Sprintf("Data-Out sequence ended at %d of %d bytes", r.got, r.length))
			}
			t.r2ts = append(t.r2ts[:ri], t.r2ts[ri+1:]...)
		}
	}
	if t.got == t.edtl && len(t.r2ts) == 0 && !t.unsolicited {
		c.execute(t)
		return nil
	}
	if !t.unsolicited {
		return c.sendR2Ts(t)
	}
	return nil
}

// Run to completion: a small read or write whose data is all in runs on
// the reader goroutine that decoded it, and its Data-In and status are
// queued, to go out in one writev with whatever else is ready when the
// reader would next wait for the network. A command handed to a goroutine
// of its own costs a wake-up of another thread and its sleep afterwards (on
// many cores, for every command); one run here costs none. Larger commands,
// everything else and, for a while, every command after one that took long
// (its data was not in the page cache, or the disk was slow) run on their
// own goroutines, so that the reader goes on taking commands.
const (
	inlineMaxBytes = 64 << 10
	// inlineSlow is how long a command run inline may take before the
	// following inlineBackoff commands go to goroutines: a page-cache
	// hit of 64 KiB takes some microseconds, a disk read far longer.
	inlineSlow    = 200 * time.Microsecond
	inlineBackoff = 64
	// flushBytes bounds what the reader queues before it writes anyway.
	flushBytes = 256 << 10
)

// SCSI operation codes the transport looks at to pick where a command runs.
const (
	opRead6, opRead10, opRead12, opRead16     = 0x08, 0x28, 0xa8, 0x88
	opWrite6, opWrite10, opWrite12, opWrite16 = 0x0a, 0x2a, 0xaa, 0x8a
)

// runsInline decides whether the reader runs t itself: a READ or a WRITE
// without FUA (which waits for the disk) of at most inlineMaxBytes.
func (c *conn) runsInline(t *task) bool {
	if t.edtl > inlineMaxBytes || len(t.cmd.CDB) == 0 {
		return false
	}
	switch t.cmd.CDB[0] {
	case opRead6, opRead10, opRead12, opRead16, opWrite6:
	case opWrite10, opWrite12, opWrite16:
		if t.cmd.CDB[1]&0x08 != 0 { // FUA
			return false
		}
	default:
		return false
	}
	if c.inlineOff > 0 {
		c.inlineOff--
		return false
	}
	return true
}

// execute runs a task whose data is all in: on the reader (see runsInline)
// or on a goroutine of its own.
func (c *conn) execute(t *task) {
	s := c.sess
	t.setState(taskRunning)
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		c.finish(t, nil)
		return
	}
	// Counted like a goroutine's: session.end waits for it too.
	s.running.Add(1)
	s.mu.Unlock()
	if c.runsInline(t) {
		c.run(t, true)
		return
	}
	go c.run(t, false)
}

// run executes t and answers it. inline: on the reader, whose queue the
// answer joins (the reader flushes it); else the answer is written at once.
func (c *conn) run(t *task, inline bool) {
	s := c.sess
	defer s.running.Done()
	var res scsi.Result
	var err error
	var held int64
	if !inline && t.cmd.Read && t.edtl > inlineMaxBytes {
		// Its Data-In buffer counts against the server's budget until
		// it was written.
		held, err = c.srv.budget.acquire(t.ctx, int64(t.edtl))
		defer func() { c.srv.budget.release(held) }()
	}
	if err != nil || t.ctx.Err() != nil {
		err = scsi.ErrAborted
	} else {
		began := time.Now()
		res, err = s.target.Execute(t.ctx, &t.cmd)
		if inline && time.Since(began) > inlineSlow {
			c.inlineOff = inlineBackoff
		}
	}
	if err == nil && t.beginResponse() {
		c.respond(t, &res, inline)
	} else {
		err = scsi.ErrAborted
	}
	c.observe(t, &res, err)
	if !inline || err != nil {
		s.target.Release(&res)
	}
	c.finish(t, nil)
}

func (c *conn) observe(t *task, res *scsi.Result, err error) {
	obs := c.srv.cfg.Observe
	if obs == nil {
		return
	}
	n := len(res.Data)
	if t.cmd.Write {
		n = int(min(res.TransferLen, t.got))
	}
	var op byte
	if len(t.cmd.CDB) > 0 {
		op = t.cmd.CDB[0]
	}
	obs(Event{
		Target: c.sess.targetName, Initiator: c.sess.initiator, ISID: c.sess.nexus.ISID,
		LUN: t.lun, Opcode: op, Write: t.cmd.Write, Bytes: n, Status: res.Status,
		Aborted: err != nil, Duration: time.Since(t.start),
	})
}

// finish forgets a task and frees its window slot and buffer.
func (c *conn) finish(t *task, _ error) {
	s := c.sess
	t.setState(taskDone)
	s.mu.Lock()
	if s.tasks[t.itt] == t {
		delete(s.tasks, t.itt)
	}
	s.mu.Unlock()
	s.release(t.immediate)
	c.srv.writeBudget.release(t.takeBudget())
	if t.cmd.Data != nil {
		c.srv.bufs.put(t.cmd.Data)
		t.cmd.Data = nil
	}
	t.cancel()
	close(t.done)
}

// residual computes the residual flags and count: want is what the command
// moved or wanted to move, edtl what the initiator expected.
func residual(edtl, want uint32) (byte, uint32) {
	switch {
	case want > edtl:
		return 0x04, want - edtl // O: overflow
	case want < edtl:
		return 0x02, edtl - want // U: underflow
	}
	return 0, 0
}

// respond sends a finished command's Data-In and status, in one writev.
// queue: leave them queued for the reader's next flush, which also
// releases res.
func (c *conn) respond(t *task, res *scsi.Result, queue bool) {
	// TransferLen is what the CDB moves (or, for allocation-length
	// commands, the data returned); residuals compare it with the EDTL.
	want := res.TransferLen
	if want == 0 {
		want = uint32(len(res.Data))
	}
	if !t.cmd.Read {
		res.Data = res.Data[:0]
	}
	rflags, rcount := residual(t.edtl, want)
	data := res.Data
	if uint32(len(data)) > t.edtl {
		data = data[:t.edtl]
	}
	collapse := res.Status == scsi.StatusGood && len(res.Sense) == 0
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if queue {
		// res's buffer goes back after the flush that writes it.
		c.unsent = append(c.unsent, *res)
	}
	var dataSN uint32
	if len(data) > 0 {
		dataSN = c.queueDataIn(t, data, collapse, res.Status, rflags, rcount)
	}
	if len(data) == 0 || !collapse {
		var h pdu.Header
		h.SetOpcode(pdu.OpSCSIResp)
		h[1] = 0x80 | rflags
		h[2] = 0 // command completed at target
		h[3] = byte(res.Status)
		h.SetITT(t.itt)
		h.PutU32(pdu.OffDataSN, dataSN)
		h.PutU32(pdu.OffResidual, rcount)
		var payload []byte
		if len(res.Sense) > 0 {
			payload = make([]byte, 2+len(res.Sense))
			binary.BigEndian.PutUint16(payload, uint16(len(res.Sense)))
			copy(payload[2:], res.Sense)
		}
		c.queueLocked(&h, payload, true)
	}
	if !queue || c.w.Queued() >= flushBytes {
		c.flushLocked()
	}
}

// queueDataIn queues data as Data-In PDUs no longer than the initiator's
// MaxRecvDataSegmentLength, in sequences no longer than MaxBurstLength;
// with collapse the last PDU carries the status. It returns the DataSN
// after the last PDU. c.sendMu is held.
func (c *conn) queueDataIn(t *task, data []byte, collapse bool, st scsi.Status, rflags byte, rcount uint32) uint32 {
	p := &c.sess.params
	seg := max(p.InitiatorMaxRecvDataSegmentLength, 512)
	burst := max(p.MaxBurstLength, seg)
	var dataSN, off, inBurst uint32
	total := uint32(len(data))
	for off < total {
		n := min(seg, total-off, burst-inBurst)
		last := off+n == total
		var h pdu.Header
		h.SetOpcode(pdu.OpDataIn)
		inBurst += n
		if last || inBurst == burst {
			h[1] |= 0x80 // F: end of this sequence
			inBurst = 0
		}
		status := last && collapse
		if status {
			h[1] |= 0x01 | rflags // S, with residuals
			h[3] = byte(st)
			h.PutU32(pdu.OffResidual, rcount)
		}
		h.SetLUNField(pdu.EncodeLUN(t.lun))
		h.SetITT(t.itt)
		h.PutU32(pdu.OffTTT, pdu.Reserved)
		h.PutU32(pdu.OffDataSN, dataSN)
		h.PutU32(pdu.OffOffset, off)
		c.queueLocked(&h, data[off:off+n], status)
		dataSN++
		off += n
	}
	return dataSN
}

// Sense keys used by the transport itself.
const senseAbortedCommand = 0x0b

// dataOutError handles a Data-Out that breaks the sequence rules (offset,
// DataSN, transfer tag). With ErrorRecoveryLevel 0 the data cannot be asked
// for again, but the header was sound: the PDU is rejected and its command
// ends with CHECK CONDITION, DATA PHASE ERROR; the session goes on.
func (c *conn) dataOutError(t *task, h *pdu.Header, why string) error {
	if err := c.r.SkipData(); err != nil {
		return err
	}
	return c.failTask(t, h, rejectProtocolError, why)
}

// dataOutReadError handles a failed read of a Data-Out's data: a data
// digest error ends the command (PROTOCOL SERVICE CRC ERROR), anything else
// the connection.
func (c *conn) dataOutReadError(t *task, h *pdu.Header, err error) error {
	if !errors.Is(err, pdu.ErrDataDigest) {
		return err
	}
	c.log.Warn("data digest error in Data-Out; command ended", "itt", t.itt)
	c.reject(rejectDataDigest, h)
	c.dropTask(t)
	return c.checkCondition(t.itt, senseAbortedCommand, 0x47, 0x05)
}

// failTask rejects h and ends t with DATA PHASE ERROR.
func (c *conn) failTask(t *task, h *pdu.Header, reason byte, why string) error {
	c.log.Warn("Data-Out sequence error; command ended", "itt", t.itt, "why", why)
	if err := c.reject(reason, h); err != nil {
		return err
	}
	c.dropTask(t)
	return c.checkCondition(t.itt, senseAbortedCommand, 0x4b, 0x00) // DATA PHASE ERROR
}

// dropTask forgets a task that never reached the SCSI layer. Later Data-Out
// for its ITT find nothing and are skipped.
func (c *conn) dropTask(t *task) {
	t.abort()
	c.finish(t, nil)
}

// checkCondition sends a SCSI Response with CHECK CONDITION and fixed
// format sense data for a command the transport itself ends.
func (c *conn) checkCondition(itt uint32, key, asc, ascq byte) error {
	sense := make([]byte, 2+18)
	binary.BigEndian.PutUint16(sense, 18)
	sense[2] = 0x70 // current error, fixed format
	sense[2+2] = key
	sense[2+7] = 10 // additional sense length
	sense[2+12], sense[2+13] = asc, ascq
	var h pdu.Header
	h.SetOpcode(pdu.OpSCSIResp)
	h[1] = 0x80
	h[3] = byte(scsi.StatusCheckCondition)
	h.SetITT(itt)
	return c.send(&h, sense, true)
}
