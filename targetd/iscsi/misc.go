package iscsi

import (
	"bytes"
	"time"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
	"github.com/mhcodi/mhcodi/iscsi/text"
	"github.com/mhcodi/mhcodi/targetd/login"
)

// nopOut answers a NOP-Out: a ping from the initiator gets a NOP-In with
// its data echoed; an answer to our own ping just proves the initiator lives
// (lastRecv was already updated).
func (c *conn) nopOut(h *pdu.Header, have []byte) error {
	n := h.DataLen()
	var data []byte
	if have != nil {
		data = have
	} else if n > 0 {
		data = make([]byte, n)
		if err := c.r.ReadData(data); err != nil {
			return err
		}
	} else if err := c.r.SkipData(); err != nil {
		return err
	}
	if h.ITT() == pdu.Reserved {
		return nil // a reply to our NOP-In ping
	}
	if max := int(c.sess.params.InitiatorMaxRecvDataSegmentLength); len(data) > max {
		data = data[:max]
	}
	var rh pdu.Header
	rh.SetOpcode(pdu.OpNOPIn)
	rh[1] = 0x80
	rh.SetLUNField(h.LUNField())
	rh.SetITT(h.ITT())
	rh.PutU32(pdu.OffTTT, pdu.Reserved)
	return c.send(&rh, data, true)
}

// pinger sends a NOP-In to an initiator that has been quiet for
// NopInterval and drops the connection if nothing at all arrives within
// NopTimeout after that: a dead initiator's session must not hold its
// reservations and exports for ever. It also sends the IdleKick nudge.
func (c *conn) pinger() {
	interval, timeout, kick := c.srv.cfg.NopInterval, c.srv.cfg.NopTimeout, c.srv.cfg.IdleKick
	if timeout <= 0 {
		timeout = interval
	}
	period := time.Second
	if interval > 0 {
		period = min(interval, timeout) / 2
	}
	if kick > 0 {
		period = min(period, kick/2)
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	var pingSent time.Time
	var kickedFor int64 // the lastRecv a nudge was sent for
	for {
		select {
		case <-c.closed:
			return
		case now := <-tick.C:
			lastNano := c.lastRecv.Load()
			last := time.Unix(0, lastNano)
			quiet := now.Sub(last)
			if kick > 0 && quiet >= kick && quiet < time.Second && kickedFor != lastNano {
				kickedFor = lastNano
				if c.nop(pdu.Reserved) != nil {
					return
				}
			}
			if interval <= 0 {
				continue
			}
			switch {
			case !pingSent.IsZero() && last.After(pingSent):
				pingSent = time.Time{}
			case !pingSent.IsZero() && now.Sub(pingSent) > timeout:
				c.log.Warn("initiator did not answer NOP-In, dropping the connection", "waited", now.Sub(pingSent).Round(time.Millisecond))
				c.close("NOP-In ping timed out")
				return
			case pingSent.IsZero() && quiet > interval:
				if c.nop(c.sess.newTTT()) != nil {
					return
				}
				pingSent = now
			}
		}
	}
}

// nop sends an unsolicited NOP-In: with a target transfer tag it is a ping
// the initiator must answer; with the reserved tag it only carries StatSN
// and the CmdSN window.
func (c *conn) nop(ttt uint32) error {
	var h pdu.Header
	h.SetOpcode(pdu.OpNOPIn)
	h[1] = 0x80
	h.SetITT(pdu.Reserved)
	h.PutU32(pdu.OffTTT, ttt)
	return c.send(&h, nil, false)
}

// text answers a Text Request: SendTargets, or renegotiation of the keys
// that may change in full feature phase. Long answers go out in pieces
// (C bit) that the initiator fetches with empty requests.
func (c *conn) text(h *pdu.Header, data []byte) error {
	s := c.sess
	final := h.Final()
	ttt := h.U32(pdu.OffTTT)
	// A continuation: send the next piece of the pending answer.
	if ttt != pdu.Reserved && s.textPending != nil && ttt == s.textTTT {
		return c.sendTextPiece(h)
	}
	s.textIn = append(s.textIn, data...)
	if !final {
		// More request text follows: acknowledge this piece (RFC 7143 §11.10.2).
		var rh pdu.Header
		rh.SetOpcode(pdu.OpTextResp)
		rh.SetITT(h.ITT())
		rh.PutU32(pdu.OffTTT, s.newTTT())
		s.textTTT = rh.U32(pdu.OffTTT)
		return c.send(&rh, nil, true)
	}
	kvs, err := text.ParseText(s.textIn)
	s.textIn = nil
	if err != nil {
		return protoErrf(rejectProtocolError, "text request: %v", err)
	}
	var out []text.KV
	var rest []text.KV
	for _, kv := range kvs {
		if kv.Key == "SendTargets" {
			var all []login.TargetInfo
			if c.srv.cfg.Discover != nil {
				all = c.srv.cfg.Discover(s.initiator)
			}
			if !s.discovery && kv.Value == "" {
				// In a normal session, an empty value means this target.
				var mine []login.TargetInfo
				for _, t := range all {
					if t.Name == s.targetName {
						mine = append(mine, t)
					}
				}
				all = mine
				out = append(out, login.SendTargets(s.targetName, all)...)
				continue
			}
			out = append(out, login.SendTargets(kv.Value, all)...)
			continue
		}
		rest = append(rest, kv)
	}
	if len(rest) > 0 {
		neg, err := login.NegotiateText(&s.params, rest)
		if err != nil {
			return protoErrf(rejectProtocolError, "text negotiation: %v", err)
		}
		out = append(out, neg...)
		c.r.MaxDataLen = int(s.params.TargetMaxRecvDataSegmentLength)
	}
	s.textPending = text.EncodeText(out)
	s.textTTT = pdu.Reserved
	return c.sendTextPiece(h)
}

// sendTextPiece sends as much of the pending text answer as fits.
func (c *conn) sendTextPiece(h *pdu.Header) error {
	s := c.sess
	piece := s.textPending
	max := int(s.params.InitiatorMaxRecvDataSegmentLength)
	var rh pdu.Header
	rh.SetOpcode(pdu.OpTextResp)
	rh.SetITT(h.ITT())
	rh.SetLUNField(h.LUNField())
	if len(piece) > max {
		// Cut after a NUL so no key=value pair is split needlessly.
		cut := bytes.LastIndexByte(piece[:max], 0)
		if cut <= 0 {
			cut = max - 1
		}
		piece = piece[:cut+1]
		s.textPending = s.textPending[cut+1:]
		rh[1] = 0x40 // C: more follows
		s.textTTT = s.newTTT()
		rh.PutU32(pdu.OffTTT, s.textTTT)
	} else {
		s.textPending = nil
		rh[1] = 0x80 // F
		rh.PutU32(pdu.OffTTT, pdu.Reserved)
	}
	return c.send(&rh, piece, true)
}

// Logout reasons and responses (RFC 7143 §11.14, §11.15).
const (
	logoutSession    = 0
	logoutConnection = 1
	logoutRecovery   = 2

	logoutOK            = 0
	logoutCIDNotFound   = 1
	logoutNoRecovery    = 2
	logoutCleanupFailed = 3
)

// logout answers a Logout Request once the session's commands are done.
func (c *conn) logout(h *pdu.Header) error {
	s := c.sess
	reason := h[1] & 0x7f
	resp := byte(logoutOK)
	switch reason {
	case logoutSession, logoutConnection:
		// Writes still waiting for Data-Out will never get it now: drop
		// them. Commands in the SCSI layer finish and answer first.
		c.abortTasks(s.tasksOn(func(t *task) bool { return t.receiving() }), true)
		ctx, cancel := contextWithTimeout(30 * time.Second)
		s.waitIdle(ctx)
		cancel()
	case logoutRecovery:
		resp = logoutNoRecovery
	default:
		return protoErrf(rejectInvalidField, "logout reason %d", reason)
	}
	var rh pdu.Header
	rh.SetOpcode(pdu.OpLogoutResp)
	rh[1] = 0x80
	rh[2] = resp
	rh.SetITT(h.ITT())
	rh[40], rh[41] = 0, 0 // Time2Wait
	rh[42], rh[43] = 0, 0 // Time2Retain
	if err := c.send(&rh, nil, true); err != nil {
		return err
	}
	if resp != logoutOK {
		return nil
	}
	c.close("logout")
	return errLogout
}
