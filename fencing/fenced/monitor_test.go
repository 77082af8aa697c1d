package fenced

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
)

func running(names ...string) []hypervisor.Status {
	var out []hypervisor.Status
	for _, n := range names {
		out = append(out, hypervisor.Status{Name: n, State: hypervisor.StateRunning})
	}
	return out
}

func recs(rs ...ledger.Record) map[string]ledger.Record {
	m := map[string]ledger.Record{}
	for _, r := range rs {
		m[r.Guest] = r
	}
	return m
}

func guests(fs []Foreign) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, f.Guest)
	}
	return out
}

func TestDecideForeignWithLedger(t *testing.T) {
	managed := map[string]bool{"web": true, "db": true, "mail": true, "files": true}
	in := MonitorInput{
		Self: "node-a", Managed: managed, LedgerOK: true,
		Running: running("web", "db", "mail", "files", "other"),
		Started: map[string]uint64{"web": 4, "mail": 2},
		Records: recs(
			ledger.Record{Guest: "web", Owner: "node-a", Epoch: 4, Desired: ledger.DesiredRunning},  // ours: keeps running
			ledger.Record{Guest: "db", Owner: "node-b", Epoch: 7, Desired: ledger.DesiredRunning},   // another node's
			ledger.Record{Guest: "mail", Owner: "node-a", Epoch: 3, Desired: ledger.DesiredRunning}, // ours, but started at 2
			// files: no record at all
		),
	}
	got := DecideForeign(in)
	assert.Equal(t, []string{"db", "files", "mail"}, guests(got))
	assert.Equal(t, "node-b", got[0].Owner)
	assert.EqualValues(t, 7, got[0].Epoch)
	assert.Contains(t, got[0].Reason, "node-b at epoch 7")
	assert.Contains(t, got[2].Reason, "started at epoch 2")

	// A guest a request is handling is left to it.
	in.Busy = map[string]bool{"db": true}
	assert.Equal(t, []string{"files", "mail"}, guests(DecideForeign(in)))
}

func TestDecideForeignWithoutQuorum(t *testing.T) {
	managed := map[string]bool{"web": true, "db": true}
	base := MonitorInput{Self: "node-a", Managed: managed, Running: running("web", "db"),
		Started: map[string]uint64{"web": 4}, Known: map[string]uint64{"db": 5}}

	// Quorum mode: the lease decides, not the monitor.
	in := base
	in.QuorumMode = true
	in.Peers = []api.LedgerResponse{{Node: "node-b", Records: []ledger.Record{{Guest: "web", Owner: "node-b", Epoch: 9}}}}
	assert.Empty(t, DecideForeign(in))

	// Two-node mode, no peer answers: guests keep running.
	in = base
	assert.Empty(t, DecideForeign(in))

	// The peer forked the ledger and owns web at a newer epoch: this node
	// lost it. db's epoch at the peer is not newer than what this node
	// knows: it stays.
	in.Peers = []api.LedgerResponse{{Node: "node-b", Stale: true, Records: []ledger.Record{
		{Guest: "web", Owner: "node-b", Epoch: 5},
		{Guest: "db", Owner: "node-b", Epoch: 5},
	}}}
	got := DecideForeign(in)
	assert.Equal(t, []string{"web"}, guests(got))
	assert.Contains(t, got[0].Reason, "node-b's ledger gives it to node-b at epoch 5, newer than this node's 4")

	// The peer's ledger is as old as ours: nothing.
	in.Peers = []api.LedgerResponse{{Node: "node-b", Records: []ledger.Record{{Guest: "web", Owner: "node-b", Epoch: 4}}}}
	assert.Empty(t, DecideForeign(in))
}

func TestDecideHolds(t *testing.T) {
	r := recs(
		ledger.Record{Guest: "web", Owner: "node-a", Epoch: 1},
		ledger.Record{Guest: "db", Owner: "node-b", Epoch: 1},
		ledger.Record{Guest: "mail", Owner: "node-a", Epoch: 1},
	)
	hold, drop := DecideHolds("node-a", running("web", "db"), r, map[string]bool{"mail": true, "web": false})
	assert.Equal(t, []string{"web"}, hold)
	assert.Equal(t, []string{"mail"}, drop)
}

func TestChooseFailover(t *testing.T) {
	cfg := testConfig(t, true, "")
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	ttl := 10 * time.Second
	rec := ledger.Record{Guest: "web", Owner: "node-a", Epoch: 3, Desired: ledger.DesiredRunning, Updated: now.Add(-time.Minute)}
	alive := map[string]bool{"node-a": false, "node-b": true, "quorum": true}

	assert.True(t, ChooseFailover(cfg, "node-b", rec, "", now, ttl, alive), "node-b holds the other leg")
	assert.False(t, ChooseFailover(cfg, "quorum", rec, "", now, ttl, alive), "the witness holds no leg")
	assert.False(t, ChooseFailover(cfg, "node-b", rec, "node-a", now, ttl, alive), "the lease is held")
	assert.False(t, ChooseFailover(cfg, "node-b", rec, "", now, ttl, map[string]bool{}), "node-b is not alive (as probed)")

	fresh := rec
	fresh.Updated = now.Add(-5 * time.Second)
	assert.False(t, ChooseFailover(cfg, "node-b", fresh, "", now, ttl, alive), "the owner has not had a TTL to take the lease")
	stopped := rec
	stopped.Desired = ledger.DesiredStopped
	assert.False(t, ChooseFailover(cfg, "node-b", stopped, "", now, ttl, alive))

	// db's owner is node-b; node-a is the only other leg.
	db := ledger.Record{Guest: "db", Owner: "node-b", Epoch: 2, Desired: ledger.DesiredRunning, Updated: now.Add(-time.Hour)}
	assert.True(t, ChooseFailover(cfg, "node-a", db, "", now, ttl, map[string]bool{"node-a": true}))
	assert.Equal(t, []string{"node-a"}, FailoverCandidates(cfg, "db", "node-b", allNodes(cfg)))
}
