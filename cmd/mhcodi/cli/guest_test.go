package cli

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/api"
)

// fakeFenced serves the local socket's paths the CLI uses: PathOp
// answers the scripted progress lines, PathCluster the view.
type fakeFenced struct {
	socket string
	mu     sync.Mutex
	ops    []api.OpRequest
	lines  []api.Progress
	view   api.ClusterView
	// mux takes more routes (a test of another command).
	mux *http.ServeMux
}

func startFenced(t *testing.T) *fakeFenced {
	t.Helper()
	dir, err := os.MkdirTemp("", "fenced")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	f := &fakeFenced{socket: filepath.Join(dir, "f.sock")}
	l, err := net.Listen("unix", f.socket)
	require.NoError(t, err)
	mux := http.NewServeMux()
	f.mux = mux
	mux.HandleFunc("POST "+api.PathOp, func(w http.ResponseWriter, r *http.Request) {
		var req api.OpRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.ops = append(f.ops, req)
		lines := f.lines
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, p := range lines {
			_ = enc.Encode(p)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("GET "+api.PathCluster, func(w http.ResponseWriter, _ *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(f.view)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

var at = time.Date(2026, 11, 3, 12, 0, 1, 0, time.Local)

func TestGuestFailoverProgress(t *testing.T) {
	f := startFenced(t)
	f.lines = []api.Progress{
		{Time: at, Step: "check", Message: "node-a and node-b up; the ledger has quorum"},
		{Time: at, Step: "ledger", Message: "web1: epoch 4 → 5, owner node-b (was node-a)"},
		{Time: at.Add(time.Second), Step: "done", Message: "web1 runs on node-b", Done: true},
	}
	code, out, errs := run("guest", "failover", "web1", "--to", "node-b", "--node", "node-b", "--socket", f.socket)
	require.Equal(t, ExitOK, code, errs)
	assert.Equal(t, "12:00:01  check  node-a and node-b up; the ledger has quorum\n"+
		"12:00:01  ledger  web1: epoch 4 → 5, owner node-b (was node-a)\n"+
		"12:00:02  done  web1 runs on node-b\n", out)
	assert.Equal(t, []api.OpRequest{{Op: api.OpFailover, Guest: "web1", To: "node-b"}}, f.ops)
}

func TestGuestRefused(t *testing.T) {
	f := startFenced(t)
	f.lines = []api.Progress{
		{Time: at, Step: "check", Message: "node-b up, node-a down; the ledger has no quorum"},
		{Time: at, Step: "refused", Done: true,
			Err:  "node-a is unreachable and the ledger has no quorum; if node-a is really down, run again with --force",
			Hint: "mhcodi guest failover web1 --to node-b --force"},
	}
	code, out, errs := run("guest", "failover", "web1", "--node", "node-b", "--socket", f.socket)
	assert.Equal(t, ExitInvalid, code)
	assert.Equal(t, "12:00:01  check  node-b up, node-a down; the ledger has no quorum\n", out)
	assert.Equal(t, "mhcodi: node-a is unreachable and the ledger has no quorum; if node-a is really down, run again with --force\n"+
		"  hint: mhcodi guest failover web1 --to node-b --force\n", errs)

	code, _, _ = run("guest", "failover", "web1", "--force", "--node", "node-b", "--socket", f.socket)
	assert.Equal(t, ExitInvalid, code)
	assert.Equal(t, api.OpRequest{Op: api.OpFailover, Guest: "web1", Force: true}, f.ops[1])
}

func TestGuestAndNodeOps(t *testing.T) {
	f := startFenced(t)
	f.lines = []api.Progress{{Time: at, Step: "done", Message: "ok", Done: true}}
	for _, tc := range []struct {
		args []string
		want api.OpRequest
	}{
		{[]string{"guest", "create", "web1"}, api.OpRequest{Op: api.OpCreate, Guest: "web1"}},
		{[]string{"guest", "start", "web1", "--to", "node-a"}, api.OpRequest{Op: api.OpStart, Guest: "web1", To: "node-a"}},
		{[]string{"guest", "stop", "web1"}, api.OpRequest{Op: api.OpStop, Guest: "web1"}},
		{[]string{"guest", "destroy", "web1"}, api.OpRequest{Op: api.OpDestroy, Guest: "web1"}},
		{[]string{"node", "evacuate", "node-a"}, api.OpRequest{Op: api.OpEvacuate, Node: "node-a"}},
		{[]string{"node", "declare-dead", "node-a"}, api.OpRequest{Op: api.OpDeclareDead, Node: "node-a", Force: true}},
	} {
		code, _, errs := run(append(tc.args, "--node", "node-b", "--socket", f.socket)...)
		require.Equal(t, ExitOK, code, "%v: %s", tc.args, errs)
		assert.Equal(t, tc.want, f.ops[len(f.ops)-1], "%v", tc.args)
	}
}

func TestGuestUsageAndUnreachable(t *testing.T) {
	code, _, errs := run("guest", "start", "web1")
	assert.Equal(t, ExitUsage, code)
	assert.Contains(t, errs, `required flag(s) "node" not set`)

	code, _, _ = run("guest", "start", "--node", "node-a")
	assert.Equal(t, ExitUsage, code, "no guest named")

	code, _, errs = run("guest", "start", "web1", "--node", "node-a", "--socket", filepath.Join(t.TempDir(), "none.sock"))
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errs, "cannot reach node-a's mhcodi-fenced at ")
	assert.Contains(t, errs, "is it running there?")
}

func TestGuestStreamEndsEarly(t *testing.T) {
	f := startFenced(t)
	f.lines = []api.Progress{{Time: at, Step: "ledger", Message: "web1: epoch 4 → 5, owner node-b"}}
	code, out, errs := run("guest", "start", "web1", "--node", "node-b", "--socket", f.socket)
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, out, "web1: epoch 4 → 5")
	assert.Contains(t, errs, "the stream ended before the operation did")
}
