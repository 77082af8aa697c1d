package iscsi

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/mhcodi/mhcodi/iscsi/text"
	"github.com/mhcodi/mhcodi/targetd/login"
)

// The server's side of the authThrottle: it sleeps the delays and logs.

// remoteAddr is the source address a connection is throttled by; the
// zero Addr (not throttled) for anything but TCP.
func remoteAddr(nc net.Conn) netip.Addr {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// isAuthFailure reports whether a login failed authentication (CHAP), the
// failures the throttle counts: a wrong secret or user, or an initiator
// that would not do the CHAP the target requires.
func isAuthFailure(err error) bool {
	var le *login.Error
	return errors.As(err, &le) && le.Status == text.StatusAuthFailed
}

// authTurn waits until a login from c's source may be served. It returns
// false when the connection must be dropped instead: the server closed it
// meanwhile, or the source has so many logins queued that this one would
// wait longer than a login may last.
func (s *Server) authTurn(c *conn) bool {
	if s.auth == nil || !c.src.IsValid() {
		return true
	}
	s.authMu.Lock()
	wait, ok := s.auth.admit(c.src, time.Now(), s.cfg.LoginTimeout)
	s.authMu.Unlock()
	if !ok {
		c.log.Debug("login dropped: its source has too many logins waiting after authentication failures")
		return false
	}
	if wait <= 0 {
		return true
	}
	c.log.Debug("login waits: its source failed to authenticate", "wait", wait)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.closed:
		return false
	}
}

// authFailed records that a login on c failed to authenticate. The first
// failure of a log window is logged here.
func (s *Server) authFailed(c *conn, err error) {
	if s.auth == nil || !c.src.IsValid() {
		c.log.Warn("login failed", "err", err)
		return
	}
	now := time.Now()
	s.authMu.Lock()
	logIt, next := s.auth.failed(c.src, now)
	s.armAuthTimerLocked(now)
	s.authMu.Unlock()
	if logIt {
		c.log.Warn("login failed to authenticate", "err", err, "next_login_delay", next.String(),
			"note", "further failures from this address are counted and summed up every "+s.cfg.AuthLogWindow.String())
	}
}

// authSucceeded forgets the failures of c's source: it answered a CHAP
// challenge.
func (s *Server) authSucceeded(c *conn) {
	if s.auth == nil || !c.src.IsValid() {
		return
	}
	s.authMu.Lock()
	sum, ok := s.auth.succeeded(c.src, time.Now())
	s.authMu.Unlock()
	if ok {
		s.logAuthSummaries([]authSummary{sum})
	}
}

// armAuthTimerLocked sets the timer to the end of the earliest open log
// window. authMu is held.
func (s *Server) armAuthTimerLocked(now time.Time) {
	at, ok := s.auth.nextDue()
	if !ok || s.authClosed {
		return
	}
	d := max(at.Sub(now), 0)
	if s.authTimer == nil {
		s.authTimer = time.AfterFunc(d, s.authTick)
		return
	}
	s.authTimer.Reset(d)
}

// authTick ends the log windows that are over.
func (s *Server) authTick() {
	now := time.Now()
	s.authMu.Lock()
	if s.authClosed {
		s.authMu.Unlock()
		return
	}
	sums := s.auth.due(now)
	s.armAuthTimerLocked(now)
	s.authMu.Unlock()
	s.logAuthSummaries(sums)
}

// closeAuth stops the timer and logs what the open windows counted.
func (s *Server) closeAuth() {
	if s.auth == nil {
		return
	}
	s.authMu.Lock()
	s.authClosed = true
	if s.authTimer != nil {
		s.authTimer.Stop()
	}
	sums := s.auth.flush(time.Now())
	s.authMu.Unlock()
	s.logAuthSummaries(sums)
}

func (s *Server) logAuthSummaries(sums []authSummary) {
	for _, sum := range sums {
		s.log.Warn("more logins failed to authenticate from this address", "remote", sum.src.String(),
			"failures", sum.count, "in_last", sum.window.Round(time.Millisecond).String())
	}
}
