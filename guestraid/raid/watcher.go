package raid

import (
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/guestraid/md"
)

// Config tunes the Watcher.
type Config struct {
	// ReaddDelay is how long a leg the Watcher removed as faulty stays
	// out before it may be re-added, so a leg that fails on every write
	// does not flap in and out of the array each poll.
	ReaddDelay time.Duration
	// ReaddMaxBackoff caps the doubling wait after failed re-adds (and
	// failed assemblies).
	ReaddMaxBackoff time.Duration
	// CheckEvery starts a check scrub of each idle, whole array this often;
	// 0: only when the host asks.
	CheckEvery time.Duration
	// Heartbeat is how often an unchanged state is sent again.
	Heartbeat time.Duration
}

// DefaultConfig is the daemon's default.
func DefaultConfig() Config {
	return Config{ReaddDelay: 5 * time.Second, ReaddMaxBackoff: 5 * time.Minute, Heartbeat: 5 * time.Second}
}

// LegObs is what was observed of a leg.
type LegObs struct {
	Dev      string    // "" when no device has the serial
	Readable bool      // answers an O_DIRECT read
	Super    *md.Super // its superblock, for a present non-member; nil: blank or not read
	// SuperErr: the superblock could not be read (but is not absent).
	SuperErr     error
	WriteSectors uint64 // /sys/block/<dev>/stat, for resync_bytes
}

// DiskObs is what was observed of a disk.
type DiskObs struct {
	Array md.Array
	// ArraySuper is the superblock of an in-sync member, read when a
	// present leg is out of the array (to tell a returning leg from a
	// diverged one).
	ArraySuper *md.Super
	Legs       []LegObs // parallel to the DiskSpec's legs
}

// ActionKind is what an Action does.
type ActionKind int

// Actions.
const (
	// ActAssemble starts the disk's array (PlanAssemble on fresh probes).
	ActAssemble ActionKind = iota + 1
	// ActRemove removes a faulty member.
	ActRemove
	// ActReAdd re-adds a returning leg through the bitmap.
	ActReAdd
	// ActAdd adds a blank leg (full resync).
	ActAdd
	// ActWipeAdd wipes a stale leg and adds it (full resync); a member
	// is failed and removed first.
	ActWipeAdd
	// ActSetState writes Word to the member's md state (flags).
	ActSetState
	// ActCheck starts a check scrub.
	ActCheck
)

func (k ActionKind) String() string {
	return [...]string{"?", "assemble", "remove", "re-add", "add", "wipe+add", "set-state", "check"}[k]
}

// Action is one thing for Service to do. Events it causes are reported by
// Service once it succeeded (with what only doing it can measure, such as
// a re-add's dirty bytes).
type Action struct {
	Kind   ActionKind
	Disk   string
	MD     string
	Leg    LegSpec
	Dev    string
	Member bool   // ActWipeAdd: the leg is in the array now
	Word   string // ActSetState
}

func (a Action) String() string {
	s := fmt.Sprintf("%s %s", a.Kind, a.MD)
	if a.Dev != "" {
		s += " " + a.Dev
	}
	if a.Word != "" {
		s += " " + a.Word
	}
	return s
}

// Watcher is the running policy: a state machine fed with observations
// and host messages, returning actions, events and state messages. It
// does no I/O and reads no clock (Step gets the time).
type Watcher struct {
	cfg   Config
	host  *channel.Host
	disks []DiskSpec
	mem   map[string]*diskMem // by disk name
	// wiped holds legs (serials) wiped and added while the host marked
	// them stale: they are not wiped again until the host, having seen
	// the resync finish, clears the mark (a new mark wipes again).
	wiped map[string]bool
}

type diskMem struct {
	seen    bool
	running bool
	// held: the array stopped while this watcher saw it run, so someone
	// stopped it on purpose (md never stops an array by itself): it is not
	// assembled again behind their back, and its legs are not touched,
	// until it runs again.
	held          bool
	degraded      int
	syncAction    string
	checking      bool
	checkRequest  bool
	nextCheck     time.Time
	nextAssemble  time.Time
	assembleDelay time.Duration
	last          channel.State
	lastSent      time.Time
	legs          map[string]*legMem // by serial
}

type legMem struct {
	failReported bool
	nextTry      time.Time
	backoff      time.Duration
	pending      bool   // added or re-added: resync-done is due
	base         uint64 // write sectors when it was added
	kind         string // what started the resync: add, readd, wipe, create
	reported     string // the last left-out/split reason reported
}

// NewWatcher starts a watcher with host info (nil: none) or, without it,
// the disks found by scanning.
func NewWatcher(cfg Config, host *channel.Host, scanned []DiskSpec) *Watcher {
	w := &Watcher{cfg: cfg, mem: map[string]*diskMem{}, wiped: map[string]bool{}}
	if host != nil {
		w.SetHost(host)
	} else {
		w.disks = scanned
	}
	return w
}

// Disks is what the Watcher manages now.
func (w *Watcher) Disks() []DiskSpec { return w.disks }

// Host is the current host info (nil: none).
func (w *Watcher) Host() *channel.Host { return w.host }

// Wiped lists the legs wiped while marked stale (to persist across the
// initramfs → system switch).
func (w *Watcher) Wiped() []string {
	var out []string
	for s := range w.wiped {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// SetWiped restores Wiped.
func (w *Watcher) SetWiped(serials []string) {
	for _, s := range serials {
		w.wiped[s] = true
	}
}

// SetHost applies a host message: the flags follow its local leg, its
// stale legs are wiped (once per mark). It returns the events to report.
func (w *Watcher) SetHost(h *channel.Host) []Note {
	var notes []Note
	w.host = h
	w.disks = DisksFromHost(h)
	stale := map[string]bool{}
	for _, d := range w.disks {
		for _, l := range d.Legs {
			if l.Stale {
				stale[l.Serial] = true
			}
		}
	}
	for s := range w.wiped {
		if !stale[s] {
			delete(w.wiped, s) // the host cleared the mark
		}
	}
	notes = append(notes, Note{Event: channel.EventHost, Detail: fmt.Sprintf("host info: guest %s on node %s, epoch %d", h.Guest, h.Node, h.Epoch)})
	return notes
}

// RequestCheck asks for a check scrub of disk (from the host).
func (w *Watcher) RequestCheck(disk string) bool {
	for _, d := range w.disks {
		if d.Name == disk {
			w.disk(disk).checkRequest = true
			return true
		}
	}
	return false
}

func (w *Watcher) disk(name string) *diskMem {
	m := w.mem[name]
	if m == nil {
		m = &diskMem{legs: map[string]*legMem{}}
		w.mem[name] = m
	}
	return m
}

func (m *diskMem) leg(serial string) *legMem {
	l := m.legs[serial]
	if l == nil {
		l = &legMem{}
		m.legs[serial] = l
	}
	return l
}

// StepResult is what one Step decided.
type StepResult struct {
	Actions []Action
	Events  []channel.Event
	States  []channel.State // to send now (changed, or heartbeat due)
}

// Step takes one observation of every disk (parallel to Disks()) at now
// and decides.
func (w *Watcher) Step(now time.Time, obs []DiskObs) StepResult {
	var r StepResult
	for i, d := range w.disks {
		if i >= len(obs) {
			break
		}
		w.stepDisk(now, d, obs[i], &r)
	}
	return r
}

func (w *Watcher) event(r *StepResult, now time.Time, d DiskSpec, a md.Array, n Note) {
	r.Events = append(r.Events, channel.Event{
		Type: channel.TypeEvent, Time: channel.Timestamp(now), Disk: d.Name, Event: n.Event,
		Leg: n.Leg, Detail: n.Detail, ArrayBytes: a.Bytes,
	})
}

func (w *Watcher) stepDisk(now time.Time, d DiskSpec, o DiskObs, r *StepResult) {
	m := w.disk(d.Name)
	a := o.Array
	note := func(ev, leg, detail string) { w.event(r, now, d, a, Note{Event: ev, Leg: leg, Detail: detail}) }

	if !a.Running {
		if m.running {
			m.held = true
			note(channel.EventStopped, "", fmt.Sprintf("%s was stopped outside guestraid; it stays stopped (its legs untouched) until it is assembled again (guestraid assemble or mdadm --assemble)", d.MD))
		}
		m.running = false
		anyPresent := false
		for _, l := range o.Legs {
			anyPresent = anyPresent || l.Dev != ""
		}
		if anyPresent && !m.held && !now.Before(m.nextAssemble) {
			r.Actions = append(r.Actions, Action{Kind: ActAssemble, Disk: d.Name, MD: d.MD})
		}
		w.state(now, d, o, m, r)
		return
	}
	if !m.running {
		m.running = true
		m.held = false
		m.assembleDelay = 0
	}

	// Degraded and sync transitions.
	if a.Degraded > 0 && (!m.seen || m.degraded == 0) {
		note(channel.EventDegraded, "", fmt.Sprintf("%s runs with %d of %d legs", d.MD, a.RaidDisks-a.Degraded, a.RaidDisks))
	}
	if m.checking && a.SyncAction == "idle" {
		m.checking = false
		note(channel.EventCheckDone, "", fmt.Sprintf("check of %s finished: mismatch_cnt %d (sectors that differ between the legs)", d.MD, a.MismatchCnt))
	}
	if a.SyncAction == "check" {
		m.checking = true
	}

	inSync := 0
	for _, mb := range a.Members {
		if mb.Has("in_sync") && !mb.Has("faulty") {
			inSync++
		}
	}
	known := map[string]bool{}
	for i, leg := range d.Legs {
		lo := LegObs{}
		if i < len(o.Legs) {
			lo = o.Legs[i]
		}
		lm := m.leg(leg.Serial)
		if lo.Dev != "" {
			known[lo.Dev] = true
		}
		mb, member := md.Member{}, false
		if lo.Dev != "" {
			mb, member = a.Member(lo.Dev)
		}
		switch {
		case member && mb.Has("faulty"):
			if !lm.failReported {
				lm.failReported = true
				note(channel.EventFail, leg.ID(), fmt.Sprintf("md marked %s faulty in %s", lo.Dev, d.MD))
			}
			lm.pending = false
			r.Actions = append(r.Actions, Action{Kind: ActRemove, Disk: d.Name, MD: d.MD, Leg: leg, Dev: lo.Dev})
			// A removed leg waits before it may come back.
			lm.nextTry = now.Add(w.cfg.ReaddDelay)
			lm.backoff = 0

		case member:
			lm.failReported = false
			if lm.pending && mb.Has("in_sync") && a.SyncAction == "idle" {
				lm.pending = false
				bytes := int64(lo.WriteSectors-lm.base) * 512
				if lo.WriteSectors < lm.base {
					bytes = 0
				}
				w.event(r, now, d, a, Note{Event: channel.EventResyncDone, Leg: leg.ID(),
					Detail: fmt.Sprintf("%s is in sync after %s; resync_bytes counts the sectors written to %s since (/sys/block/%s/stat), superblock and bitmap updates included", lo.Dev, lm.kind, lo.Dev, lo.Dev)})
				r.Events[len(r.Events)-1].ResyncBytes = bytes
			}
			if leg.Known && leg.Stale && !w.wiped[leg.Serial] {
				othersInSync := inSync
				if mb.Has("in_sync") {
					othersInSync--
				}
				if othersInSync > 0 {
					r.Actions = append(r.Actions, Action{Kind: ActWipeAdd, Disk: d.Name, MD: d.MD, Leg: leg, Dev: lo.Dev, Member: true})
					continue
				}
				w.report(r, now, d, a, lm, leg, channel.EventLeftOut,
					fmt.Sprintf("the host marks %s stale, but it is the only in-sync leg of %s: not wiped", lo.Dev, d.MD))
			}
			r.Actions = append(r.Actions, flagActions(d, leg, lo.Dev, mb)...)

		case lo.Dev == "":
			lm.pending = false

		default: // present, not a member
			lm.pending = false
			w.outOfArray(now, d, o, a, m, lm, leg, lo, r)
		}
	}
	// Members that are none of the disk's legs (a stray spare): faulty ones
	// are still removed.
	for _, mb := range a.Members {
		if !known[mb.Dev] && mb.Has("faulty") {
			r.Actions = append(r.Actions, Action{Kind: ActRemove, Disk: d.Name, MD: d.MD, Dev: mb.Dev})
		}
	}

	// Scrubs: on request, or every CheckEvery; only a whole, idle array.
	if w.cfg.CheckEvery > 0 && m.nextCheck.IsZero() {
		m.nextCheck = now.Add(w.cfg.CheckEvery)
	}
	due := m.checkRequest || (w.cfg.CheckEvery > 0 && !now.Before(m.nextCheck))
	if due && !m.checking {
		switch {
		case a.Degraded > 0:
			if m.checkRequest {
				note(channel.EventError, "", fmt.Sprintf("check of %s not started: the array is degraded", d.MD))
			}
			m.checkRequest = false
		case a.SyncAction == "idle":
			r.Actions = append(r.Actions, Action{Kind: ActCheck, Disk: d.Name, MD: d.MD})
			m.checkRequest = false
			m.checking = true
			if w.cfg.CheckEvery > 0 {
				m.nextCheck = now.Add(w.cfg.CheckEvery)
			}
		}
		// Busy (resync, recovery): the request waits.
	}

	m.seen = true
	m.degraded = a.Degraded
	m.syncAction = a.SyncAction
	w.state(now, d, o, m, r)
}

// outOfArray decides about a present leg that is not in the running array.
func (w *Watcher) outOfArray(now time.Time, d DiskSpec, o DiskObs, a md.Array, m *diskMem, lm *legMem, leg LegSpec, lo LegObs, r *StepResult) {
	act := func(k ActionKind) {
		r.Actions = append(r.Actions, Action{Kind: k, Disk: d.Name, MD: d.MD, Leg: leg, Dev: lo.Dev})
	}
	if !lo.Readable || lo.SuperErr != nil || now.Before(lm.nextTry) {
		return
	}
	if lo.Super == nil {
		act(ActAdd) // blank: a full resync
		return
	}
	if leg.Known && leg.Stale && !w.wiped[leg.Serial] {
		act(ActWipeAdd)
		return
	}
	as := o.ArraySuper
	xs := lo.Super
	switch {
	case as == nil:
		// No in-sync member to compare with (the array is being
		// rebuilt from nothing?): wait.
	case xs.ArrayUUID != as.ArrayUUID:
		w.report(r, now, d, a, lm, leg, channel.EventLeftOut,
			fmt.Sprintf("%s belongs to another array (%s %q); the host must mark it stale to reuse it", lo.Dev, xs.ArrayUUID, xs.Name))
	case xs.Slot < 0:
		act(ActAdd) // a spare holds nothing
	case w.wiped[leg.Serial]:
		// We wiped it under this stale mark: whatever it holds came from
		// this array's resync, so finishing through the bitmap is safe.
		act(ActReAdd)
	case diverged(a, as, xs):
		w.report(r, now, d, a, lm, leg, channel.EventSplit,
			fmt.Sprintf("%s (events %d, array state %s) ran without the array's legs (events %d): not re-added; the host must mark it stale", lo.Dev, xs.Events, xs.ArrayState, as.Events))
	default:
		act(ActReAdd)
	}
}

// diverged says whether a leg's superblock shows it ran without the
// array's in-sync members (split brain), or is ahead of the array.
func diverged(a md.Array, as, xs *md.Super) bool {
	if xs.Events > as.Events {
		return true
	}
	for _, mb := range a.Members {
		if mb.Has("in_sync") && !mb.Has("faulty") && mb.Slot >= 0 && !xs.ActiveIn(mb.Slot) {
			return true
		}
	}
	return xs.Slot == as.Slot
}

// report sends a left-out/split event once per leg and event word (until
// the leg is added again).
func (w *Watcher) report(r *StepResult, now time.Time, d DiskSpec, a md.Array, lm *legMem, leg LegSpec, ev, detail string) {
	if lm.reported == ev {
		return
	}
	lm.reported = ev
	w.event(r, now, d, a, Note{Event: ev, Leg: leg.ID(), Detail: detail})
}

// Reported records that assembly already reported event (split,
// left-out) for a leg, so the Watcher does not say it again.
func (w *Watcher) Reported(disk, serial, event string) {
	w.disk(disk).leg(serial).reported = event
}

// flagActions sets a member's flags from the host's view: the leg remote
// from the host is write-mostly (reads stay local) and failfast (a dead
// path costs seconds, not md's retries); the local leg, and every leg
// without host info, is neither.
func flagActions(d DiskSpec, leg LegSpec, dev string, mb md.Member) []Action {
	remote := leg.Known && !leg.Local
	var out []Action
	for _, f := range []struct{ have, set string }{{"write_mostly", "writemostly"}, {"failfast", "failfast"}} {
		has := mb.Has(f.have)
		switch {
		case remote && !has:
			out = append(out, Action{Kind: ActSetState, Disk: d.Name, MD: d.MD, Leg: leg, Dev: dev, Word: f.set})
		case !remote && has:
			out = append(out, Action{Kind: ActSetState, Disk: d.Name, MD: d.MD, Leg: leg, Dev: dev, Word: "-" + f.set})
		}
	}
	return out
}

// Done tells the Watcher how an action went, at now; before is the
// action's leg's write-sector count when it started (resync_bytes).
func (w *Watcher) Done(now time.Time, a Action, before uint64, err error) {
	m := w.disk(a.Disk)
	var lm *legMem
	if a.Leg.Serial != "" {
		lm = m.leg(a.Leg.Serial)
	}
	if err != nil {
		switch a.Kind {
		case ActAssemble:
			m.assembleDelay = w.grow(m.assembleDelay)
			m.nextAssemble = now.Add(m.assembleDelay)
		case ActReAdd, ActAdd, ActWipeAdd:
			if lm != nil {
				lm.backoff = w.grow(lm.backoff)
				lm.nextTry = now.Add(lm.backoff)
			}
		case ActCheck:
			m.checking = false
		}
		return
	}
	if lm == nil {
		return
	}
	switch a.Kind {
	case ActReAdd, ActAdd, ActWipeAdd:
		lm.pending, lm.base, lm.backoff = true, before, 0
		lm.kind = map[ActionKind]string{ActReAdd: "a bitmap re-add", ActAdd: "being added blank", ActWipeAdd: "a wipe and full resync"}[a.Kind]
		lm.reported = ""
		if a.Kind == ActWipeAdd || (a.Kind == ActAdd && a.Leg.Stale) {
			w.wiped[a.Leg.Serial] = true
		}
	}
}

// Created tells the Watcher an array was just created on legs (serial →
// write sectors before): their initial resync is reported when done.
func (w *Watcher) Created(disk string, before map[string]uint64) {
	m := w.disk(disk)
	for s, b := range before {
		lm := m.leg(s)
		lm.pending, lm.base, lm.kind = true, b, "the initial resync"
	}
}

func (w *Watcher) grow(d time.Duration) time.Duration {
	if d <= 0 {
		d = w.cfg.ReaddDelay
		if d <= 0 {
			d = time.Second
		}
	} else {
		d *= 2
	}
	if w.cfg.ReaddMaxBackoff > 0 && d > w.cfg.ReaddMaxBackoff {
		d = w.cfg.ReaddMaxBackoff
	}
	return d
}

// State renders a disk's state message.
func State(now time.Time, d DiskSpec, o DiskObs) channel.State {
	a := o.Array
	s := channel.State{
		Type: channel.TypeState, Time: channel.Timestamp(now), Disk: d.Name, MD: d.MD,
		ArrayState: a.ArrayState, Degraded: a.Degraded, SyncAction: a.SyncAction,
		SyncCompleted: a.SyncCompleted, MismatchCnt: a.MismatchCnt, ArrayBytes: a.Bytes,
		Legs: []channel.LegState{},
	}
	if f, ok := md.ParseSyncCompleted(a.SyncCompleted); ok && a.SyncAction != "idle" {
		s.Progress = f
	}
	for i, leg := range d.Legs {
		ls := channel.LegState{Node: leg.Node, Serial: leg.Serial, State: channel.LegMissing, Flags: []string{}}
		if i < len(o.Legs) && o.Legs[i].Dev != "" {
			ls.Dev = o.Legs[i].Dev
			ls.State = channel.LegOut
			if mb, ok := a.Member(ls.Dev); ok && a.Running {
				for _, word := range []string{"faulty", "in_sync", "spare"} {
					if mb.Has(word) {
						ls.State = word
						break
					}
				}
				for _, f := range []string{"write_mostly", "failfast"} {
					if mb.Has(f) {
						ls.Flags = append(ls.Flags, f)
					}
				}
			}
		}
		s.Legs = append(s.Legs, ls)
	}
	return s
}

// state queues the disk's state message if it changed (progress and the
// time aside: those ride on the heartbeat) or the heartbeat is due.
func (w *Watcher) state(now time.Time, d DiskSpec, o DiskObs, m *diskMem, r *StepResult) {
	s := State(now, d, o)
	cmp := func(x channel.State) channel.State {
		x.Time, x.Progress, x.SyncCompleted = "", 0, ""
		return x
	}
	if !reflect.DeepEqual(cmp(s), cmp(m.last)) || now.Sub(m.lastSent) >= w.cfg.Heartbeat {
		r.States = append(r.States, s)
		m.last, m.lastSent = s, now
	}
}
