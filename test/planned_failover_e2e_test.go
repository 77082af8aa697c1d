package test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/test/cluster"
)

// plannedMoves is how many times TestFencingPlannedFailover moves the
// guest (both ways, alternating): the defect it guards against (issue 12)
// showed in 13 of 16 tries, so four moves catch it almost surely.
const plannedMoves = 4

// TestFencingPlannedFailover: two storage hosts and a witness, automatic
// failover on, both nodes up. `mhcodi guest failover demo --to <other>`
// moves the guest back and forth: every move stops the old copy cleanly
// (ACPI: the workload reports its stop), never has the old owner's fenced
// destroy it as foreign, starts it on the other node, and the guest
// writes again there. At the end the legs are identical, the pattern
// verifies and no LUN had two writers in one epoch.
func TestFencingPlannedFailover(t *testing.T) {
	fencingBinaries(t)
	img := guestImage(t)
	c := fencingCluster(t, img, true, "auto_failover: true")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	r := startFencing(t, ctx, c)

	r.startGuest(ctx, r.a)
	g := r.attach(ctx, r.a, 30*time.Second)
	r.waitHealthy(ctx, r.a, 3*time.Minute)
	rec, err := record(ctx, r.a)
	require.NoError(t, err)
	epoch := rec.Epoch

	from, to := r.a, r.b
	for move := 1; move <= plannedMoves; move++ {
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		_, err := g.WaitProgress(wctx, 1)
		wcancel()
		require.NoError(t, err, "move %d: the guest does not write on %s", move, from.Name)

		logAt := logSize(t, from)
		begin := time.Now()
		res := r.cli(ctx, to, "guest", "failover", "demo", "--to", to.Name)
		require.Zero(t, res.Code, "move %d: mhcodi guest failover demo --to %s: %s", move, to.Name, res)

		gctx, gcancel := context.WithTimeout(ctx, time.Minute)
		_, err = g.WaitGone(gctx)
		gcancel()
		require.NoError(t, err, "move %d: the guest still runs on %s", move, from.Name)
		assert.NotEmpty(t, g.WorkloadLines("stopped"),
			"move %d: the copy on %s was not stopped cleanly (no ACPI stop reached the workload: destroyed?)", move, from.Name)
		assert.NotContains(t, logSince(t, from, logAt), "destroyed a guest that must not run here",
			"move %d: %s's fenced destroyed the guest on its own", move, from.Name)

		g = r.attach(ctx, to, 30*time.Second)
		wctx, wcancel = context.WithTimeout(ctx, 2*time.Minute)
		writing, err := g.WaitProgress(wctx, 0)
		wcancel()
		require.NoError(t, err, "move %d: the guest does not write on %s", move, to.Name)
		t.Logf("FIGURE planned_failover_s=%.1f: move %d, %s → %s, from the command to the guest writing again (command %.1f s)",
			writing.Sub(begin).Seconds(), move, from.Name, to.Name, res.Took.Seconds())

		rec, err = record(ctx, to)
		require.NoError(t, err)
		assert.Equal(t, to.Name, rec.Owner, "move %d", move)
		assert.Greater(t, rec.Epoch, epoch, "move %d: a new owner means a new epoch", move)
		assert.Empty(t, rec.Stale, "move %d: a planned move with both nodes up marks no leg stale", move)
		epoch = rec.Epoch
		r.waitHealthy(ctx, to, 2*time.Minute)
		from, to = to, from
	}
	assert.Empty(t, g.WorkloadLines("ioerror"), "the guest saw I/O errors")

	r.stopAndCompare(ctx, from, g)
	rep := r.checkWrites()
	other := r.b
	if from == r.b {
		other = r.a
	}
	// The remote leg of the final owner took its writes at the final
	// epoch from the final owner only.
	checkOwners(t, rep, c, map[string]string{other.Name: from.Name}, epoch)
}

// logSize is how long h's fenced log is now.
func logSize(t *testing.T, h *cluster.Host) int {
	t.Helper()
	return len(logSince(t, h, 0))
}

// logSince is h's fenced log from byte off on.
func logSince(t *testing.T, h *cluster.Host, off int) string {
	t.Helper()
	b, err := os.ReadFile(h.LogPath(cluster.FencedName))
	require.NoError(t, err)
	return string(b[off:])
}
