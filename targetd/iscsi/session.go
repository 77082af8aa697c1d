package iscsi

import (
	"context"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
	"github.com/mhcodi/mhcodi/targetd/login"
	"github.com/mhcodi/mhcodi/targetd/scsi"
)

// session is one iSCSI session with its single connection.
type session struct {
	srv        *Server
	c          *conn
	tsih       uint16
	isid       [6]byte
	initiator  string
	targetName string
	discovery  bool
	chap       bool
	mutualCHAP bool
	since      time.Time
	params     login.Params
	nexus      scsi.Nexus
	target     SCSITarget

	mu       sync.Mutex
	expCmdSN uint32
	// inflight counts non-immediate SCSI commands received and not yet
	// answered. It rises only together with ExpCmdSN (see admit), so the
	// MaxCmdSN the session advertises never goes backwards: an initiator
	// that used a window it was given is never ignored.
	inflight uint32
	// immediate counts immediate SCSI commands in flight (outside the window).
	immediate uint32
	tasks     map[uint32]*task // by ITT
	pending   map[uint32]*held // non-immediate commands that arrived ahead of ExpCmdSN
	nextTTT   uint32
	running   sync.WaitGroup // command goroutines
	idle      *sync.Cond     // signalled when inflight drops
	ended     bool
	endOnce   sync.Once

	// Text exchange state; only the reader goroutine touches it.
	textIn      []byte
	textPending []byte
	textTTT     uint32
}

// held is a command that came before its turn (CmdSN > ExpCmdSN).
type held struct {
	h    pdu.Header
	data []byte
}

func newSession(c *conn, res login.Result, cmdSN uint32) *session {
	s := &session{
		srv:        c.srv,
		c:          c,
		isid:       res.ISID,
		initiator:  res.InitiatorName,
		targetName: res.TargetName,
		discovery:  res.SessionType == login.SessionDiscovery,
		chap:       res.CHAP,
		mutualCHAP: res.MutualCHAP,
		since:      time.Now(),
		params:     res.Params,
		expCmdSN:   cmdSN,
		tasks:      map[uint32]*task{},
		pending:    map[uint32]*held{},
	}
	s.idle = sync.NewCond(&s.mu)
	s.nexus = scsi.Nexus{
		InitiatorName:  res.InitiatorName,
		ISID:           pdu.ISIDString(res.ISID),
		TargetName:     res.TargetName,
		TPGT:           c.srv.cfg.TPGT,
		RelativePortID: 1,
	}
	return s
}

// window returns ExpCmdSN and MaxCmdSN. MaxCmdSN shrinks as commands pile
// up, so a session never has more than QueueDepth commands in flight (and
// never more than that many write buffers).
func (s *session) window() (uint32, uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expCmdSN, s.expCmdSN + s.freeLocked() - 1
}

// freeLocked is how many more commands the window admits; s.mu is held.
func (s *session) freeLocked() uint32 {
	if s.inflight < s.srv.cfg.QueueDepth {
		return s.srv.cfg.QueueDepth - s.inflight
	}
	return 0
}

// snLess is serial number arithmetic (RFC 1982) on 32-bit CmdSNs.
func snLess(a, b uint32) bool { return a != b && int32(a-b) < 0 }

// checkCmdSN decides what to do with a request's CmdSN: deliver it now,
// hold it until the commands before it arrive, or drop it silently
// (RFC 7143 §4.2.2.1: outside the window it is ignored).
type cmdSNVerdict int

const (
	deliver cmdSNVerdict = iota
	hold
	ignore
)

func (s *session) checkCmdSN(h *pdu.Header) cmdSNVerdict {
	sn := h.U32(pdu.OffCmdSN)
	s.mu.Lock()
	defer s.mu.Unlock()
	free := s.freeLocked()
	max := s.expCmdSN + free - 1
	if h.Immediate() {
		// Immediate commands do not advance ExpCmdSN, and the rule to
		// ignore requests outside the window is for non-immediate ones
		// only (RFC 7143 §4.2.2.1): an initiator may queue an immediate
		// NOP-Out behind commands that were numbered after it.
		return deliver
	}
	switch {
	case sn == s.expCmdSN:
		if free == 0 {
			return ignore
		}
		s.admitLocked(h.Opcode())
		return deliver
	case snLess(sn, s.expCmdSN), snLess(max, sn):
		return ignore
	}
	return hold
}

// admitLocked takes a non-immediate request in: ExpCmdSN moves on and a
// SCSI command takes its window slot in the same step.
func (s *session) admitLocked(op pdu.Opcode) {
	s.expCmdSN++
	if op == pdu.OpSCSICmd {
		s.inflight++
	}
}

// nextHeld returns (and admits) a held command whose turn has come.
func (s *session) nextHeld() *held {
	s.mu.Lock()
	defer s.mu.Unlock()
	hd, ok := s.pending[s.expCmdSN]
	if !ok {
		return nil
	}
	delete(s.pending, s.expCmdSN)
	s.admitLocked(hd.h.Opcode())
	return hd
}

// consumeCmdSN treats a CmdSN that never arrived as received, because a
// task management request aborted it (RFC 7143 §11.5.1): commands held
// behind it may then go ahead.
func (s *session) consumeCmdSN(sn uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sn == s.expCmdSN {
		s.expCmdSN++
	}
}

// release gives back what a SCSI command held: its window slot, or its
// place among the immediate commands.
func (s *session) release(immediate bool) {
	s.mu.Lock()
	if immediate {
		s.immediate--
	} else {
		s.inflight--
	}
	s.idle.Broadcast()
	s.mu.Unlock()
}

func (s *session) addHeld(h *pdu.Header, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := h.U32(pdu.OffCmdSN)
	if _, dup := s.pending[sn]; dup || len(s.pending) >= int(s.srv.cfg.QueueDepth) {
		return
	}
	s.pending[sn] = &held{h: *h, data: append([]byte(nil), data...)}
}

func (s *session) newTTT() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextTTT++
	if s.nextTTT == pdu.Reserved {
		s.nextTTT = 1
	}
	return s.nextTTT
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// waitIdle waits until no command is in flight or ctx ends.
func (s *session) waitIdle(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		s.mu.Lock()
		for s.inflight+s.immediate > 0 && !s.ended {
			s.idle.Wait()
		}
		s.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	}
}

// close ends the session from outside (reinstatement, fencing, shutdown)
// and returns when none of its commands can touch storage any more.
func (s *session) close(reason string) {
	s.c.close(reason)
	s.end()
}

// end tears the session down: aborts its tasks, waits for every command
// goroutine, and tells the SCSI layer the nexus is gone.
func (s *session) end() {
	s.endOnce.Do(func() {
		s.c.close("session ended")
		s.mu.Lock()
		s.ended = true
		for _, t := range s.tasks {
			t.abort()
		}
		s.idle.Broadcast()
		s.mu.Unlock()
		s.running.Wait()
		// Writes that never got all their data give their budget back.
		for _, t := range s.tasksOn(func(*task) bool { return true }) {
			s.srv.writeBudget.release(t.takeBudget())
		}
		if s.target != nil {
			s.target.NexusLost(s.nexus)
		}
		s.srv.unregister(s)
	})
	// A second caller must also not return before the first finished.
	s.running.Wait()
}

func (s *session) info() SessionInfo {
	s.mu.Lock()
	n := len(s.tasks)
	inflight := s.inflight + s.immediate
	s.mu.Unlock()
	exp, max := s.window()
	d := "none"
	switch {
	case s.params.HeaderDigest && s.params.DataDigest:
		d = "header,data"
	case s.params.HeaderDigest:
		d = "header"
	case s.params.DataDigest:
		d = "data"
	}
	return SessionInfo{
		TSIH: s.tsih, Initiator: s.initiator, ISID: s.nexus.ISID, Target: s.targetName,
		Remote: s.c.nc.RemoteAddr().String(), Since: s.since, Discovery: s.discovery,
		CHAP: s.chap, MutualCHAP: s.mutualCHAP, Digests: d, Tasks: n,
		InFlight: inflight, ExpCmdSN: exp, MaxCmdSN: max,
	}
}
