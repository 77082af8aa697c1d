package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/test/cluster"
)

// TestUpStatusDown: a detached `up` leaves a cluster with targetd running
// that `status` shows and `down` removes entirely.
func TestUpStatusDown(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Named here, so the test knows it; the PID keeps parallel runs apart.
	prefix := fmt.Sprintf("mhct%04x", os.Getpid()&0xffff)
	var out bytes.Buffer
	require.NoError(t, run([]string{"up", "--prefix", prefix, "--witness"}, &out, log), out.String())
	t.Cleanup(func() {
		if st, err := cluster.ReadState(prefix); err == nil {
			_ = cluster.Sweep(t.Context(), st, false)
		}
	})
	assert.Contains(t, out.String(), "down --prefix "+prefix)

	st, err := cluster.ReadState(prefix)
	require.NoError(t, err)
	assert.Zero(t, st.Owner.PID, "a detached cluster has no owner")
	require.Len(t, st.Hosts, 3)
	var daemons []cluster.ProcState
	for _, h := range st.Hosts {
		daemons = append(daemons, h.Procs...)
	}
	require.Len(t, daemons, 2, "targetd on node-a and node-b")
	for _, p := range daemons {
		assert.True(t, cluster.ProcAlive(p), "%s pid %d", p.Name, p.PID)
	}

	out.Reset()
	require.NoError(t, run([]string{"status", "--prefix", prefix, "--json"}, &out, log))
	var shown []cluster.State
	require.NoError(t, json.Unmarshal(out.Bytes(), &shown), out.String())
	require.Len(t, shown, 1)
	assert.Equal(t, prefix, shown[0].Prefix)

	out.Reset()
	require.NoError(t, run([]string{"down", "--prefix", prefix}, &out, log), out.String())
	assert.Contains(t, out.String(), "cluster "+prefix+" is down")
	for _, p := range daemons {
		assert.False(t, cluster.ProcAlive(p), "%s pid %d survived down", p.Name, p.PID)
	}
	for _, h := range st.Hosts {
		_, err := os.Stat("/run/netns/" + h.Netns)
		assert.ErrorIs(t, err, os.ErrNotExist, h.Netns)
	}
	_, err = os.Stat(st.Dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "dir")
	assert.Error(t, run([]string{"down", "--prefix", prefix}, &out, log), "nothing registered any more")
}

// TestUpFenced: `up --fenced --witness` starts fenced on every node with
// a ledger that has quorum; the CLI command it prints for a node works as
// printed (its own cluster file, not the shared one: issue 12), a guest
// starts with it, and `down` ends the guest's qemu and bridge too.
func TestUpFenced(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	prefix := fmt.Sprintf("mhcf%04x", os.Getpid()&0xffff)
	var out bytes.Buffer
	require.NoError(t, run([]string{"up", "--prefix", prefix, "--witness", "--fenced"}, &out, log), out.String())
	t.Cleanup(func() {
		if st, err := cluster.ReadState(prefix); err == nil {
			_ = cluster.Sweep(context.Background(), st, false)
		}
	})
	t.Logf("up --fenced said:\n%s", out.String())
	st, err := cluster.ReadState(prefix)
	require.NoError(t, err)
	fenced := 0
	for _, h := range st.Hosts {
		for _, p := range h.Procs {
			if p.Name == cluster.FencedName {
				fenced++
				assert.True(t, cluster.ProcAlive(p), "fenced on %s", h.Name)
			}
		}
	}
	assert.Equal(t, 3, fenced, "fenced on node-a, node-b and the witness")

	// Run node-a's printed status line, then create and start the guest
	// the same way, with the node's own file.
	var statusLine string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, prefix+"-node-a ") && strings.HasSuffix(strings.TrimSpace(l), "--socket "+filepath.Join(st.Dir, "run", "node-a", "fenced.sock")) {
			statusLine = strings.TrimSpace(l)
		}
	}
	require.NotEmpty(t, statusLine, "up prints the CLI command of node-a")
	assert.Contains(t, statusLine, filepath.Join(st.Dir, "nodes", "node-a.yaml"), "node-a's own cluster file")
	sh := func(line string) string {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		b, err := exec.CommandContext(ctx, "bash", "-c", line).CombinedOutput()
		require.NoError(t, err, "%s\n%s", line, b)
		return string(b)
	}
	assert.Contains(t, sh(statusLine), "node-b")
	sh(strings.Replace(statusLine, " status ", " guest create demo ", 1))
	sh(strings.Replace(statusLine, " status ", " guest start demo ", 1))
	pidFile := filepath.Join(st.Dir, "run", "node-a", "demo", "qemu.pid")
	b, err := os.ReadFile(pidFile)
	require.NoError(t, err, "the guest runs on node-a")
	var pid int
	_, err = fmt.Sscan(string(b), &pid)
	require.NoError(t, err)
	require.NoError(t, syscall.Kill(pid, 0), "qemu of demo, pid %d, runs", pid)

	out.Reset()
	require.NoError(t, run([]string{"down", "--prefix", prefix}, &out, log), out.String())
	assert.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil }, 10*time.Second, 100*time.Millisecond,
		"down left the guest's qemu (pid %d) running", pid)
}
