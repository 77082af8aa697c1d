package ops

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

var quiet = slog.New(slog.DiscardHandler)

var t0 = time.Date(2026, 11, 3, 12, 0, 1, 0, time.UTC)

func runOp(t *testing.T, env *fakeEnv, r api.OpRequest) ([]api.Progress, error) {
	t.Helper()
	var lines []api.Progress
	o := New(env, WithClock(func() time.Time { return t0 }), WithLogger(quiet))
	err := o.Run(context.Background(), r, func(p api.Progress) { lines = append(lines, p) })
	require.NotEmpty(t, lines)
	last := lines[len(lines)-1]
	assert.True(t, last.Done, "the last line is Done")
	for _, p := range lines[:len(lines)-1] {
		assert.False(t, p.Done)
	}
	if err != nil {
		assert.Equal(t, err.Error(), last.Err)
		assert.Equal(t, HintOf(err), last.Hint)
	} else {
		assert.Empty(t, last.Err)
	}
	return lines, err
}

func messages(lines []api.Progress) []string {
	var out []string
	for _, p := range lines {
		out = append(out, p.Step+": "+p.Message)
	}
	return out
}

func twoNodeFailover(t *testing.T) world {
	return world{cfg: loadCfg(t, twoNodeFile), self: "node-b",
		running: map[string][]string{"node-a": {"web1"}},
		records: []ledger.Record{rec("web1", "node-a", 4, running)}}
}

// TestRunFailoverOrder: a planned move stops the guest cleanly before
// the ledger changes hands (issue 12: a claim first had the old owner's
// monitor destroy the guest as foreign while the stop waited for it).
func TestRunFailoverOrder(t *testing.T) {
	env := newEnv(twoNodeFailover(t))
	lines, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1"})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"ledger web1 owner=node-a epoch=4 desired=stopped stale=[]",
		"stop node-a web1 timeout=1m0s",
		"ledger web1 owner=node-b epoch=5 desired=running stale=[]",
		"fence node-a web1 to node-b@5",
		"fence node-b web1 to node-b@5",
		"start node-b web1 epoch=5 stale=[]",
	}, env.calls.get())
	assert.Equal(t, []string{
		"check: node-a and node-b up; the ledger has quorum",
		"ledger: web1: desired stopped",
		"stop node-a: stopping web1 (ACPI power button, destroyed after 1m0s)",
		"stop node-a: web1 stopped on node-a",
		"ledger: web1: epoch 4 → 5, owner node-b (was node-a)",
		"fence node-a: node-a's targetd serves web1's legs only to node-b at epoch 5",
		"fence node-b: node-b's targetd serves web1's legs only to node-b at epoch 5",
		"start node-b: starting web1 at epoch 5",
		"start node-b: web1 runs on node-b",
		"done: web1 runs on node-b",
	}, messages(lines))
	r := env.store.recs["web1"]
	assert.Equal(t, "node-b", r.By)
	assert.Equal(t, "failover", r.Why)
	assert.Equal(t, t0, r.Updated)
}

func TestRunFenceFailsAfterClaim(t *testing.T) {
	env := newEnv(twoNodeFailover(t))
	env.fail["fence node-b"] = errors.New("targetd: control socket: connection refused")
	_, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1"})
	require.Error(t, err)
	assert.False(t, IsRefusal(err))
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, "fence web1's legs on node-b: targetd: control socket: connection refused", e.Reason)
	assert.Equal(t, []string{
		"web1: desired stopped",
		"web1 stopped on node-a",
		"web1: epoch 4 → 5, owner node-b (was node-a)",
		"node-a's targetd serves web1's legs only to node-b at epoch 5",
	}, e.Left, "stopped, the epoch bumped and node-a's legs fenced")
	assert.Equal(t, []string{"fence web1's legs on node-b", "start web1 on node-b"}, e.NotDone)
	assert.Contains(t, e.Hint, "the ledger names node-b owner at epoch 5 already")
	assert.Contains(t, e.Hint, "mhcodi guest start web1 --to node-b")
	for _, c := range env.calls.get() {
		assert.NotContains(t, c, "start ", "never started after a failed fence")
	}
	assert.Equal(t, uint64(5), env.store.recs["web1"].Epoch)
}

// TestRunStopFailsNoClaim: a stop that fails leaves the ledger at the old
// owner and epoch, recorded stopped, and says how to finish or undo.
func TestRunStopFailsNoClaim(t *testing.T) {
	env := newEnv(twoNodeFailover(t))
	env.fail["stop node-a"] = errors.New("qmp: timeout")
	_, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1"})
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, []string{"web1: desired stopped"}, e.Left)
	assert.Equal(t, []string{"stop web1 on node-a", "claim web1 for node-b", "fence web1's legs on node-a",
		"fence web1's legs on node-b", "start web1 on node-b"}, e.NotDone)
	assert.Contains(t, e.Hint, "it may still run on node-a")
	assert.Contains(t, e.Hint, "mhcodi guest start web1 --to node-b finishes the move")
	assert.Equal(t, []string{"ledger web1 owner=node-a epoch=4 desired=stopped stale=[]"}, env.calls.get()[:1])
	for _, c := range env.calls.get()[1:] {
		assert.NotContains(t, c, "ledger", "no claim after a failed stop")
		assert.NotContains(t, c, "start ")
	}
	r := env.store.recs["web1"]
	assert.Equal(t, "node-a", r.Owner)
	assert.Equal(t, uint64(4), r.Epoch)
}

// TestRunClaimFailsAfterStop: the guest is stopped and the claim fails
// (the ledger lost quorum meanwhile): the hint names the start that
// finishes the move and the one that undoes it.
func TestRunClaimFailsAfterStop(t *testing.T) {
	env := newEnv(twoNodeFailover(t))
	env.store.failNth = map[int]error{2: errors.New("etcdserver: request timed out")}
	_, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1"})
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, []string{"web1: desired stopped", "web1 stopped on node-a"}, e.Left)
	assert.Equal(t, "claim web1 for node-b", e.NotDone[0])
	assert.Contains(t, e.Hint, "web1 is stopped and recorded stopped")
	assert.Contains(t, e.Hint, "mhcodi guest start web1 --to node-b finishes the move")
	assert.Contains(t, e.Hint, "mhcodi guest start web1 starts it where it was")
}

func TestRunStartFails(t *testing.T) {
	env := newEnv(twoNodeFailover(t))
	env.fail["start node-b"] = errors.New("qemu: exit status 1")
	_, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1"})
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, []string{"start web1 on node-b"}, e.NotDone)
	assert.Contains(t, e.Hint, "web1 is owned by node-b at epoch 5 with its legs fenced, but not running")
}

func TestRunForcedFailover(t *testing.T) {
	w := twoNodeFailover(t)
	w.running, w.down, w.noQuo = nil, []string{"node-a"}, true
	env := newEnv(w)

	// Without --force: refused, nothing called.
	lines, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1", To: "node-b"})
	require.Error(t, err)
	assert.True(t, IsRefusal(err))
	last := lines[len(lines)-1]
	assert.Equal(t, "refused", last.Step)
	assert.Equal(t, "node-a is unreachable and the ledger has no quorum; if node-a is really down, run again with --force", last.Err)
	assert.Empty(t, env.calls.get())

	_, err = runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1", To: "node-b", Force: true})
	require.NoError(t, err)
	assert.Equal(t, []string{
		"fork",
		"ledger web1 owner=node-b epoch=5 desired=running stale=[node-a]",
		"fence node-b web1 to node-b@5",
		"start node-b web1 epoch=5 stale=[node-a]",
	}, env.calls.get())
	assert.Equal(t, "forced failover", env.store.recs["web1"].Why)
}

func TestRunForkFails(t *testing.T) {
	w := twoNodeFailover(t)
	w.running, w.down, w.noQuo = nil, []string{"node-a"}, true
	env := newEnv(w)
	env.fail["fork"] = errors.New("etcd: data dir locked")
	_, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1", To: "node-b", Force: true})
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, []string{"nothing was changed"}, e.Left)
	assert.Contains(t, e.Hint, "the ledger is as it was")
	assert.Equal(t, []string{"fork"}, env.calls.get())
}

func TestRunClaimConflict(t *testing.T) {
	env := newEnv(twoNodeFailover(t))
	env.store.meanwhile = func(r *ledger.Record) { r.Epoch, r.Owner = 5, "node-a" }
	_, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1"})
	require.Error(t, err)
	assert.True(t, IsRefusal(err), "another node won: nothing was changed")
	assert.Contains(t, err.Error(), "web1 changed meanwhile: the ledger says owner node-a at epoch 5")
	assert.Contains(t, HintOf(err), "look again")
	assert.Empty(t, env.calls.get())
}

func TestRunEvacuateStopsAtFirstFailure(t *testing.T) {
	w := world{cfg: loadCfg(t, twoNodeFile), self: "node-b",
		running: map[string][]string{"node-a": {"web1", "db1"}},
		records: []ledger.Record{rec("web1", "node-a", 4, running), rec("db1", "node-a", 2, running)}}
	env := newEnv(w)
	env.fail["start node-b"] = errors.New("no memory")
	_, err := runOp(t, env, api.OpRequest{Op: api.OpEvacuate, Node: "node-a"})
	var e *Error
	require.ErrorAs(t, err, &e)
	assert.Contains(t, e.NotDone, "claim db1 for node-b", "the next guest is not touched")
	for _, c := range env.calls.get() {
		assert.NotContains(t, c, "db1")
	}
}

func TestRunStopAndDestroy(t *testing.T) {
	env := newEnv(twoNodeFailover(t))
	_, err := runOp(t, env, api.OpRequest{Op: api.OpStop, Guest: "web1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"ledger web1 owner=node-a epoch=4 desired=stopped stale=[]", "stop node-a web1 timeout=1m0s"}, env.calls.get())

	env = newEnv(twoNodeFailover(t))
	_, err = runOp(t, env, api.OpRequest{Op: api.OpDestroy, Guest: "web1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"ledger web1 owner=node-a epoch=4 desired=stopped stale=[]", "destroy node-a web1"}, env.calls.get())
}

func TestRunCreate(t *testing.T) {
	env := newEnv(world{cfg: loadCfg(t, twoNodeFile), self: "node-a"})
	lines, err := runOp(t, env, api.OpRequest{Op: api.OpCreate, Guest: "db1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"ledger db1 owner= epoch=0 desired=stopped stale=[]"}, env.calls.get())
	assert.Equal(t, "done: db1 is in the ledger, stopped", messages(lines)[len(lines)-1])
}

func TestAutoFailover(t *testing.T) {
	cfg := loadCfg(t, threeNodeFile)
	cfg.Fencing.AutoFailover = true
	env := newEnv(world{cfg: cfg, self: "node-b", down: []string{"node-a"}, records: []ledger.Record{rec("mail", "node-a", 7, running)}})
	require.NoError(t, New(env, WithLogger(quiet)).AutoFailover(context.Background(), "mail"))
	assert.Equal(t, []string{
		"ledger mail owner=node-b epoch=8 desired=running stale=[node-a]",
		"fence node-b mail to node-b@8",
		"start node-b mail epoch=8 stale=[node-a]",
	}, env.calls.get())
	assert.Equal(t, "automatic failover", env.store.recs["mail"].Why)

	// The lease was taken meanwhile: refused, nothing done.
	env = newEnv(world{cfg: cfg, self: "node-b", down: []string{"node-a"}, records: []ledger.Record{rec("mail", "node-a", 7, running)},
		holders: map[string]string{"mail": "node-a"}})
	err := New(env, WithLogger(quiet)).AutoFailover(context.Background(), "mail")
	assert.True(t, IsRefusal(err))
	assert.Empty(t, env.calls.get())
}

func TestAutoFailoverWaitsBrieflyForACutOffOwner(t *testing.T) {
	cfg := loadCfg(t, threeNodeFile)
	cfg.Fencing.AutoFailover = true
	hangFor := make(chan time.Duration, 4)
	env := newEnv(world{cfg: cfg, self: "node-b", hang: []string{"node-a"}, hangFor: hangFor,
		records: []ledger.Record{rec("mail", "node-a", 7, running)}})
	require.NoError(t, New(env, WithLogger(quiet), WithAutoFailoverNodeTimeout(20*time.Millisecond)).AutoFailover(context.Background(), "mail"))
	assert.LessOrEqual(t, <-hangFor, 20*time.Millisecond, "the owner that does not answer gets the automatic failover's node timeout, not NodeTimeout")
	assert.Equal(t, []string{
		"ledger mail owner=node-b epoch=8 desired=running stale=[node-a]",
		"fence node-b mail to node-b@8",
		"start node-b mail epoch=8 stale=[node-a]",
	}, env.calls.get(), "the silent owner is down: its legs are stale")

	// An operation the sysadmin asked for still waits NodeTimeout.
	env = newEnv(world{cfg: cfg, self: "node-b", hang: []string{"node-a"}, hangFor: hangFor,
		records: []ledger.Record{rec("mail", "node-a", 7, running)}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- New(env, WithLogger(quiet)).Run(ctx, api.OpRequest{Op: api.OpStop, Guest: "mail"}, nil)
	}()
	given := <-hangFor
	cancel()
	<-done
	assert.Greater(t, given, time.Second, "NodeTimeout for an operation")
}

func TestGather(t *testing.T) {
	w := twoNodeFailover(t)
	w.down, w.noQuo = []string{"node-a"}, true
	env := newEnv(w)
	v, err := Gather(context.Background(), env)
	require.NoError(t, err)
	assert.Equal(t, "node-b", v.Self)
	assert.False(t, v.Quorum)
	assert.Equal(t, "etcdserver: request timed out", v.LedgerErr)
	assert.True(t, v.LedgerStale, "records from fenced's last read")
	require.Len(t, v.Records, 1)
	require.Len(t, v.Nodes, 2)
	assert.False(t, v.Nodes[0].Up)
	assert.Contains(t, v.Nodes[0].Err, "connection refused")
	assert.True(t, v.Nodes[1].Up)
	assert.Equal(t, ConfigDigest(w.cfg), v.Nodes[1].ConfigDigest, "Self's digest is its own config's")

	env = newEnv(world{cfg: w.cfg, self: "node-b", records: w.records, holders: map[string]string{"web1": "node-a"}})
	v, err = Gather(context.Background(), env)
	require.NoError(t, err)
	assert.True(t, v.Quorum)
	assert.False(t, v.LedgerStale)
	assert.Equal(t, map[string]string{"web1": "node-a"}, v.Holders)
}

func TestOneOperationAtATime(t *testing.T) {
	env := newEnv(twoNodeFailover(t))
	o := New(env, WithLogger(quiet))
	o.busy <- struct{}{} // another operation holds the node
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var lines []api.Progress
	err := o.Run(ctx, api.OpRequest{Op: api.OpStop, Guest: "web1"}, func(p api.Progress) { lines = append(lines, p) })
	require.Error(t, err)
	assert.True(t, IsRefusal(err))
	assert.Equal(t, "wait", lines[0].Step)
	assert.Empty(t, env.calls.get())
}

// noSvcBridge: node-b reports its bridge of svc (br-vlans) missing.
func noSvcBridge(w world) world {
	w.bridges = map[string][]hypervisor.BridgeInfo{
		"node-a": {{Name: "br-svc", Present: true, VLANFiltering: true}, {Name: "br-backup", Present: true}},
		"node-b": {{Name: "br-backup", Present: true}, {Name: "br-vlans"}},
	}
	return w
}

// TestRunMissingBridgeLeavesLedger: a failover to a node without the
// bridge of one of the guest's networks is refused before anything runs:
// the epoch does not move, nothing is stopped, and the bridge is named.
func TestRunMissingBridgeLeavesLedger(t *testing.T) {
	env := newEnv(noSvcBridge(twoNodeFailover(t)))
	before := env.store.recs["web1"]
	_, err := runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1", To: "node-b"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "node-b cannot carry web1's NICs: NIC svc (network svc): bridge br-vlans does not exist")
	assert.Contains(t, HintOf(err), "create the bridge on node-b")
	assert.Equal(t, before, env.store.recs["web1"], "the ledger is left as it was")
	assert.Zero(t, env.store.updates)
	assert.Empty(t, env.calls.get(), "nothing was fenced, stopped or started")

	// Its bridge there, the same move goes ahead.
	w := noSvcBridge(twoNodeFailover(t))
	w.bridges["node-b"][1].Present = true
	w.bridges["node-b"][1].VLANFiltering = true
	env = newEnv(w)
	_, err = runOp(t, env, api.OpRequest{Op: api.OpFailover, Guest: "web1", To: "node-b"})
	require.NoError(t, err)
}

// TestPlanStartBridgeWithoutVLANs: VLAN 10 needs a filtering bridge; a
// fenced that reports no bridges is not second-guessed.
func TestPlanStartBridgeWithoutVLANs(t *testing.T) {
	w := noSvcBridge(world{cfg: loadCfg(t, twoNodeFile), self: "node-a"})
	w.bridges["node-a"][0].VLANFiltering = false
	_, err := PlanOp(w.facts(), api.OpRequest{Op: api.OpStart, Guest: "web1"})
	require.ErrorContains(t, err, "bridge br-svc does not filter VLANs, which VLAN 10 needs")
	_, err = PlanOp(w.facts(), api.OpRequest{Op: api.OpStart, Guest: "db1", To: "node-b"})
	require.NoError(t, err, "db1 has no NICs")
	w.bridges = nil
	_, err = PlanOp(w.facts(), api.OpRequest{Op: api.OpStart, Guest: "web1"})
	require.NoError(t, err)
}
