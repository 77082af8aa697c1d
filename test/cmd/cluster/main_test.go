package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"

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
