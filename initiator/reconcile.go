package initiator

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// State is how a leg stands on this node.
type State string

// Leg states.
const (
	// StatePending: not linked yet, a first login is under way or due.
	StatePending State = "pending"
	// StateUp: linked to a device that answers (a logged-in session, or a
	// local volume that exists).
	StateUp State = "up"
	// StateDown: the session is lost or the volume missing. The link
	// stays (md keeps a stable name to fail and re-add); I/O on it fails
	// once the replacement timeout has passed.
	StateDown State = "down"
	// StateRefused: the target refused the login (CHAP, ACL, unknown
	// target) or exported a LUN with another leg's serial. Retried
	// slowly; reported once per change.
	StateRefused State = "refused"
	// StateHypervisor: a remote leg the hypervisor's own initiator
	// reaches (initiator.backend qemu); nothing to do here.
	StateHypervisor State = "hypervisor"
)

// Kernel session states, as /sys/class/iscsi_session/*/state shows them.
const (
	SessionLoggedIn = "LOGGED_IN"
	SessionFailed   = "FAILED"
	SessionFree     = "FREE"
)

// Session is one kernel iSCSI session.
type Session struct {
	ID     int    // the N of sessionN
	Target string // target IQN
	Portal string // ip:port, when the kernel knows it
	State  string // LOGGED_IN, FAILED, FREE
	// Device is LUN 0's block device, zero until the kernel scanned it.
	Device Device
}

// Device is a block device of an imported LUN.
type Device struct {
	Path   string // what links point at: /dev/disk/by-path/… or /dev/sdX
	Name   string // sdX
	Serial string // VPD 0x80 unit serial; "" if unreadable
}

// Observed is what the node looks like now.
type Observed struct {
	Now      time.Time
	Sessions []Session
	// Links maps every leg link under the link dir to its target.
	Links map[string]string
	// Present tells, for each local leg's location, whether it exists.
	Present map[string]bool
}

// ActionKind says what an Action does.
type ActionKind string

// Action kinds.
const (
	ActLogin  ActionKind = "login"
	ActLogout ActionKind = "logout"
	ActLink   ActionKind = "link"
	ActUnlink ActionKind = "unlink"
)

// Action is one change the reconciler asks for.
type Action struct {
	Kind ActionKind
	Leg  string // the leg's key; "" for a session or link no leg wants
	// ActLogin: the target; Replace, if set, is a dead session of the same
	// target to tear down first (backends that do not recover sessions).
	Target  *Target
	Replace *Session
	// ActLogout: the session.
	Session *Session
	// ActLink, ActUnlink: the link, and for ActLink what it points at.
	Path, Dest string
}

func (a Action) String() string {
	switch a.Kind {
	case ActLogin:
		return fmt.Sprintf("login %s at %s", a.Target.IQN, a.Target.Portal)
	case ActLogout:
		return fmt.Sprintf("logout session %d (%s)", a.Session.ID, a.Session.Target)
	case ActLink:
		return fmt.Sprintf("link %s -> %s", a.Path, a.Dest)
	}
	return fmt.Sprintf("unlink %s", a.Path)
}

// RefusedError is a login the target answered with a refusal (RFC 7143
// §11.13.5 status class 2: authentication failed, not authorized, not
// found): trying again at once would get the same answer.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "login refused: " + e.Reason }

// IsRefused reports whether err is (or wraps) a RefusedError.
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

// LegStatus is one leg as `mhcodi import status` shows it.
type LegStatus struct {
	Leg    string    `json:"leg"`
	Local  bool      `json:"local"`
	Link   string    `json:"link,omitempty"`
	Device string    `json:"device,omitempty"`
	Target string    `json:"target,omitempty"`
	Portal string    `json:"portal,omitempty"`
	State  State     `json:"state"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"`
}

// Event is a change of a leg's state or reason, reported once.
type Event struct {
	Leg    string
	From   State
	To     State
	Reason string
}

// Backoff bounds the waits between login attempts.
type Backoff struct {
	// Min is the first wait after a failure, doubled per failure up to Max.
	Min, Max time.Duration
}

func (b Backoff) after(failures int) time.Duration {
	d := b.Min
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Policy holds the reconciler's knobs.
type Policy struct {
	// Recovers says the backend brings a lost session back by itself
	// (iscsid does); otherwise a FAILED session is torn down and logged in
	// anew (iscsinl has no recovery).
	Recovers bool
	// Retry is the backoff after a failed login (target down, network
	// cut); Refused after a refusal, slower since the answer will not
	// change until someone edits a config or a secret.
	Retry, Refused Backoff
}

// DefaultPolicy retries a lost target within seconds (a restarted
// targetd is back long before md's replacement timeout has passed) and a
// refusing one every few minutes at most.
func DefaultPolicy(recovers bool) Policy {
	return Policy{
		Recovers: recovers,
		Retry:    Backoff{Min: time.Second, Max: 8 * time.Second},
		Refused:  Backoff{Min: 15 * time.Second, Max: 5 * time.Minute},
	}
}

// legMem is what the reconciler remembers of a leg between steps.
type legMem struct {
	state    State
	since    time.Time
	reason   string
	device   string // the last device linked
	failures int
	next     time.Time // no login before this
	inflight bool      // a login or relogin is running
	loginErr error     // the last login's error, until a session shows up
	reported bool
	repState State // the state last reported in an Event
}

// Reconciler is the import policy as a pure state machine: Step takes
// the wanted legs and what was observed and returns what to do; Done
// tells it how an action ended. It does no I/O and reads no clock.
type Reconciler struct {
	policy Policy
	legs   map[string]*legMem
}

// NewReconciler returns a reconciler with no memory of any leg.
func NewReconciler(p Policy) *Reconciler {
	return &Reconciler{policy: p, legs: map[string]*legMem{}}
}

// Step is one pass of the reconciler.
type StepResult struct {
	Actions []Action
	Status  []LegStatus
	Events  []Event
}

// Step compares wants with obs and returns the actions that bring one to
// the other, every leg's status and the state changes since the last
// step. A login it returns is in flight until Done is called for it: no
// other login for that leg is asked for meanwhile.
func (r *Reconciler) Step(wants []Want, obs Observed) StepResult {
	var res StepResult
	now := obs.Now
	byTarget := map[string]*Session{}
	for i := range obs.Sessions {
		s := &obs.Sessions[i]
		k := strings.ToLower(s.Target)
		if cur, ok := byTarget[k]; !ok || better(s, cur) {
			byTarget[k] = s
		}
	}
	wantedLinks := map[string]bool{}
	wantedTargets := map[string]bool{}
	seen := map[string]bool{}
	for _, w := range wants {
		key := w.Key()
		seen[key] = true
		m := r.legs[key]
		if m == nil {
			m = &legMem{state: StatePending, since: now}
			r.legs[key] = m
		}
		if w.Link != "" {
			wantedLinks[w.Link] = true
		}
		st := LegStatus{Leg: key, Local: w.Local, Link: w.Link}
		var next State
		var reason, dest string
		switch {
		case w.Local:
			dest = w.Location
			if obs.Present[w.Location] {
				next = StateUp
			} else {
				next, reason = StateDown, "volume "+w.Location+" does not exist"
			}
		case w.Target == nil:
			next, reason = StateHypervisor, "reached by the hypervisor's own iSCSI initiator (initiator.backend qemu)"
		default:
			t := w.Target
			st.Target, st.Portal = t.IQN, t.Portal.String()
			wantedTargets[strings.ToLower(t.IQN)] = true
			s := byTarget[strings.ToLower(t.IQN)]
			next, reason, dest = r.remote(w, m, s, now, &res.Actions)
		}
		if dest == "" {
			dest = m.device
		}
		if dest != "" && w.Link != "" {
			m.device = dest
			if obs.Links[w.Link] != dest {
				res.Actions = append(res.Actions, Action{Kind: ActLink, Leg: key, Path: w.Link, Dest: dest})
			}
		}
		if next != m.state {
			m.state, m.since = next, now
		}
		if !m.reported || next != m.repState || reason != m.reason {
			from := m.repState
			if !m.reported {
				from = ""
			}
			res.Events = append(res.Events, Event{Leg: key, From: from, To: next, Reason: reason})
		}
		m.reason, m.repState, m.reported = reason, next, true
		st.Device, st.State, st.Since, st.Reason = m.device, m.state, m.since, m.reason
		res.Status = append(res.Status, st)
	}
	// Sessions of this cluster's targets no leg wants any more (the leg
	// left the config, or the guest may not run here now).
	for i := range obs.Sessions {
		s := obs.Sessions[i]
		if wantedTargets[strings.ToLower(s.Target)] {
			continue
		}
		res.Actions = append(res.Actions, Action{Kind: ActLogout, Session: &s})
	}
	// Links of legs that left the config.
	var stale []string
	for p := range obs.Links {
		if !wantedLinks[p] {
			stale = append(stale, p)
		}
	}
	sort.Strings(stale)
	for _, p := range stale {
		res.Actions = append(res.Actions, Action{Kind: ActUnlink, Path: p})
	}
	for k := range r.legs {
		if !seen[k] {
			delete(r.legs, k)
		}
	}
	return res
}

// remote decides a remote leg imported by the kernel: its state, the
// device to link (if known now) and the login to start.
func (r *Reconciler) remote(w Want, m *legMem, s *Session, now time.Time, acts *[]Action) (State, string, string) {
	key := w.Key()
	if s != nil && s.State == SessionLoggedIn {
		m.loginErr = nil
		if s.Device.Path == "" {
			// The kernel scans the LUN after the login; its block
			// device shows up a moment later.
			return keepOr(m, StatePending), "logged in, waiting for the LUN's block device", ""
		}
		if s.Device.Serial != "" && w.Serial != "" && s.Device.Serial != w.Serial {
			return StateRefused, fmt.Sprintf("LUN %s has serial %s, not this leg's %s; not linked", s.Device.Name, s.Device.Serial, w.Serial), ""
		}
		m.failures = 0
		return StateUp, "", s.Device.Path
	}
	if m.inflight {
		return keepOr(m, StatePending), m.reasonOr("logging in"), ""
	}
	var state State
	var reason string
	switch {
	case m.loginErr != nil && IsRefused(m.loginErr):
		state, reason = StateRefused, m.loginErr.Error()
	case m.loginErr != nil:
		state, reason = StateDown, "login failed: "+m.loginErr.Error()
	case s != nil:
		state, reason = StateDown, fmt.Sprintf("session %d is %s", s.ID, s.State)
		if r.policy.Recovers {
			// iscsid is reconnecting; it fails I/O after the
			// replacement timeout and keeps trying after that.
			return StateDown, reason, ""
		}
	case m.device == "" && m.state != StateDown:
		state, reason = StatePending, "logging in"
	default:
		state, reason = StateDown, "no session"
	}
	if now.Before(m.next) {
		return state, reason, ""
	}
	a := Action{Kind: ActLogin, Leg: key, Target: w.Target}
	if s != nil {
		ss := *s
		a.Replace = &ss
	}
	*acts = append(*acts, a)
	m.inflight = true
	return state, reason, ""
}

// Done records how an action Step returned ended, at now.
func (r *Reconciler) Done(a Action, err error, now time.Time) {
	if a.Kind != ActLogin {
		return
	}
	m := r.legs[a.Leg]
	if m == nil {
		return
	}
	m.inflight = false
	m.loginErr = err
	if err == nil {
		m.failures = 0
		m.next = time.Time{}
		return
	}
	m.failures++
	b := r.policy.Retry
	if IsRefused(err) {
		b = r.policy.Refused
	}
	m.next = now.Add(b.after(m.failures))
}

// NextLogin is when the leg's next login attempt is due (zero: at once).
func (r *Reconciler) NextLogin(leg string) time.Time {
	if m := r.legs[leg]; m != nil {
		return m.next
	}
	return time.Time{}
}

// better prefers a logged-in session over others, then the newest.
func better(a, b *Session) bool {
	if (a.State == SessionLoggedIn) != (b.State == SessionLoggedIn) {
		return a.State == SessionLoggedIn
	}
	return a.ID > b.ID
}

func keepOr(m *legMem, s State) State {
	if m.state == StateUp || m.state == StateDown {
		return m.state
	}
	return s
}

func (m *legMem) reasonOr(s string) string {
	if m.reason != "" {
		return m.reason
	}
	return s
}
