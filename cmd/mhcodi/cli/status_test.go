package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/ops"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// healthyView is the two-node example with web1 on node-a and db1 on
// node-b, every leg exported, fenced and in sync.
func healthyView(t *testing.T) api.ClusterView {
	cfg, err := configs.Load(twoNode)
	require.NoError(t, err)
	d := ops.ConfigDigest(cfg)
	exports := []api.Export{
		{Guest: "web1", Disk: "root", Owner: "node-a", Epoch: 4, Sessions: 1},
		{Guest: "web1", Disk: "data", Owner: "node-a", Epoch: 4, Sessions: 1},
		{Guest: "db1", Disk: "root", Owner: "node-b", Epoch: 2, Sessions: 1},
	}
	inSync := func(disk string) channel.State {
		return channel.State{Disk: disk, Legs: []channel.LegState{{Node: "node-a", State: "in_sync"}, {Node: "node-b", State: "in_sync"}}}
	}
	return api.ClusterView{Self: "node-a", Quorum: true,
		Records: []ledger.Record{
			{Guest: "web1", Owner: "node-a", Epoch: 4, Desired: ledger.DesiredRunning},
			{Guest: "db1", Owner: "node-b", Epoch: 2, Desired: ledger.DesiredRunning},
		},
		Holders: map[string]string{"web1": "node-a", "db1": "node-b"},
		Nodes: []api.NodeView{
			{Node: "node-a", Role: "storage", Up: true, ConfigDigest: d, Status: api.NodeStatus{Node: "node-a", Quorum: true, MemoryFreeMiB: 16384,
				Guests:  []hypervisor.Status{{Name: "web1", State: hypervisor.StateRunning}},
				Legs:    map[string]map[string]channel.State{"web1": {"root": inSync("root"), "data": inSync("data")}},
				Exports: exports}},
			{Node: "node-b", Role: "storage", Up: true, ConfigDigest: d, Status: api.NodeStatus{Node: "node-b", Quorum: true, MemoryFreeMiB: 16384,
				Guests:  []hypervisor.Status{{Name: "db1", State: hypervisor.StateRunning}},
				Legs:    map[string]map[string]channel.State{"db1": {"root": inSync("root")}},
				Exports: exports}},
		},
	}
}

func TestStatusTable(t *testing.T) {
	f := startFenced(t)
	f.view = healthyView(t)
	f.view.Records[0].Stale = map[string]uint64{"node-b": 4}
	st := f.view.Nodes[1].Status.Legs["db1"]["root"]
	st.Progress = 0.42
	st.Legs[0].State = "spare"
	f.view.Nodes[1].Status.Legs["db1"]["root"] = st

	code, out, errs := run("status", "--config", twoNode, "--node", "node-a", "--socket", f.socket)
	require.Equal(t, ExitOK, code, errs)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	assert.Equal(t, "cluster prod (two-node mode), seen from node-a: the ledger has quorum", lines[0])
	assert.Regexp(t, `^HOST\s+ROLE\s+STATE\s+LEDGER\s+FREE MEMORY\s+RUNNING$`, lines[2])
	assert.Regexp(t, `^node-a\s+storage\s+up\s+writable\s+16384 MiB\s+web1$`, lines[3])
	assert.Regexp(t, `^GUEST\s+OWNER\s+EPOCH\s+DESIRED\s+RUNNING ON\s+LEASE\s+DISK\s+LEGS$`, lines[6])
	assert.Regexp(t, `^web1\s+node-a\s+4\s+running\s+node-a\s+node-a\s+root\s+node-a: up, node-b: stale since epoch 4$`, lines[7])
	assert.Regexp(t, `^\s+data\s+node-a: up, node-b: stale since epoch 4$`, lines[8])
	assert.Regexp(t, `^db1\s+node-b\s+2\s+running\s+node-b\s+node-b\s+root\s+node-b: up, node-a: resyncing 42%$`, lines[9])

	f.view.Nodes[1] = api.NodeView{Node: "node-b", Role: "storage", Err: "dial tcp 198.51.100.12:7440: connect: no route to host"}
	f.view.Quorum, f.view.LedgerErr = false, "context deadline exceeded"
	code, out, errs = run("status", "--config", twoNode, "--node", "node-a", "--socket", f.socket)
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, out, "the ledger has NO quorum (context deadline exceeded)")
	assert.Regexp(t, `node-b\s+storage\s+down\s+-\s+-\s+- \(dial tcp .*no route to host\)`, out)
	assert.Regexp(t, `db1\s+node-b\s+2\s+running\s+-\s+node-b\s+root\s+node-b: down, node-a: up`, out)
}

func TestStatusJSON(t *testing.T) {
	f := startFenced(t)
	f.view = healthyView(t)
	code, out, errs := run("status", "--json", "--config", twoNode, "--node", "node-a", "--socket", f.socket)
	require.Equal(t, ExitOK, code, errs)
	var r ops.Report
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	assert.Equal(t, "two-node", r.Mode)
	require.Len(t, r.Guests, 2)
	assert.Equal(t, "up", r.Guests[0].Disks[1].Legs[1].State)
}

func TestVerifyCmd(t *testing.T) {
	f := startFenced(t)
	f.view = healthyView(t)
	code, out, errs := run("verify", "--config", twoNode, "--node", "node-a", "--socket", f.socket)
	require.Equal(t, ExitOK, code, errs)
	assert.Equal(t, "no problem found (seen from node-a)\n", out)

	// web1 runs on both hosts, and node-b cannot take node-a's guests.
	f.view.Nodes[1].Status.Guests = append(f.view.Nodes[1].Status.Guests, hypervisor.Status{Name: "web1", State: hypervisor.StateRunning})
	f.view.Nodes[1].Status.MemoryFreeMiB = 1024
	code, out, errs = run("verify", "--config", twoNode, "--node", "node-a", "--socket", f.socket)
	assert.Equal(t, ExitInvalid, code)
	assert.Regexp(t, `^SEVERITY\s+CODE\s+FINDING\n`, out)
	assert.Regexp(t, `error\s+guest-double-run\s+web1 runs on node-a and node-b at once`, out)
	assert.Regexp(t, `error\s+guest-wrong-node\s+web1 runs on node-b, but the ledger gives it to node-a \(epoch 4\)`, out)
	assert.Regexp(t, `error\s+n-plus-1\s+if node-a fails, node-b needs 2048 MiB for web1 but has 1024 MiB free`, out)
	assert.Contains(t, out, "3 error(s), 0 warning(s), seen from node-a")
	assert.Equal(t, "mhcodi: verify: 3 error(s), 0 warning(s)\n", errs)

	code, out, _ = run("verify", "--json", "--config", twoNode, "--node", "node-a", "--socket", f.socket)
	assert.Equal(t, ExitInvalid, code)
	var r verifyReport
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	assert.Equal(t, 3, r.Errors)
	assert.Equal(t, ops.CodeDoubleRun, r.Findings[0].Code)
}

func TestStatusNeedsConfigAndFenced(t *testing.T) {
	code, _, errs := run("status", "--config", "/nonexistent.yaml", "--node", "node-a")
	assert.Equal(t, ExitInvalid, code, errs)
	code, _, errs = run("verify", "--config", twoNode, "--node", "node-a", "--socket", "/nonexistent/f.sock")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errs, "cannot reach node-a's mhcodi-fenced")
}
