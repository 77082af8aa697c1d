package iscsi

import (
	"net/netip"
	"time"
)

// authThrottle is the policy against guessing CHAP secrets: per source
// address, a login that follows an authentication failure is served only
// after a delay that starts at base and doubles with every further
// failure, up to max; logins arriving together are spaced by that delay,
// so parallel connections guess no faster than one. A successful CHAP
// login from the source forgets its failures.
//
// It also keeps the log readable under such an attack: the first failure
// of a source is logged in full, the ones after it within window are only
// counted, and each window that counted some ends in one summary line.
//
// It is a pure state machine: every method takes the time, and the caller
// serializes the calls, sleeps the delays and logs the lines.
type authThrottle struct {
	base, max time.Duration
	window    time.Duration
	// forget drops the state of a source whose last failure is this old.
	forget time.Duration
	// maxSources bounds the memory an attacker with many addresses can
	// make us spend; beyond it the least recent source is dropped.
	maxSources int
	srcs       map[netip.Addr]*authSource
}

// authSource is what the throttle remembers of one address.
type authSource struct {
	fails int       // failures since the last success
	last  time.Time // the last failure
	next  time.Time // no login from the source is served before this
	// The log window: opened by a failure logged in full, it counts the
	// failures after it (unlogged) until it ends at windowEnd.
	windowOpen bool
	windowEnd  time.Time
	unlogged   int
}

// authSummary is the line that ends a log window: count failures from
// src in the last window (its length).
type authSummary struct {
	src    netip.Addr
	count  int
	window time.Duration
}

const (
	defaultAuthDelay     = time.Second
	defaultAuthMaxDelay  = 4 * time.Second
	defaultAuthLogWindow = time.Minute
	authForget           = 10 * time.Minute
	authMaxSources       = 4096
)

func newAuthThrottle(base, max, window time.Duration) *authThrottle {
	return &authThrottle{base: base, max: max, window: window, forget: authForget, maxSources: authMaxSources, srcs: map[netip.Addr]*authSource{}}
}

// delay is the wait after n failures (n ≥ 1): base, doubled per failure
// after the first, at most max.
func (t *authThrottle) delay(n int) time.Duration {
	d := t.base
	for i := 1; i < n && d < t.max; i++ {
		d *= 2
	}
	return min(d, t.max)
}

// admit is called when a login from src arrives at now. It returns how
// long to wait before serving it, and reserves that turn; ok is false, and
// nothing is reserved, when the wait would be longer than limit (the
// caller then drops the connection unanswered).
func (t *authThrottle) admit(src netip.Addr, now time.Time, limit time.Duration) (wait time.Duration, ok bool) {
	s := t.get(src, now)
	if s == nil || s.fails == 0 {
		return 0, true
	}
	at := s.next
	if at.Before(now) {
		at = now
	}
	if wait = at.Sub(now); wait > limit {
		return 0, false
	}
	s.next = at.Add(t.delay(s.fails))
	return wait, true
}

// failed records an authentication failure from src at now. It reports
// whether to log this failure in full (the first of a log window) and the
// delay the source's next login will wait.
func (t *authThrottle) failed(src netip.Addr, now time.Time) (logIt bool, next time.Duration) {
	s := t.get(src, now)
	if s == nil {
		t.makeRoom()
		s = &authSource{}
		t.srcs[src] = s
	}
	s.fails++
	s.last = now
	d := t.delay(s.fails)
	if n := now.Add(d); n.After(s.next) {
		s.next = n
	}
	if s.windowOpen {
		s.unlogged++
		return false, d
	}
	s.windowOpen, s.windowEnd, s.unlogged = true, now.Add(t.window), 0
	return true, d
}

// succeeded forgets src's failures (it logged in with CHAP), returning the
// summary of its open log window if that counted failures.
func (t *authThrottle) succeeded(src netip.Addr, now time.Time) (authSummary, bool) {
	s := t.srcs[src]
	if s == nil {
		return authSummary{}, false
	}
	delete(t.srcs, src)
	if !s.windowOpen || s.unlogged == 0 {
		return authSummary{}, false
	}
	return authSummary{src: src, count: s.unlogged, window: t.window - s.windowEnd.Sub(now)}, true
}

// due ends the log windows that are over at now: a window that counted
// failures yields a summary and opens the next (an attack that goes on
// gets a line per window), one that counted none closes (the next failure
// is logged in full). It also forgets sources idle for long.
func (t *authThrottle) due(now time.Time) []authSummary {
	var out []authSummary
	for src, s := range t.srcs {
		if s.windowOpen && !now.Before(s.windowEnd) {
			if s.unlogged > 0 {
				out = append(out, authSummary{src: src, count: s.unlogged, window: t.window})
				s.windowEnd, s.unlogged = now.Add(t.window), 0
			} else {
				s.windowOpen = false
			}
		}
		if t.idle(s, now) {
			delete(t.srcs, src)
		}
	}
	return out
}

// get returns src's state, forgetting it first if it is idle.
func (t *authThrottle) get(src netip.Addr, now time.Time) *authSource {
	s := t.srcs[src]
	if s != nil && t.idle(s, now) {
		delete(t.srcs, src)
		return nil
	}
	return s
}

// idle reports whether a source has nothing left worth remembering: no
// open log window, no turn reserved, no failure for forget.
func (t *authThrottle) idle(s *authSource, now time.Time) bool {
	return !s.windowOpen && !now.Before(s.next) && now.Sub(s.last) >= t.forget
}

// nextDue is when the earliest open log window ends; ok is false when no
// window is open.
func (t *authThrottle) nextDue() (at time.Time, ok bool) {
	for _, s := range t.srcs {
		if s.windowOpen && (!ok || s.windowEnd.Before(at)) {
			at, ok = s.windowEnd, true
		}
	}
	return at, ok
}

// flush ends every open log window now, for a server that stops.
func (t *authThrottle) flush(now time.Time) []authSummary {
	var out []authSummary
	for src, s := range t.srcs {
		if s.windowOpen && s.unlogged > 0 {
			out = append(out, authSummary{src: src, count: s.unlogged, window: t.window - s.windowEnd.Sub(now)})
		}
		s.windowOpen, s.unlogged = false, 0
	}
	return out
}

// makeRoom drops the least recently failing source when the table is
// full, so an attacker with many addresses cannot grow it without bound.
func (t *authThrottle) makeRoom() {
	if len(t.srcs) < t.maxSources {
		return
	}
	var oldest netip.Addr
	var at time.Time
	for src, s := range t.srcs {
		if !oldest.IsValid() || s.last.Before(at) {
			oldest, at = src, s.last
		}
	}
	delete(t.srcs, oldest)
}
