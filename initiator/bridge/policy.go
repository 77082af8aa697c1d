package bridge

import "time"

// State is where a leg's iSCSI session stands.
type State string

// Leg states.
const (
	// StateConnecting: no session yet since the bridge started.
	StateConnecting State = "connecting"
	// StateUp: a session is logged in; requests go to the target.
	StateUp State = "up"
	// StateDown: the session was lost or a login failed for a reason
	// that may pass (target down, network); logins are retried with a
	// doubling backoff.
	StateDown State = "down"
	// StateRefused: the target refused this initiator (login status
	// class 2: CHAP, ACL, fencing, unknown target). Retried slowly: an
	// operator or the fencing daemon has to change something first.
	StateRefused State = "refused"
	// StateStopped: the bridge is shutting down.
	StateStopped State = "stopped"
)

// PolicyConfig are the timings of a leg.
type PolicyConfig struct {
	// IOTimeout is how long a request waits for a session before it
	// fails with EIO (open-iscsi's replacement_timeout).
	IOTimeout time.Duration
	// BackoffMin and BackoffMax bound the delay between failed logins.
	BackoffMin, BackoffMax time.Duration
	// RefusedBackoff is the delay after a refused login.
	RefusedBackoff time.Duration
}

// DefaultPolicy are the timings used for zero fields.
func DefaultPolicy() PolicyConfig {
	return PolicyConfig{IOTimeout: 5 * time.Second, BackoffMin: 200 * time.Millisecond,
		BackoffMax: 5 * time.Second, RefusedBackoff: 10 * time.Second}
}

func (c PolicyConfig) withDefaults() PolicyConfig {
	d := DefaultPolicy()
	if c.IOTimeout <= 0 {
		c.IOTimeout = d.IOTimeout
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = d.BackoffMin
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(d.BackoffMax, c.BackoffMin)
	}
	if c.RefusedBackoff <= 0 {
		c.RefusedBackoff = d.RefusedBackoff
	}
	return c
}

// Change is a state change worth logging and publishing.
type Change struct {
	From, To State
	Since    time.Time
	Reason   string
}

// Policy decides when a leg logs in again and how long requests wait. It
// is a pure state machine: the caller reports events with the time they
// happened and acts on what it returns.
type Policy struct {
	cfg     PolicyConfig
	state   State
	since   time.Time
	reason  string
	backoff time.Duration
	next    time.Time
}

// NewPolicy starts in StateConnecting with a login due at once.
func NewPolicy(cfg PolicyConfig, now time.Time) *Policy {
	cfg = cfg.withDefaults()
	return &Policy{cfg: cfg, state: StateConnecting, since: now, backoff: cfg.BackoffMin, next: now}
}

// State is the current state, since when, and the last failure's reason.
func (p *Policy) State() (State, time.Time, string) { return p.state, p.since, p.reason }

// NextAttempt is when the next login should start.
func (p *Policy) NextAttempt() time.Time { return p.next }

// Deadline is when a request that started waiting for a session at
// waitStart gives up: IOTimeout after it started waiting, but no later
// than IOTimeout after the leg went down. A leg that has been without a
// session for longer than that fails every new request at once, as
// open-iscsi does once replacement_timeout expired: otherwise each read
// of a long-dead leg (a guest booting while a host is away probes it
// with many) would cost the whole timeout again.
func (p *Policy) Deadline(waitStart time.Time) time.Time {
	d := waitStart.Add(p.cfg.IOTimeout)
	if p.state != StateUp {
		if failed := p.since.Add(p.cfg.IOTimeout); failed.Before(d) {
			return failed
		}
	}
	return d
}

// IOTimeout is the configured I/O timeout.
func (p *Policy) IOTimeout() time.Duration { return p.cfg.IOTimeout }

func (p *Policy) move(to State, now time.Time, reason string) (Change, bool) {
	if to == p.state && reason == p.reason {
		return Change{}, false
	}
	c := Change{From: p.state, To: to, Since: now, Reason: reason}
	if to == p.state {
		// Same state, new reason: reported, but since is kept.
		c.Since = p.since
	} else {
		p.since = now
	}
	p.state, p.reason = to, reason
	return c, true
}

// LoginSucceeded records a session up.
func (p *Policy) LoginSucceeded(now time.Time) (Change, bool) {
	p.backoff = p.cfg.BackoffMin
	return p.move(StateUp, now, "")
}

// LoginFailed records a failed login. refused says the target refused
// the initiator; a refusal for the same reason as the last is no change,
// so it is logged once, not every RefusedBackoff.
func (p *Policy) LoginFailed(now time.Time, reason string, refused bool) (Change, bool) {
	if refused {
		p.next = now.Add(p.cfg.RefusedBackoff)
		p.backoff = p.cfg.BackoffMin
		return p.move(StateRefused, now, reason)
	}
	p.next = now.Add(p.backoff)
	p.backoff = min(2*p.backoff, p.cfg.BackoffMax)
	to := StateDown
	if p.state == StateConnecting {
		to = StateConnecting
	}
	if p.state == to && p.reason != "" {
		// Repeated failures (connection refused every backoff) would
		// flood the log: keep the first reason.
		return Change{}, false
	}
	return p.move(to, now, reason)
}

// SessionLost records the loss of an up session; the next login starts
// at once, since a restarted target is often back already.
func (p *Policy) SessionLost(now time.Time, reason string) (Change, bool) {
	p.next = now
	p.backoff = p.cfg.BackoffMin
	return p.move(StateDown, now, reason)
}

// Stopped records the end.
func (p *Policy) Stopped(now time.Time) (Change, bool) {
	return p.move(StateStopped, now, "bridge stopping")
}
