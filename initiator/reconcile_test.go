package initiator

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/naming"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func remoteWant() Want {
	l := naming.Leg{Cluster: "demo", Guest: "web1", Disk: "root", Node: "node-b"}
	return Want{
		Leg: l, Link: "/dev/mhcodi/web1/root/node-b", Serial: naming.Serial(l),
		Target: &Target{IQN: "iqn.2026-11.org.mhcodi:demo.node-b.web1.root", Portal: netip.MustParseAddrPort("10.0.0.2:3260"), ReplacementTimeout: 10 * time.Second},
	}
}

func localWant() Want {
	l := naming.Leg{Cluster: "demo", Guest: "web1", Disk: "root", Node: "node-a"}
	return Want{Leg: l, Link: "/dev/mhcodi/web1/root/node-a", Local: true, Location: "/dev/vg0/mhc-web1-root", Serial: naming.Serial(l)}
}

func kinds(as []Action) []ActionKind {
	var out []ActionKind
	for _, a := range as {
		out = append(out, a.Kind)
	}
	return out
}

func statusOf(t *testing.T, r StepResult, leg string) LegStatus {
	t.Helper()
	for _, s := range r.Status {
		if s.Leg == leg {
			return s
		}
	}
	t.Fatalf("no status for %s", leg)
	return LegStatus{}
}

// A remote leg: login, then a link once the kernel shows the LUN, up.
func TestReconcileLoginThenLink(t *testing.T) {
	r := NewReconciler(DefaultPolicy(true))
	w := remoteWant()
	res := r.Step([]Want{w}, Observed{Now: t0})
	require.Equal(t, []ActionKind{ActLogin}, kinds(res.Actions))
	assert.Equal(t, StatePending, statusOf(t, res, w.Key()).State)

	// In flight: no second login.
	res = r.Step([]Want{w}, Observed{Now: t0.Add(time.Second)})
	assert.Empty(t, res.Actions)
	r.Done(Action{Kind: ActLogin, Leg: w.Key(), Target: w.Target}, nil, t0.Add(2*time.Second))

	// Logged in, disk not scanned yet: still pending, nothing to link.
	s := Session{ID: 1, Target: w.Target.IQN, State: SessionLoggedIn}
	res = r.Step([]Want{w}, Observed{Now: t0.Add(3 * time.Second), Sessions: []Session{s}})
	assert.Empty(t, res.Actions)
	assert.Equal(t, StatePending, statusOf(t, res, w.Key()).State)

	s.Device = Device{Path: "/dev/sdb", Name: "sdb", Serial: w.Serial}
	res = r.Step([]Want{w}, Observed{Now: t0.Add(4 * time.Second), Sessions: []Session{s}})
	require.Equal(t, []ActionKind{ActLink}, kinds(res.Actions))
	assert.Equal(t, "/dev/sdb", res.Actions[0].Dest)
	st := statusOf(t, res, w.Key())
	assert.Equal(t, StateUp, st.State)
	assert.Equal(t, t0.Add(4*time.Second), st.Since)

	// Linked already: nothing to do, no event.
	res = r.Step([]Want{w}, Observed{Now: t0.Add(5 * time.Second), Sessions: []Session{s}, Links: map[string]string{w.Link: "/dev/sdb"}})
	assert.Empty(t, res.Actions)
	assert.Empty(t, res.Events)
}

// A lost session with a recovering backend: down since the loss, link
// kept, no login (iscsid reconnects); back up when it does.
func TestReconcileSessionLostAndBack(t *testing.T) {
	r := NewReconciler(DefaultPolicy(true))
	w := remoteWant()
	dev := Device{Path: "/dev/sdb", Name: "sdb", Serial: w.Serial}
	links := map[string]string{w.Link: "/dev/sdb"}
	up := Session{ID: 1, Target: w.Target.IQN, State: SessionLoggedIn, Device: dev}
	r.Step([]Want{w}, Observed{Now: t0, Sessions: []Session{up}, Links: links})

	failed := up
	failed.State = SessionFailed
	res := r.Step([]Want{w}, Observed{Now: t0.Add(time.Second), Sessions: []Session{failed}, Links: links})
	assert.Empty(t, res.Actions, "iscsid recovers: no login, no unlink")
	st := statusOf(t, res, w.Key())
	assert.Equal(t, StateDown, st.State)
	assert.Equal(t, t0.Add(time.Second), st.Since)
	assert.Contains(t, st.Reason, "FAILED")
	assert.Equal(t, "/dev/sdb", st.Device)
	require.Len(t, res.Events, 1)

	res = r.Step([]Want{w}, Observed{Now: t0.Add(5 * time.Second), Sessions: []Session{failed}, Links: links})
	assert.Empty(t, res.Events, "reported once")
	assert.Equal(t, t0.Add(time.Second), statusOf(t, res, w.Key()).Since, "since does not move")

	res = r.Step([]Want{w}, Observed{Now: t0.Add(6 * time.Second), Sessions: []Session{up}, Links: links})
	assert.Equal(t, StateUp, statusOf(t, res, w.Key()).State)
	assert.Empty(t, res.Actions)
}

// Without recovery (iscsinl) a failed session is replaced, and the link
// follows the new device.
func TestReconcileReplaceWithoutRecovery(t *testing.T) {
	r := NewReconciler(DefaultPolicy(false))
	w := remoteWant()
	failed := Session{ID: 1, Target: w.Target.IQN, State: SessionFailed, Device: Device{Path: "/dev/sdb", Name: "sdb", Serial: w.Serial}}
	res := r.Step([]Want{w}, Observed{Now: t0, Sessions: []Session{failed}, Links: map[string]string{w.Link: "/dev/sdb"}})
	require.Equal(t, []ActionKind{ActLogin}, kinds(res.Actions))
	require.NotNil(t, res.Actions[0].Replace)
	assert.Equal(t, 1, res.Actions[0].Replace.ID)
	r.Done(res.Actions[0], nil, t0)

	fresh := Session{ID: 2, Target: w.Target.IQN, State: SessionLoggedIn, Device: Device{Path: "/dev/sdc", Name: "sdc", Serial: w.Serial}}
	res = r.Step([]Want{w}, Observed{Now: t0.Add(time.Second), Sessions: []Session{fresh}, Links: map[string]string{w.Link: "/dev/sdb"}})
	require.Equal(t, []ActionKind{ActLink}, kinds(res.Actions))
	assert.Equal(t, "/dev/sdc", res.Actions[0].Dest)
}

// Failed logins back off; a refusal is reported once per change and
// retried slowly, never in a tight loop.
func TestReconcileBackoffAndRefusal(t *testing.T) {
	r := NewReconciler(DefaultPolicy(true))
	w := remoteWant()
	now := t0
	var logins []time.Time
	var events []Event
	refused := &RefusedError{Reason: "CHAP authentication failed"}
	for now.Before(t0.Add(10 * time.Minute)) {
		res := r.Step([]Want{w}, Observed{Now: now})
		events = append(events, res.Events...)
		for _, a := range res.Actions {
			require.Equal(t, ActLogin, a.Kind)
			logins = append(logins, now)
			r.Done(a, refused, now)
		}
		now = now.Add(500 * time.Millisecond)
	}
	// 15 s, 30 s, 60 s, 120 s, 240 s, then every 300 s: 7 logins in 10 min.
	assert.LessOrEqual(t, len(logins), 8, "refused logins retried too often: %v", logins)
	assert.GreaterOrEqual(t, len(logins), 5)
	for i := 1; i < len(logins); i++ {
		assert.GreaterOrEqual(t, logins[i].Sub(logins[i-1]), 15*time.Second)
	}
	var refusals int
	for _, e := range events {
		if e.To == StateRefused {
			refusals++
			assert.Contains(t, e.Reason, "CHAP")
		}
	}
	assert.Equal(t, 1, refusals, "a refusal is reported once, not once per attempt: %v", events)

	// A transient failure retries within seconds.
	r2 := NewReconciler(DefaultPolicy(true))
	res := r2.Step([]Want{w}, Observed{Now: t0})
	r2.Done(res.Actions[0], errors.New("connection refused"), t0)
	res = r2.Step([]Want{w}, Observed{Now: t0.Add(500 * time.Millisecond)})
	assert.Empty(t, res.Actions)
	assert.Equal(t, StateDown, statusOf(t, res, w.Key()).State)
	res = r2.Step([]Want{w}, Observed{Now: t0.Add(time.Second)})
	assert.Equal(t, []ActionKind{ActLogin}, kinds(res.Actions))
}

// A LUN with another leg's serial is never linked.
func TestReconcileWrongSerial(t *testing.T) {
	r := NewReconciler(DefaultPolicy(true))
	w := remoteWant()
	s := Session{ID: 1, Target: w.Target.IQN, State: SessionLoggedIn, Device: Device{Path: "/dev/sdb", Name: "sdb", Serial: "MHC00000000000000000"}}
	res := r.Step([]Want{w}, Observed{Now: t0, Sessions: []Session{s}})
	assert.Empty(t, res.Actions)
	st := statusOf(t, res, w.Key())
	assert.Equal(t, StateRefused, st.State)
	assert.Contains(t, st.Reason, "serial")
}

// Local legs are linked to their volume, up when it exists; legs and
// sessions that left the config are unlinked and logged out.
func TestReconcileLocalAndLeavers(t *testing.T) {
	r := NewReconciler(DefaultPolicy(true))
	lw := localWant()
	gone := Session{ID: 7, Target: "iqn.2026-11.org.mhcodi:demo.node-b.old.root", State: SessionLoggedIn}
	res := r.Step([]Want{lw}, Observed{
		Now: t0, Sessions: []Session{gone},
		Links:   map[string]string{"/dev/mhcodi/old/root/node-b": "/dev/sdz"},
		Present: map[string]bool{},
	})
	assert.ElementsMatch(t, []ActionKind{ActLink, ActLogout, ActUnlink}, kinds(res.Actions))
	st := statusOf(t, res, lw.Key())
	assert.Equal(t, StateDown, st.State)
	assert.Contains(t, st.Reason, "does not exist")
	for _, a := range res.Actions {
		switch a.Kind {
		case ActLink:
			assert.Equal(t, lw.Location, a.Dest)
		case ActLogout:
			assert.Equal(t, 7, a.Session.ID)
		case ActUnlink:
			assert.Equal(t, "/dev/mhcodi/old/root/node-b", a.Path)
		}
	}
	res = r.Step([]Want{lw}, Observed{Now: t0.Add(time.Second), Links: map[string]string{lw.Link: lw.Location}, Present: map[string]bool{lw.Location: true}})
	assert.Empty(t, res.Actions)
	assert.Equal(t, StateUp, statusOf(t, res, lw.Key()).State)
}

// With initiator.backend qemu remote legs are the hypervisor's: no
// login, no link.
func TestReconcileHypervisorLeg(t *testing.T) {
	r := NewReconciler(DefaultPolicy(false))
	w := remoteWant()
	w.Target, w.Link = nil, ""
	res := r.Step([]Want{w}, Observed{Now: t0})
	assert.Empty(t, res.Actions)
	assert.Equal(t, StateHypervisor, statusOf(t, res, w.Key()).State)
}
