package iscsi

import (
	"github.com/mhcodi/mhcodi/iscsi/pdu"
)

// Task management functions (RFC 7143 §11.5.1) and responses (§11.6.1).
const (
	tmfAbortTask       = 1
	tmfAbortTaskSet    = 2
	tmfClearACA        = 3
	tmfClearTaskSet    = 4
	tmfLUNReset        = 5
	tmfTargetWarmReset = 6
	tmfTargetColdReset = 7
	tmfTaskReassign    = 8
	tmfComplete        = 0
	tmfNoTask          = 1
	tmfNoLUN           = 2
	tmfReassignNotSupp = 4
	tmfNotSupported    = 5
	tmfAuthFailed      = 6
	tmfRejected        = 255
)

// taskMgmt runs a Task Management Function Request. Aborted tasks send no
// status, and the TMF response goes out only after they are gone.
func (c *conn) taskMgmt(h *pdu.Header) error {
	s := c.sess
	fn := h[1] & 0x7f
	lun, lunOK := pdu.DecodeLUN(h.LUNField())
	resp := byte(tmfComplete)
	switch fn {
	case tmfAbortTask:
		ref := h.U32(pdu.OffTTT)
		s.mu.Lock()
		t := s.tasks[ref]
		s.mu.Unlock()
		switch {
		case t != nil && t.abort() >= taskResponding:
			// It completed while this request was on its way: its
			// status is sent (or being sent), so there is nothing left
			// to abort. Answering "function complete" as well would
			// tell the initiator the write did not happen when it did.
			<-t.done
			resp = tmfNoTask
		case t != nil:
			c.abortTasks([]*task{t}, true)
			s.target.AbortTask(t.lun, s.nexus, ref)
		default:
			// RFC 7143 §11.5.1: a task that is not known but whose
			// RefCmdSN is inside the window (never received) and before
			// this request counts as received and done. A command that
			// already completed is below ExpCmdSN, outside the window:
			// "Task does not exist".
			refSN := h.U32(pdu.OffMaxCmdSN)
			exp, max := s.window()
			inWindow := !snLess(refSN, exp) && !snLess(max, refSN)
			if !inWindow || !snLess(refSN, h.U32(pdu.OffCmdSN)) {
				resp = tmfNoTask
			} else {
				s.consumeCmdSN(refSN)
			}
		}
	case tmfAbortTaskSet, tmfClearTaskSet:
		if !lunOK || !s.target.HasLUN(lun) {
			resp = tmfNoLUN
			break
		}
		c.abortTasks(s.tasksOn(func(t *task) bool { return t.lun == lun }), true)
		s.target.AbortTaskSet(lun, s.nexus)
	case tmfLUNReset:
		if !lunOK || !s.target.HasLUN(lun) {
			resp = tmfNoLUN
			break
		}
		for _, other := range c.srv.sessionsOf(s.targetName) {
			other.c.abortTasks(other.tasksOn(func(t *task) bool { return t.lun == lun }), other == s)
		}
		s.target.ResetLU(lun, s.nexus)
	case tmfTargetWarmReset, tmfTargetColdReset:
		for _, other := range c.srv.sessionsOf(s.targetName) {
			other.c.abortTasks(other.tasksOn(func(*task) bool { return true }), other == s)
		}
		s.target.ResetTarget(s.nexus)
	case tmfTaskReassign:
		resp = tmfReassignNotSupp // ErrorRecoveryLevel 0
	default:
		resp = tmfNotSupported
	}
	var rh pdu.Header
	rh.SetOpcode(pdu.OpTaskMgmtResp)
	rh[1] = 0x80
	rh[2] = resp
	rh.SetITT(h.ITT())
	if err := c.send(&rh, nil, true); err != nil {
		return err
	}
	if fn == tmfTargetColdReset && resp == tmfComplete {
		// A cold reset also ends every session of the target, this one
		// included, after its response.
		for _, other := range c.srv.sessionsOf(s.targetName) {
			if other != s {
				go other.close("target cold reset")
			}
		}
		c.close("target cold reset")
	}
	return nil
}

// tasksOn lists the session's tasks that match.
func (s *session) tasksOn(match func(*task) bool) []*task {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*task
	for _, t := range s.tasks {
		if match(t) {
			out = append(out, t)
		}
	}
	return out
}

// abortTasks aborts tasks of c's session and waits until each running one
// is gone (it finishes without status). A task still waiting for Data-Out
// belongs to its connection's reader: own says the caller is that reader,
// which then drops it at once; otherwise the reader drops it when its next
// Data-Out arrives or the session ends.
func (c *conn) abortTasks(ts []*task, own bool) {
	for _, t := range ts {
		switch t.abort() {
		case taskReceiving:
			if own {
				c.finish(t, nil)
			}
		case taskDone:
		default:
			<-t.done
		}
	}
}
