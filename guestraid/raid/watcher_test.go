package raid

import (
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/guestraid/md"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// host is demo on node (node-a or node-b), with the stale legs' nodes.
func host(node string, epoch uint64, stale ...string) *channel.Host {
	isStale := map[string]bool{}
	for _, s := range stale {
		isStale[s] = true
	}
	return &channel.Host{Type: "host", Guest: "demo", Node: node, Epoch: epoch, Disks: []channel.Disk{{Name: "root", Legs: []channel.Leg{
		{Node: "node-a", Serial: "SA", Local: node == "node-a", Stale: isStale["node-a"]},
		{Node: "node-b", Serial: "SB", Local: node == "node-b", Stale: isStale["node-b"]},
	}}}}
}

func member(dev string, slot int, state ...string) md.Member {
	return md.Member{Dev: dev, Slot: slot, State: state}
}

// running is md0 running with members.
func running(degraded int, sync string, members ...md.Member) md.Array {
	return md.Array{Name: "md0", Running: true, ArrayState: "clean", Degraded: degraded, RaidDisks: 2,
		SyncAction: sync, SyncCompleted: "none", Bytes: 256 << 20, BitmapChunk: 1 << 20, Members: members}
}

func legs(l ...LegObs) []LegObs { return l }

func in(dev string, sectors uint64) LegObs {
	return LegObs{Dev: dev, Readable: true, WriteSectors: sectors}
}

func out(dev string, s *md.Super, sectors uint64) LegObs {
	return LegObs{Dev: dev, Readable: true, Super: s, WriteSectors: sectors}
}

func kinds(as []Action) []string {
	var out []string
	for _, a := range as {
		s := a.Kind.String() + " " + a.Dev
		if a.Word != "" {
			s += " " + a.Word
		}
		out = append(out, s)
	}
	return out
}

func words(evs []channel.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Event)
	}
	return out
}

func newWatcher(h *channel.Host) *Watcher {
	return NewWatcher(Config{ReaddDelay: 5 * time.Second, ReaddMaxBackoff: time.Minute, Heartbeat: 5 * time.Second}, h, nil)
}

// whole is md0 with vda local and vdb write-mostly/failfast: nothing to do.
func whole() DiskObs {
	return DiskObs{
		Array: running(0, "idle", member("vda", 0, "in_sync"), member("vdb", 1, "in_sync", "write_mostly", "failfast")),
		Legs:  legs(in("vda", 100), in("vdb", 100)),
	}
}

func TestWatcherQuietArray(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	r := w.Step(t0, []DiskObs{whole()})
	assert.Empty(t, r.Actions)
	assert.Empty(t, r.Events)
	require.Len(t, r.States, 1)
	st := r.States[0]
	assert.Equal(t, "md0", st.MD)
	assert.Equal(t, []channel.LegState{
		{Node: "node-a", Serial: "SA", Dev: "vda", State: "in_sync", Flags: []string{}},
		{Node: "node-b", Serial: "SB", Dev: "vdb", State: "in_sync", Flags: []string{"write_mostly", "failfast"}},
	}, st.Legs)

	// No change: no state until the heartbeat.
	assert.Empty(t, w.Step(t0.Add(time.Second), []DiskObs{whole()}).States)
	assert.Len(t, w.Step(t0.Add(5*time.Second), []DiskObs{whole()}).States, 1)
}

func TestWatcherFlagsFollowTheHost(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	// Fresh array: no flags yet.
	o := DiskObs{Array: running(0, "idle", member("vda", 0, "in_sync"), member("vdb", 1, "in_sync")), Legs: legs(in("vda", 0), in("vdb", 0))}
	r := w.Step(t0, []DiskObs{o})
	assert.Equal(t, []string{"set-state vdb writemostly", "set-state vdb failfast"}, kinds(r.Actions))

	// Failover to node-b: vdb becomes the read leg, vda the remote one.
	notes := w.SetHost(host("node-b", 2))
	assert.Equal(t, channel.EventHost, notes[0].Event)
	r = w.Step(t0.Add(time.Second), []DiskObs{whole()})
	assert.Equal(t, []string{"set-state vda writemostly", "set-state vda failfast", "set-state vdb -writemostly", "set-state vdb -failfast"}, kinds(r.Actions))
}

func TestWatcherNoHostInfoClearsFlags(t *testing.T) {
	w := NewWatcher(DefaultConfig(), nil, []DiskSpec{{Name: "demo-root", MD: "md0", Legs: []LegSpec{{Serial: "SA"}, {Serial: "SB"}}}})
	r := w.Step(t0, []DiskObs{whole()})
	assert.Equal(t, []string{"set-state vdb -writemostly", "set-state vdb -failfast"}, kinds(r.Actions))
	assert.Equal(t, "SB", r.States[0].Legs[1].Serial)
}

func TestWatcherFaultyRemovedReturnsReAdded(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	w.Step(t0, []DiskObs{whole()})

	// md fails vdb.
	o := DiskObs{Array: running(1, "idle", member("vda", 0, "in_sync"), member("vdb", -1, "faulty", "write_mostly", "failfast")), Legs: legs(in("vda", 100), in("vdb", 100))}
	r := w.Step(t0.Add(1*time.Second), []DiskObs{o})
	assert.Equal(t, []string{"remove vdb"}, kinds(r.Actions))
	assert.Equal(t, []string{"degraded", "fail"}, words(r.Events))
	assert.Equal(t, "node-b", r.Events[1].Leg)
	w.Done(t0.Add(1*time.Second), r.Actions[0], 100, nil)

	// Removed, readable again, superblock current (it never ran without
	// vda), but the re-add delay has not passed.
	arraySuper := sb(0, 40, "A.")
	back := DiskObs{Array: running(1, "idle", member("vda", 0, "in_sync")), ArraySuper: arraySuper,
		Legs: legs(in("vda", 5000), out("vdb", sb(1, 30, "AA"), 100))}
	r = w.Step(t0.Add(2*time.Second), []DiskObs{back})
	assert.Empty(t, r.Actions)
	assert.Empty(t, r.Events, "degraded is reported once")
	assert.Equal(t, "out", r.States[0].Legs[1].State)

	r = w.Step(t0.Add(7*time.Second), []DiskObs{back})
	require.Equal(t, []string{"re-add vdb"}, kinds(r.Actions))
	w.Done(t0.Add(7*time.Second), r.Actions[0], 100, nil)

	// Recovery through the bitmap, then in sync: resync-done with the
	// sectors written to vdb meanwhile.
	rec := DiskObs{Array: running(1, "recover", member("vda", 0, "in_sync"), member("vdb", 1, "spare", "write_mostly", "failfast")), Legs: legs(in("vda", 5000), in("vdb", 1000))}
	r = w.Step(t0.Add(8*time.Second), []DiskObs{rec})
	assert.Empty(t, r.Actions)
	assert.Empty(t, r.Events)
	assert.Equal(t, "spare", r.States[0].Legs[1].State)

	done := whole()
	done.Legs[1].WriteSectors = 2148
	r = w.Step(t0.Add(9*time.Second), []DiskObs{done})
	require.Equal(t, []string{"resync-done"}, words(r.Events))
	assert.Equal(t, int64(2048*512), r.Events[0].ResyncBytes)
	assert.Equal(t, int64(256<<20), r.Events[0].ArrayBytes)
}

func TestWatcherReAddBacksOff(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	back := DiskObs{Array: running(1, "idle", member("vda", 0, "in_sync")), ArraySuper: sb(0, 40, "A."),
		Legs: legs(in("vda", 5000), out("vdb", sb(1, 30, "AA"), 100))}
	// Found out of the array at start: re-added at once.
	r := w.Step(t0, []DiskObs{back})
	require.Equal(t, []string{"re-add vdb"}, kinds(r.Actions))
	w.Done(t0, r.Actions[0], 0, assert.AnError)
	assert.Empty(t, w.Step(t0.Add(4*time.Second), []DiskObs{back}).Actions, "first retry after ReaddDelay")
	r = w.Step(t0.Add(5*time.Second), []DiskObs{back})
	require.Len(t, r.Actions, 1)
	w.Done(t0.Add(5*time.Second), r.Actions[0], 0, assert.AnError)
	assert.Empty(t, w.Step(t0.Add(14*time.Second), []DiskObs{back}).Actions, "then twice as long")
	assert.Len(t, w.Step(t0.Add(15*time.Second), []DiskObs{back}).Actions, 1)
}

func TestWatcherStaleWhileRunningIsWipedOnce(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	w.Step(t0, []DiskObs{whole()})

	// The host marks node-b stale (another runner may have written it).
	w.SetHost(host("node-a", 2, "node-b"))
	r := w.Step(t0.Add(time.Second), []DiskObs{whole()})
	require.Equal(t, []string{"wipe+add vdb"}, kinds(r.Actions))
	assert.True(t, r.Actions[0].Member)
	w.Done(t0.Add(time.Second), r.Actions[0], 100, nil)
	assert.Equal(t, []string{"SB"}, w.Wiped())

	// Resyncing in full, still marked stale: not wiped again.
	rec := DiskObs{Array: running(1, "recover", member("vda", 0, "in_sync"), member("vdb", 1, "spare", "write_mostly", "failfast")), Legs: legs(in("vda", 100), in("vdb", 50000))}
	assert.Empty(t, w.Step(t0.Add(2*time.Second), []DiskObs{rec}).Actions)
	done := whole()
	done.Legs[1].WriteSectors = 524388
	r = w.Step(t0.Add(3*time.Second), []DiskObs{done})
	assert.Empty(t, r.Actions)
	require.Equal(t, []string{"resync-done"}, words(r.Events))
	assert.Equal(t, int64(256<<20), r.Events[0].ResyncBytes)

	// The host clears the mark, then marks it again: wiped again.
	w.SetHost(host("node-a", 3))
	assert.Empty(t, w.Wiped())
	assert.Empty(t, w.Step(t0.Add(4*time.Second), []DiskObs{whole()}).Actions)
	w.SetHost(host("node-a", 4, "node-b"))
	assert.Equal(t, []string{"wipe+add vdb"}, kinds(w.Step(t0.Add(5*time.Second), []DiskObs{whole()}).Actions))
}

func TestWatcherNeverWipesTheLastInSyncLeg(t *testing.T) {
	w := newWatcher(host("node-a", 2, "node-a"))
	o := DiskObs{Array: running(1, "idle", member("vda", 0, "in_sync")), Legs: legs(in("vda", 100), LegObs{})}
	r := w.Step(t0, []DiskObs{o})
	assert.Empty(t, r.Actions)
	assert.Equal(t, []string{"degraded", "left-out"}, words(r.Events))
	assert.Empty(t, w.Step(t0.Add(time.Second), []DiskObs{o}).Events, "reported once")
}

func TestWatcherStaleLegOutOfTheArray(t *testing.T) {
	w := newWatcher(host("node-a", 2, "node-b"))
	o := DiskObs{Array: running(1, "idle", member("vda", 0, "in_sync")), ArraySuper: sb(0, 40, "A."),
		Legs: legs(in("vda", 100), out("vdb", sb(1, 30, ".A"), 0))}
	r := w.Step(t0, []DiskObs{o})
	assert.Equal(t, []string{"wipe+add vdb"}, kinds(r.Actions))
	assert.False(t, r.Actions[0].Member)
}

func TestWatcherSplitLoserIsLeftOut(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	o := DiskObs{Array: running(1, "idle", member("vdb", 1, "in_sync")), ArraySuper: sb(1, 30, ".A"),
		Legs: legs(out("vda", sb(0, 25, "A."), 0), in("vdb", 100))}
	r := w.Step(t0, []DiskObs{o})
	// Flags: vdb is the remote leg even while it is the only one.
	assert.Equal(t, []string{"set-state vdb writemostly", "set-state vdb failfast"}, kinds(r.Actions))
	assert.Equal(t, []string{"degraded", "split"}, words(r.Events))
	assert.Equal(t, "node-a", r.Events[1].Leg)
	r = w.Step(t0.Add(time.Second), []DiskObs{o})
	assert.NotContains(t, words(r.Events), "split", "reported once")
	assert.NotContains(t, kinds(r.Actions), "re-add vda")

	// The host decides: node-a is stale → wiped and added.
	w.SetHost(host("node-a", 2, "node-a"))
	assert.Contains(t, kinds(w.Step(t0.Add(2*time.Second), []DiskObs{o}).Actions), "wipe+add vda")
}

func TestWatcherBlankAndForeignLegs(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	foreign := sb(1, 3, "AA")
	foreign.ArrayUUID = "99999999:99999999:99999999:99999999"
	o := DiskObs{Array: running(1, "idle", member("vda", 0, "in_sync")), ArraySuper: sb(0, 40, "A."),
		Legs: legs(in("vda", 100), out("vdb", nil, 0))}
	assert.Equal(t, []string{"add vdb"}, kinds(w.Step(t0, []DiskObs{o}).Actions))

	w = newWatcher(host("node-a", 1))
	o.Legs[1].Super = foreign
	r := w.Step(t0, []DiskObs{o})
	assert.Empty(t, r.Actions)
	assert.Contains(t, words(r.Events), "left-out")

	// Unreadable: nothing at all.
	w = newWatcher(host("node-a", 1))
	o.Legs[1] = LegObs{Dev: "vdb"}
	assert.Empty(t, w.Step(t0, []DiskObs{o}).Actions)
}

func TestWatcherAssemblesAndBacksOff(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	stopped := DiskObs{Array: md.Array{Name: "md0", ArrayState: "inactive"}, Legs: legs(out("vda", nil, 0), LegObs{})}
	r := w.Step(t0, []DiskObs{stopped})
	require.Equal(t, []string{"assemble "}, kinds(r.Actions))
	assert.Equal(t, "inactive", r.States[0].ArrayState)
	w.Done(t0, r.Actions[0], 0, assert.AnError)
	assert.Empty(t, w.Step(t0.Add(time.Second), []DiskObs{stopped}).Actions)
	assert.Len(t, w.Step(t0.Add(5*time.Second), []DiskObs{stopped}).Actions, 1)

	// No leg at all: nothing to assemble.
	none := DiskObs{Array: md.Array{Name: "md0", ArrayState: "inactive"}, Legs: legs(LegObs{}, LegObs{})}
	assert.Empty(t, newWatcher(host("node-a", 1)).Step(t0, []DiskObs{none}).Actions)
}

// An array stopped while the watcher saw it run was stopped by someone on
// purpose: it is reported once and neither assembled again nor are its
// legs added anywhere, until it runs again.
func TestWatcherLeavesAStoppedArrayStopped(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	w.Step(t0, []DiskObs{whole()})
	stopped := DiskObs{Array: md.Array{Name: "md0"}, Legs: legs(out("vda", nil, 100), out("vdb", nil, 100))}
	r := w.Step(t0.Add(time.Second), []DiskObs{stopped})
	assert.Empty(t, r.Actions)
	assert.Equal(t, []string{"stopped"}, words(r.Events))
	assert.Contains(t, r.Events[0].Detail, "stays stopped")
	for i := 2; i < 60; i++ {
		r = w.Step(t0.Add(time.Duration(i)*time.Second), []DiskObs{stopped})
		assert.Empty(t, r.Actions)
		assert.Empty(t, r.Events)
	}

	// Assembled again (by the admin): watched as before, and a later stop
	// is reported again.
	assert.Empty(t, w.Step(t0.Add(time.Minute), []DiskObs{whole()}).Actions)
	assert.Equal(t, []string{"stopped"}, words(w.Step(t0.Add(61*time.Second), []DiskObs{stopped}).Events))
}

func TestWatcherCheck(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	assert.False(t, w.RequestCheck("data"))
	require.True(t, w.RequestCheck("root"))

	// Busy recovering: the request waits.
	busy := whole()
	busy.Array.SyncAction = "resync"
	assert.Empty(t, w.Step(t0, []DiskObs{busy}).Actions)
	r := w.Step(t0.Add(time.Second), []DiskObs{whole()})
	require.Equal(t, []string{"check "}, kinds(r.Actions))
	w.Done(t0.Add(time.Second), r.Actions[0], 0, nil)

	checking := whole()
	checking.Array.SyncAction = "check"
	assert.Empty(t, w.Step(t0.Add(2*time.Second), []DiskObs{checking}).Events)
	done := whole()
	done.Array.MismatchCnt = 128
	r = w.Step(t0.Add(3*time.Second), []DiskObs{done})
	require.Equal(t, []string{"check-done"}, words(r.Events))
	assert.Contains(t, r.Events[0].Detail, "mismatch_cnt 128")
	assert.Empty(t, r.Actions)

	// A degraded array is not checked.
	require.True(t, w.RequestCheck("root"))
	deg := DiskObs{Array: running(1, "idle", member("vda", 0, "in_sync")), Legs: legs(in("vda", 1), LegObs{})}
	r = w.Step(t0.Add(4*time.Second), []DiskObs{deg})
	assert.Contains(t, words(r.Events), "error")
	assert.NotContains(t, kinds(r.Actions), "check ")
}

func TestWatcherPeriodicCheck(t *testing.T) {
	w := NewWatcher(Config{CheckEvery: time.Hour, Heartbeat: time.Second}, host("node-a", 1), nil)
	assert.Empty(t, w.Step(t0, []DiskObs{whole()}).Actions)
	assert.Equal(t, []string{"check "}, kinds(w.Step(t0.Add(time.Hour), []DiskObs{whole()}).Actions))
}

func TestWatcherInitialResyncDone(t *testing.T) {
	w := newWatcher(host("node-a", 1))
	w.Created("root", map[string]uint64{"SA": 10, "SB": 10})
	resync := whole()
	resync.Array.SyncAction = "resync"
	resync.Array.SyncCompleted = "1024 / 524288"
	r := w.Step(t0, []DiskObs{resync})
	assert.Empty(t, r.Events)
	assert.InDelta(t, 1024.0/524288, r.States[0].Progress, 1e-9)
	done := whole()
	done.Legs[1].WriteSectors = 10 + 524288
	r = w.Step(t0.Add(time.Second), []DiskObs{done})
	assert.Equal(t, []string{"resync-done", "resync-done"}, words(r.Events))
	assert.Equal(t, int64(256<<20), r.Events[1].ResyncBytes)
}
