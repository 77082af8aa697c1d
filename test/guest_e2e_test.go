package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/guestraid/image"
	"github.com/mhcodi/mhcodi/test/cluster"
	"github.com/mhcodi/mhcodi/test/guesttest"
)

// Sizes of the end-to-end guest: a small disk, so the first resync and
// the full resync of a stale leg take seconds under TCG, and a workload
// region that the bitmap's chunks cover a few times.
const (
	e2eDiskSize   = 64 * configs.MiB
	e2eRegionSize = 8 << 20
)

// guestImage builds the guest image (or finds it up to date) from bin/.
func guestImage(t *testing.T) image.Result {
	t.Helper()
	for _, b := range image.Binaries {
		binary(t, b.Name)
	}
	res, err := guesttest.BuildImage(t.Context(), t.Logf)
	require.NoError(t, err)
	return res
}

// mirrorCluster is two storage nodes and one guest "demo" whose disk root
// is mirrored on both, with the workload writing to md0.
func mirrorCluster(t *testing.T, img image.Result) *cluster.Cluster {
	return cluster.NewT(t, guesttest.MirrorOptions(img, e2eDiskSize,
		fmt.Sprintf("mhcodi.workload=write mhcodi.workload.size=%dM", e2eRegionSize>>20), nil))
}

// TestGuestMirror is the heart of the model: a guest on node-a writes a
// checksummed pattern to md0, mirrored on a local leg and a leg on node-b;
// node-b's targetd dies and comes back while the guest writes.
func TestGuestMirror(t *testing.T) {
	img := guestImage(t)
	c := mirrorCluster(t, img)
	a, b := c.Host("node-a"), c.Host("node-b")
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	_, err := a.StartTargetd(ctx)
	require.NoError(t, err)
	_, err = b.StartTargetd(ctx)
	require.NoError(t, err)

	g, err := guesttest.Start(ctx, c, a, "demo", guesttest.Options{Epoch: 1, Logf: t.Logf})
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("guest console:\n%s", tail(g.Console(), 60))
		}
	})

	// First boot: the array is created and fully synced.
	wait := func(d time.Duration) (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, d) }
	wctx, wcancel := wait(3 * time.Minute)
	_, next, err := g.WaitEvent(wctx, 0, "root", channel.EventCreated)
	require.NoError(t, err)
	st, next, err := g.WaitState(wctx, next, "root", guesttest.Healthy)
	wcancel()
	require.NoError(t, err, "the new mirror never became healthy")
	require.Len(t, st.Legs, 2)
	for _, l := range st.Legs {
		if l.Node == "node-b" {
			assert.ElementsMatch(t, []string{"failfast", "write_mostly"}, l.Flags, "the remote leg")
		} else {
			assert.Empty(t, l.Flags, "the local leg is the read leg")
		}
	}
	arrayBytes := st.ArrayBytes

	// Kill node-b's targetd: md drops the leg, the guest sees no error.
	time.Sleep(3 * time.Second) // the workload writes
	killed := time.Now()
	require.NoError(t, b.KillTargetd())
	wctx, wcancel = wait(60 * time.Second)
	st, next, err = g.WaitState(wctx, next, "root", func(s *channel.State) bool { return s.Degraded > 0 })
	wcancel()
	require.NoError(t, err, "md did not drop the dead leg")
	degradedAfter := time.Since(killed)
	t.Logf("md degraded %.1f s after node-b's targetd was killed (state %s)", degradedAfter.Seconds(), st.ArrayState)
	assert.Less(t, degradedAfter, 30*time.Second, "degraded within 30 s")

	// The guest keeps writing while node-b is down: those are the dirty
	// regions the bitmap records.
	time.Sleep(5 * time.Second)
	before := len(g.WorkloadLines("progress"))
	revived := time.Now()
	_, err = b.StartTargetd(ctx)
	require.NoError(t, err)
	wctx, wcancel = wait(2 * time.Minute)
	readd, next, err := g.WaitEvent(wctx, next, "root", channel.EventReAdd)
	require.NoError(t, err, "guestraid did not re-add the returning leg")
	done, next, err := g.WaitEvent(wctx, next, "root", channel.EventResyncDone)
	require.NoError(t, err, "the resync did not finish")
	_, next, err = g.WaitState(wctx, next, "root", guesttest.Healthy)
	wcancel()
	require.NoError(t, err)
	t.Logf("leg re-added %.1f s after targetd came back; bitmap dirty %d bytes, resync wrote %d bytes, array %d bytes (%s; %s)",
		time.Since(revived).Seconds(), readd.DirtyBytes, done.ResyncBytes, arrayBytes, readd.Detail, done.Detail)
	// What the resync wrote to the returning leg is the measure: the
	// on-disk bitmap that mdadm -X reads lags md's own (bits are cleared
	// lazily, and not at all while degraded), so dirty_bytes may count
	// chunks md no longer copies.
	assert.Positive(t, readd.DirtyBytes)
	assert.Positive(t, done.ResyncBytes)
	assert.Less(t, done.ResyncBytes, arrayBytes/2, "only dirty regions, not the whole disk")
	assert.Greater(t, len(g.WorkloadLines("progress")), before, "the workload kept writing")

	// A scrub finds the legs identical.
	require.NoError(t, g.Send(channel.Check{Type: channel.TypeCheck, Disk: "root"}))
	wctx, wcancel = wait(2 * time.Minute)
	_, next, err = g.WaitEvent(wctx, next, "root", channel.EventCheckDone)
	require.NoError(t, err)
	st, _, err = g.WaitState(wctx, next, "root", func(s *channel.State) bool { return s.SyncAction == "idle" })
	wcancel()
	require.NoError(t, err)
	assert.Zero(t, st.MismatchCnt, "mismatch_cnt after check")

	assert.Empty(t, g.WorkloadLines("ioerror"), "the guest saw I/O errors")

	// Stop (ACPI): the workload stops cleanly, the arrays stop, and both
	// legs on the hosts hold the same data, which verifies.
	require.NoError(t, g.Stop(ctx, 90*time.Second))
	stopped := g.WorkloadLines("stopped")
	require.NotEmpty(t, stopped, "the workload did not report its stop")
	assert.EqualValues(t, 0, stopped[len(stopped)-1]["errors"])
	rep, err := guesttest.CompareLegs(c.Config, "demo", "root", e2eRegionSize)
	require.NoError(t, err)
	assert.Equal(t, int64(-1), rep.FirstDiff, "the legs differ at byte %d of the data area", rep.FirstDiff)
	for node, s := range rep.Verify {
		assert.True(t, s.OK(), "pattern on %s's leg: %+v", node, s)
		assert.Positive(t, s.Gen, "pattern on %s's leg", node)
	}
	t.Logf("legs identical; pattern generation %d, cursor %d of %d blocks", rep.Verify["node-a"].Gen, rep.Verify["node-a"].Cursor, rep.RegionBlocks)

	// Second boot: the array is assembled, not created. Then the host
	// marks node-b's leg stale (as fencing does when another runner may
	// have written it): it is wiped and resynced in full, never re-added
	// through the bitmap.
	g, err = guesttest.Start(ctx, c, a, "demo", guesttest.Options{Epoch: 2, Logf: t.Logf})
	require.NoError(t, err)
	wctx, wcancel = wait(3 * time.Minute)
	defer wcancel()
	_, next, err = g.WaitEvent(wctx, 0, "root", channel.EventAssembled)
	require.NoError(t, err, "the second boot did not assemble the existing array")
	_, next, err = g.WaitState(wctx, next, "root", guesttest.Healthy)
	require.NoError(t, err)
	require.NoError(t, g.MarkStale(c, 3, map[string]bool{"node-b": true}))
	_, next, err = g.WaitEvent(wctx, next, "root", channel.EventWipe)
	require.NoError(t, err, "the stale leg was not wiped")
	full, next, err := g.WaitEvent(wctx, next, "root", channel.EventResyncDone)
	require.NoError(t, err)
	_, _, err = g.WaitState(wctx, next, "root", guesttest.Healthy)
	require.NoError(t, err)
	t.Logf("stale leg: wiped and resynced in full: %d bytes written for a %d-byte array (%s)", full.ResyncBytes, arrayBytes, full.Detail)
	assert.GreaterOrEqual(t, full.ResyncBytes, arrayBytes, "a full resync writes the whole array")
	for _, m := range g.Messages() {
		if e, ok := m.(*channel.Event); ok {
			assert.NotEqual(t, channel.EventReAdd, e.Event, "a stale leg must never be re-added through the bitmap")
		}
	}
	require.NoError(t, g.Stop(ctx, 90*time.Second))
	rep, err = guesttest.CompareLegs(c.Config, "demo", "root", e2eRegionSize)
	require.NoError(t, err)
	assert.Equal(t, int64(-1), rep.FirstDiff, "after the full resync the legs differ at byte %d", rep.FirstDiff)
	assert.Empty(t, g.WorkloadLines("ioerror"), "the guest saw I/O errors")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
