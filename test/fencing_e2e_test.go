package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/writecheck"
	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/guestraid/image"
	"github.com/mhcodi/mhcodi/test/cluster"
	"github.com/mhcodi/mhcodi/test/guesttest"
)

// The end-to-end tests of fencing (issue 6): a guest started by
// mhcodi-fenced through the CLI, its owner cut off the network, and
// targetd's write logs checked for a second writer in every one of them.
// Their figures are logged as "FIGURE name_s=value" lines, which
// test/cmd/failover-figures collects over several runs.

// fencingBinaries fails (never skips) when a binary the fencing tests run
// is not in bin/: these tests are part of make test.
func fencingBinaries(t *testing.T) {
	t.Helper()
	for _, b := range []string{"mhcodi", "mhcodi-targetd", "mhcodi-bridge", "mhcodi-fenced"} {
		binary(t, b)
	}
}

// fencingCluster is mirrorCluster with fencing: certificates, the
// fencing lines, and a witness when asked (quorum mode).
func fencingCluster(t *testing.T, img image.Result, witness bool, fencing ...string) *cluster.Cluster {
	o := guesttest.MirrorOptions(img, e2eDiskSize,
		fmt.Sprintf("mhcodi.workload=write mhcodi.workload.size=%dM", e2eRegionSize>>20), nil)
	o.Witness = witness
	o.TLS = true
	o.Fencing = fencing
	// MHCODI_KEEP_CLUSTER=1 keeps the cluster's directory (daemon logs,
	// write logs, consoles) for a post-mortem.
	o.Keep = os.Getenv("MHCODI_KEEP_CLUSTER") != ""
	return cluster.NewT(t, o)
}

// fencingRun is one scenario's cluster with its daemons running.
type fencingRun struct {
	t    *testing.T
	c    *cluster.Cluster
	a, b *cluster.Host
	// guests are the attached guests, for the failure dump.
	mu     sync.Mutex
	guests []*guesttest.Guest
}

// startFencing starts targetd on the storage hosts and fenced on every
// host, at once: an embedded etcd member waits for its peers.
func startFencing(t *testing.T, ctx context.Context, c *cluster.Cluster) *fencingRun {
	r := &fencingRun{t: t, c: c, a: c.Host("node-a"), b: c.Host("node-b")}
	for _, h := range []*cluster.Host{r.a, r.b} {
		_, err := h.StartTargetd(ctx)
		require.NoError(t, err)
	}
	start := time.Now()
	require.NoError(t, c.StartFencedAll(ctx, time.Minute))
	t.Logf("fenced answers on every node, its ledger with quorum, %.1f s after it was started", time.Since(start).Seconds())
	t.Cleanup(func() {
		// Teardown tracks them too; this covers a failure before any
		// Attach (a guest fenced started that the test never saw).
		for _, h := range c.Hosts() {
			_, _ = h.TrackGuests()
		}
		if t.Failed() {
			r.dump()
		}
	})
	return r
}

// cli runs mhcodi on h and logs what it said.
func (r *fencingRun) cli(ctx context.Context, h *cluster.Host, args ...string) cluster.CLIResult {
	r.t.Helper()
	res, err := h.CLI(ctx, args...)
	require.NoError(r.t, err)
	if strings.Contains(res.Stderr, "not implemented yet") {
		r.t.Fatalf("bin/mhcodi has no `%s` yet: run `make build` once it is in cmd/mhcodi\n%s", strings.Join(args, " "), res)
	}
	r.t.Logf("%s$ mhcodi %s → exit %d in %.1f s\n%s%s", h.Name, strings.Join(args, " "), res.Code, res.Took.Seconds(),
		indent(res.Stdout), indent(res.Stderr))
	return res
}

// startGuest starts demo on h with mhcodi guest start, as the sysadmin
// does once the cluster is up. A fenced whose ledger has quorum may not
// hold its own lease yet ("lease is not fresh"): the start is refused
// after the ledger and the fences were written, and the hint says to run
// it again, which is what this does, for up to 30 s.
func (r *fencingRun) startGuest(ctx context.Context, h *cluster.Host) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := r.cli(ctx, h, "guest", "start", "demo")
		if res.Code == 0 {
			return
		}
		if !strings.Contains(res.Stderr, "lease is not fresh") || time.Now().After(deadline) {
			r.t.Fatalf("mhcodi guest start: %s", res)
		}
		select {
		case <-ctx.Done():
			r.t.Fatalf("mhcodi guest start: %v", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// attach follows the guest on h once its qemu runs there.
func (r *fencingRun) attach(ctx context.Context, h *cluster.Host, d time.Duration) *guesttest.Guest {
	r.t.Helper()
	actx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	g, err := guesttest.Attach(actx, r.c, h, "demo")
	require.NoError(r.t, err, "the guest never ran on %s", h.Name)
	r.mu.Lock()
	r.guests = append(r.guests, g)
	r.mu.Unlock()
	return g
}

// status asks h's fenced for its node status through the local socket.
func status(ctx context.Context, h *cluster.Host) (api.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return api.NewUnixClient(h.Name, h.FencedSocket()).NodeStatus(ctx)
}

// record reads demo's ledger record as h's fenced sees it.
func record(ctx context.Context, h *cluster.Host) (ledger.Record, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l, err := api.NewUnixClient(h.Name, h.FencedSocket()).Ledger(ctx)
	if err != nil {
		return ledger.Record{}, err
	}
	for _, rec := range l.Records {
		if rec.Guest == "demo" {
			return rec, nil
		}
	}
	return ledger.Record{}, fmt.Errorf("%s's ledger has no record of demo", h.Name)
}

// waitHealthy waits until h's fenced reports demo's mirror healthy (both
// legs in sync: the other node's leg holds every write, so failing over
// to it loses nothing).
func (r *fencingRun) waitHealthy(ctx context.Context, h *cluster.Host, d time.Duration) channel.State {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last string
	for {
		st, err := status(ctx, h)
		if err == nil {
			if s, ok := st.Legs["demo"]["root"]; ok {
				if guesttest.Healthy(&s) {
					return s
				}
				last = guesttest.Describe(&s)
			} else {
				last = "no state of demo/root yet"
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			r.t.Fatalf("demo's mirror never became healthy on %s: %v (last: %s)", h.Name, ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// checkWrites runs the never-two-writers checker on both targetds' logs.
func (r *fencingRun) checkWrites() writecheck.Report {
	r.t.Helper()
	rep, err := writecheck.CheckDirs(r.a.StateDir(), r.b.StateDir())
	require.NoError(r.t, err)
	r.t.Logf("never two writers: %s", rep)
	assert.True(r.t, rep.OK(), "targetd accepted a second writer:\n%s", rep)
	return rep
}

// stopAndCompare stops demo through h's fenced and compares its legs on
// the hosts: identical, and the workload's pattern verifies on both.
func (r *fencingRun) stopAndCompare(ctx context.Context, h *cluster.Host, g *guesttest.Guest) {
	r.t.Helper()
	res := r.cli(ctx, h, "guest", "stop", "demo")
	require.Zero(r.t, res.Code, "mhcodi guest stop: %s", res)
	gctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	_, err := g.WaitGone(gctx)
	require.NoError(r.t, err)
	stopped := g.WorkloadLines("stopped")
	require.NotEmpty(r.t, stopped, "the workload did not report its stop (a clean ACPI stop)")
	assert.EqualValues(r.t, 0, stopped[len(stopped)-1]["errors"])
	rep, err := guesttest.CompareLegs(r.c.Config, "demo", "root", e2eRegionSize)
	require.NoError(r.t, err)
	assert.Equal(r.t, int64(-1), rep.FirstDiff, "the legs differ at byte %d of the data area", rep.FirstDiff)
	for node, s := range rep.Verify {
		assert.True(r.t, s.OK(), "pattern on %s's leg: %+v", node, s)
		assert.Positive(r.t, s.Gen, "pattern on %s's leg", node)
	}
	r.t.Logf("legs identical and verified; pattern generation %d, cursor %d of %d blocks",
		rep.Verify[h.Name].Gen, rep.Verify[h.Name].Cursor, rep.RegionBlocks)
}

// waitFullResync waits on g's console for the leg on node to be wiped and
// resynced in full (a stale leg is never re-added through the bitmap).
// d covers the leg bridge's next login (it retries every 30 s) and the
// resync of the small test disk (seconds).
func (r *fencingRun) waitFullResync(ctx context.Context, g *guesttest.Guest, node string, d time.Duration) channel.Event {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wipe, done channel.Event
	next := 0
	for wipe.Leg != node {
		var err error
		wipe, next, err = g.WaitConsoleEvent(ctx, next, "root", channel.EventWipe)
		require.NoError(r.t, err, "the stale leg on %s was not wiped", node)
	}
	for done.Leg != node {
		var err error
		done, next, err = g.WaitConsoleEvent(ctx, next, "root", channel.EventResyncDone)
		require.NoError(r.t, err, "the leg on %s was not resynced", node)
	}
	assert.GreaterOrEqual(r.t, done.ResyncBytes, done.ArrayBytes, "a full resync writes the whole array: %s", done.Detail)
	// The owner's fenced hears of it on the channel and clears the mark.
	assert.Eventually(r.t, func() bool {
		rec, err := record(ctx, g.Host)
		_, stale := rec.Stale[node]
		return err == nil && !stale
	}, 15*time.Second, 500*time.Millisecond, "the ledger still marks the leg on %s stale after its full resync", node)
	for _, e := range g.ConsoleEvents() {
		if e.Event == channel.EventReAdd && e.Leg == node {
			r.t.Errorf("the stale leg on %s was re-added through the bitmap: %s", node, e.Detail)
		}
	}
	return done
}

// dump logs what a failed scenario needs: every fenced's view, the write
// logs, the guests' consoles.
func (r *fencingRun) dump() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range r.c.Hosts() {
		if h.Proc(cluster.FencedName) == nil {
			continue
		}
		res, err := h.CLI(ctx, "status")
		r.t.Logf("%s$ mhcodi status (%v):\n%s%s", h.Name, err, res.Stdout, res.Stderr)
	}
	if rep, err := writecheck.CheckDirs(r.a.StateDir(), r.b.StateDir()); err == nil {
		r.t.Logf("write logs: %s", rep)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.guests {
		r.t.Logf("console of demo on %s:\n%s", g.Host.Name, tail(g.Console(), 40))
	}
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}

// startedAt is when the guest's qemu on h wrote its pid file: when it
// started there.
func startedAt(t *testing.T, h *cluster.Host) time.Time {
	fi, err := os.Stat(filepath.Join(h.RunDir(), "demo", hypervisor.PIDFile))
	require.NoError(t, err)
	return fi.ModTime()
}

// TestFencingQuorumFailover: two storage hosts and a witness, automatic
// failover on, default timeouts. The owner is cut off while the guest
// writes: its fenced destroys the guest before the lease can expire, the
// guest restarts on the other host and writes again; when the owner comes
// back its leg is wiped and resynced in full, and the data verifies.
func TestFencingQuorumFailover(t *testing.T) {
	fencingBinaries(t)
	img := guestImage(t)
	// The alert hook appends every event it is given to hook.jsonl.
	hookDir := t.TempDir()
	hookOut := filepath.Join(hookDir, "hook.jsonl")
	hook := filepath.Join(hookDir, "notify")
	require.NoError(t, os.WriteFile(hook, []byte("#!/bin/sh\nexec cat >> "+hookOut+"\n"), 0o755))
	c := fencingCluster(t, img, true, "auto_failover: true", "event_hook: "+hook)
	ttl, margin := c.Config.Timeouts.LeaseTTL, c.Config.Fencing.LeaseMargin
	require.Equal(t, configs.DefaultLeaseTTL, ttl, "the figure is for default timeouts")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r := startFencing(t, ctx, c)
	a, b := r.a, r.b

	r.startGuest(ctx, a)
	ga := r.attach(ctx, a, 30*time.Second)
	r.waitHealthy(ctx, a, 3*time.Minute)
	rec, err := record(ctx, a)
	require.NoError(t, err)
	require.Equal(t, "node-a", rec.Owner)
	epoch := rec.Epoch
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = ga.WaitProgress(wctx, 1)
	wcancel()
	require.NoError(t, err, "the guest does not write on node-a")

	// Cut node-a off while the guest writes.
	progressA := len(ga.WorkloadLines("progress"))
	cut := time.Now()
	require.NoError(t, a.Cut())
	t.Logf("node-a cut off at epoch %d (lease_ttl %v, lease_margin %v)", epoch, ttl, margin)

	// node-a's fenced destroys its guest before the lease can expire on
	// the others, and the guest comes up on node-b, in that order.
	var goneA time.Time
	var goneErr error
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		gctx, gcancel := context.WithTimeout(ctx, 2*ttl)
		defer gcancel()
		goneA, goneErr = ga.WaitGone(gctx)
	}()
	gb := r.attach(ctx, b, 2*time.Minute)
	startedB := startedAt(t, b)
	<-gone
	require.NoError(t, goneErr, "node-a's fenced did not destroy the guest it can no longer hold the lease of")
	t.Logf("node-a destroyed its guest %.1f s after the cut; node-b started it %.1f s after the cut",
		goneA.Sub(cut).Seconds(), startedB.Sub(cut).Seconds())
	assert.Less(t, goneA.Sub(cut), ttl, "the old owner destroys its guest before its lease can expire")
	assert.True(t, startedB.After(goneA.Add(-goneSlack)), "node-b started the guest (%s) while node-a still ran it (gone %s)",
		startedB.Format(time.StampMilli), goneA.Format(time.StampMilli))
	t.Logf("the guest wrote %d progress lines on node-a before the cut, %d in all", progressA, len(ga.WorkloadLines("progress")))

	wctx, wcancel = context.WithTimeout(ctx, 2*time.Minute)
	writing, err := gb.WaitProgress(wctx, 0)
	wcancel()
	require.NoError(t, err, "the guest does not write on node-b")
	figure := writing.Sub(cut)
	t.Logf("FIGURE quorum_failover_s=%.1f: from cutting the owner off to the guest writing again on the other host (default timeouts: lease_ttl %v, lease_margin %v, monitor_interval %v; goal < 20 s; sanlock's defaults ≈ 180 s)",
		figure.Seconds(), ttl, margin, c.Config.Fencing.MonitorInterval)
	assert.Less(t, figure, 90*time.Second, "failover within reason")
	rec, err = record(ctx, b)
	require.NoError(t, err)
	assert.Equal(t, "node-b", rec.Owner)
	assert.Greater(t, rec.Epoch, epoch, "a new owner means a new epoch")
	assert.Contains(t, rec.Stale, "node-a", "node-a's leg, unreachable at the failover, is marked stale")

	// The guest writes on node-b, degraded; node-a comes back: its leg is
	// wiped and resynced in full.
	time.Sleep(3 * time.Second)
	require.NoError(t, a.Heal())
	healed := time.Now()
	done := r.waitFullResync(ctx, gb, "node-a", 75*time.Second)
	t.Logf("node-a's leg wiped and resynced in full %.1f s after it came back: %d bytes for a %d-byte array",
		time.Since(healed).Seconds(), done.ResyncBytes, done.ArrayBytes)
	assert.False(t, ga.Running(), "the guest must not run on node-a again")
	assert.Empty(t, gb.WorkloadLines("ioerror"), "the guest on node-b saw I/O errors")

	// The cluster after the storm, as the sysadmin checks it.
	vr, err := b.CLI(ctx, "verify")
	require.NoError(t, err)
	t.Logf("node-b$ mhcodi verify → exit %d\n%s%s", vr.Code, vr.Stdout, vr.Stderr)
	assert.Equal(t, 0, vr.Code, "verify finds nothing wrong once node-a's leg is resynced")

	// The event log tells the story in order, from both nodes' journals,
	// and the alert hook was given it.
	er, err := b.CLI(ctx, "events", "--guest", "demo")
	require.NoError(t, err)
	t.Logf("node-b$ mhcodi events --guest demo → exit %d\n%s%s", er.Code, er.Stdout, er.Stderr)
	assert.Equal(t, 0, er.Code)
	inOrder(t, er.Stdout, "node-a  self-fence  demo", "node-b  failover  demo", "node-b  owner  demo",
		"automatic failover: done", "node-b  resync-done  demo")
	assert.Contains(t, er.Stdout, "node-a → node-b")
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(hookOut)
		return strings.Contains(string(b), `"kind":"self-fence"`) && strings.Contains(string(b), `"kind":"resync-done"`)
	}, 30*time.Second, 100*time.Millisecond, "the alert hook gets the events")

	r.stopAndCompare(ctx, b, gb)
	rep := r.checkWrites()
	checkOwners(t, rep, c, map[string]string{"node-a": "node-b"}, rec.Epoch)
}

// inOrder asserts that out holds each of want, in that order.
func inOrder(t *testing.T, out string, want ...string) {
	t.Helper()
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if !assert.GreaterOrEqual(t, i, 0, "%q missing, or not after the one before it, in:\n%s", w, out) {
			return
		}
		rest = rest[i+len(w):]
	}
}

// TestFencingForcedFailover: two hosts, no witness. With node-a cut off, a
// failover to node-b is refused with the reason; with --force it goes
// ahead. node-a returns still running its copy: its fenced destroys it
// within one monitor period, and its leg is resynced in full.
func TestFencingForcedFailover(t *testing.T) {
	fencingBinaries(t)
	img := guestImage(t)
	c := fencingCluster(t, img, false)
	monitor := c.Config.Fencing.MonitorInterval
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r := startFencing(t, ctx, c)
	a, b := r.a, r.b

	r.startGuest(ctx, a)
	ga := r.attach(ctx, a, 30*time.Second)
	r.waitHealthy(ctx, a, 3*time.Minute)
	rec, err := record(ctx, a)
	require.NoError(t, err)
	epoch := rec.Epoch

	require.NoError(t, a.Cut())
	cut := time.Now()
	// Without --force: refused, with the reason and the way out.
	res := r.cli(ctx, b, "guest", "failover", "demo", "--to", "node-b")
	require.NotZero(t, res.Code, "a failover away from an unreachable node without --force must be refused")
	out := res.Stdout + res.Stderr
	assert.Contains(t, out, "node-a", "the refusal names the unreachable node")
	assert.Contains(t, out, "--force", "the refusal says how to proceed")
	assert.True(t, ga.Running(), "without quorum the guest keeps running on node-a")
	_, err = os.Stat(filepath.Join(b.RunDir(), "demo", hypervisor.PIDFile))
	assert.ErrorIs(t, err, os.ErrNotExist, "a refused failover starts nothing")

	// With --force: the sysadmin vouches that node-a is down.
	forced := time.Now()
	res = r.cli(ctx, b, "guest", "failover", "demo", "--to", "node-b", "--force")
	require.Zero(t, res.Code, "mhcodi guest failover --force: %s", res)
	gb := r.attach(ctx, b, time.Minute)
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	writing, err := gb.WaitProgress(wctx, 0)
	wcancel()
	require.NoError(t, err, "the guest does not write on node-b")
	t.Logf("FIGURE forced_failover_command_s=%.1f forced_failover_writing_s=%.1f: the forced failover command's run, and from its start to the guest writing on node-b (%.1f s after the cut, refused attempt included)",
		res.Took.Seconds(), writing.Sub(forced).Seconds(), writing.Sub(cut).Seconds())
	rec, err = record(ctx, b)
	require.NoError(t, err)
	assert.Equal(t, "node-b", rec.Owner)
	assert.Greater(t, rec.Epoch, epoch)
	assert.Contains(t, rec.Stale, "node-a")
	assert.True(t, ga.Running(), "node-a, cut off, still runs its copy (nothing tells it)")

	// node-a returns, still running its copy: destroyed within one
	// monitor period of its return.
	time.Sleep(3 * time.Second)
	require.NoError(t, a.Heal())
	healed := time.Now()
	gctx, gcancel := context.WithTimeout(ctx, time.Minute)
	goneA, err := ga.WaitGone(gctx)
	gcancel()
	require.NoError(t, err, "node-a still runs the guest it no longer owns")
	t.Logf("node-a destroyed its copy %.1f s after it came back (monitor_interval %v)", goneA.Sub(healed).Seconds(), monitor)
	// One period, and a little for the link and TCP to come back.
	assert.Less(t, goneA.Sub(healed), monitor+2*time.Second, "destroyed within one monitor period of node-a's return")

	done := r.waitFullResync(ctx, gb, "node-a", 75*time.Second)
	t.Logf("node-a's leg wiped and resynced in full %.1f s after it came back: %d bytes for a %d-byte array",
		time.Since(healed).Seconds(), done.ResyncBytes, done.ArrayBytes)
	assert.Empty(t, gb.WorkloadLines("ioerror"), "the guest on node-b saw I/O errors")

	// The cluster after the storm, as the sysadmin checks it.
	vr, err := b.CLI(ctx, "verify")
	require.NoError(t, err)
	t.Logf("node-b$ mhcodi verify → exit %d\n%s%s", vr.Code, vr.Stdout, vr.Stderr)
	assert.Equal(t, 0, vr.Code, "verify finds nothing wrong once node-a's leg is resynced")

	r.stopAndCompare(ctx, b, gb)
	rep := r.checkWrites()
	checkOwners(t, rep, c, map[string]string{"node-a": "node-b"}, rec.Epoch)
}

// TestFencingFrozenOwner: two storage hosts and a witness, automatic
// failover on. The owner hangs instead of dropping off the network: every
// process of node-a, its fenced and etcd member, targetd, the guest's qemu
// and leg bridge, is stopped (SIGSTOP), so connections to it open but
// nothing answers. The guest restarts on node-b. Then node-a wakes up with
// its old copy still in memory: the copy is destroyed within one monitor
// period, nothing it sends is written to node-b's leg at the new epoch,
// and node-a's leg is resynced in full, not while the copy still runs.
func TestFencingFrozenOwner(t *testing.T) {
	fencingBinaries(t)
	img := guestImage(t)
	c := fencingCluster(t, img, true, "auto_failover: true")
	monitor := c.Config.Fencing.MonitorInterval
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	r := startFencing(t, ctx, c)
	a, b := r.a, r.b

	r.startGuest(ctx, a)
	ga := r.attach(ctx, a, 30*time.Second)
	r.waitHealthy(ctx, a, 3*time.Minute)
	rec, err := record(ctx, a)
	require.NoError(t, err)
	epoch := rec.Epoch
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = ga.WaitProgress(wctx, 1)
	wcancel()
	require.NoError(t, err, "the guest does not write on node-a")

	// node-a's etcd member leads the ledger, so its freeze also stalls
	// every forwarded lease renewal: node-b, which does not own the guest,
	// must ride that out without thinking its own lease is gone.
	r.makeEtcdLeader(ctx, a)

	// The bridge started before qemu; make sure both are frozen.
	procs, err := a.TrackGuests()
	require.NoError(t, err)
	require.Len(t, procs, 2, "node-a runs the guest's qemu and its leg bridge")
	logB, err := os.ReadFile(b.LogPath(cluster.FencedName))
	require.NoError(t, err)
	logBAtFreeze := len(logB)
	require.NoError(t, a.Freeze())
	frozen := time.Now()
	t.Logf("node-a frozen at epoch %d", epoch)

	gb := r.attach(ctx, b, 2*time.Minute)
	wctx, wcancel = context.WithTimeout(ctx, 2*time.Minute)
	writing, err := gb.WaitProgress(wctx, 0)
	wcancel()
	require.NoError(t, err, "the guest does not write on node-b")
	t.Logf("FIGURE frozen_owner_failover_s=%.1f: from freezing the owner to the guest writing again on the other host",
		writing.Sub(frozen).Seconds())
	rec, err = record(ctx, b)
	require.NoError(t, err)
	assert.Equal(t, "node-b", rec.Owner)
	assert.Greater(t, rec.Epoch, epoch)
	assert.Contains(t, rec.Stale, "node-a", "node-a's leg, whose targetd did not answer, is marked stale")
	require.True(t, ga.Running(), "node-a's copy is frozen, not gone")
	logB, err = os.ReadFile(b.LogPath(cluster.FencedName))
	require.NoError(t, err)
	assert.NotContains(t, string(logB[logBAtFreeze:]), "lease not renewed",
		"node-b's lease lapsed while the frozen node-a led etcd: it would have destroyed guests of its own")

	// node-a wakes up: its copy runs again until its fenced sees that the
	// lease is gone and the ledger names node-b.
	time.Sleep(3 * time.Second)
	require.NoError(t, a.Thaw())
	thawed := time.Now()
	gctx, gcancel := context.WithTimeout(ctx, time.Minute)
	goneA, err := ga.WaitGone(gctx)
	gcancel()
	require.NoError(t, err, "node-a still runs the guest it no longer owns after waking up")
	t.Logf("node-a destroyed its copy %.1f s after it woke up (monitor_interval %v)", goneA.Sub(thawed).Seconds(), monitor)
	assert.Less(t, goneA.Sub(thawed), monitor+2*time.Second, "destroyed within one monitor period of waking up")

	done := r.waitFullResync(ctx, gb, "node-a", 75*time.Second)
	t.Logf("node-a's leg wiped and resynced in full %.1f s after it woke up: %d bytes for a %d-byte array",
		time.Since(thawed).Seconds(), done.ResyncBytes, done.ArrayBytes)
	assert.Empty(t, gb.WorkloadLines("ioerror"), "the guest on node-b saw I/O errors")
	vr, err := b.CLI(ctx, "verify")
	require.NoError(t, err)
	t.Logf("node-b$ mhcodi verify → exit %d\n%s%s", vr.Code, vr.Stdout, vr.Stderr)
	assert.Equal(t, 0, vr.Code, "verify finds nothing wrong once node-a's leg is resynced")

	r.stopAndCompare(ctx, b, gb)
	rep := r.checkWrites()
	checkOwners(t, rep, c, map[string]string{"node-a": "node-b"}, rec.Epoch)
	for _, l := range c.Config.Legs() {
		if l.Guest != "demo" {
			continue
		}
		tg, ok := rep.Target(l.TargetIQN)
		require.True(t, ok, "%s's leg took no writes", l.Node)
		switch l.Node {
		case "node-b":
			// node-b's leg takes iSCSI writes only from node-a's bridge;
			// none of the woken copy's may land after the failover.
			assert.Equal(t, epoch, tg.Latest().Epoch, "node-b's leg took writes after the failover: %s", rep)
		case "node-a":
			// The new owner's resync reaches node-a's leg only once the
			// woken copy, which writes that leg directly, is gone (1 s:
			// how late WaitGone may notice, with a reaped zombie).
			latest := tg.Latest()
			require.NotEmpty(t, latest.Writers)
			first := latest.Writers[0].First
			t.Logf("first write of the resync to node-a's leg %.1f s after its copy was destroyed", first.Sub(goneA).Seconds())
			assert.True(t, first.After(goneA.Add(-time.Second)), "node-b wrote node-a's leg at %s while node-a's copy still ran (gone %s)",
				first.Format(time.StampMilli), goneA.Format(time.StampMilli))
		}
	}
}

// checkOwners asserts that the newest epoch each node's leg of demo took
// writes at is the final epoch, written by the final owner's initiator
// only (leg node → owner node).
func checkOwners(t *testing.T, rep writecheck.Report, c *cluster.Cluster, owners map[string]string, epoch uint64) {
	t.Helper()
	for leg, owner := range owners {
		target := ""
		for _, l := range c.Config.Legs() {
			if l.Guest == "demo" && l.Disk == "root" && l.Node == leg {
				target = l.TargetIQN
			}
		}
		require.NotEmpty(t, target, "no leg of demo on %s", leg)
		tg, ok := rep.Target(target)
		require.True(t, ok, "%s (%s's leg) took no writes", target, leg)
		latest := tg.Latest()
		assert.Equal(t, epoch, latest.Epoch, "%s's leg: newest epoch with writes", leg)
		assert.Equal(t, []string{c.Config.InitiatorIQN(owner)}, rep.Writers(target, latest.Epoch), "%s's leg: writers at epoch %d", leg, latest.Epoch)
	}
}

// goneSlack is how late WaitGone may notice that a guest is gone (it
// polls every 50 ms).
const goneSlack = 100 * time.Millisecond
