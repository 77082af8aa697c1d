package iscsitest

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func procGone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return errors.Is(err, os.ErrNotExist)
}

// A client past its deadline is killed by PID and reported stalled: what
// happens to iscsi-perf against a target that never answers.
func TestRunClientStall(t *testing.T) {
	sleep, err := Tool("sleep")
	require.NoError(t, err)
	start := time.Now()
	res, err := runClient(context.Background(), clientSpec{name: "sleep", argv: []string{sleep, "30"}, timeout: 200 * time.Millisecond})
	require.NoError(t, err)
	assert.True(t, res.stalled)
	assert.Equal(t, -1, res.exitCode, "killed by a signal")
	assert.Less(t, time.Since(start), 5*time.Second)
}

// A client that reads nothing is stalled after idle, well before its
// deadline; one that keeps reading runs to the deadline.
func TestRunClientIdle(t *testing.T) {
	sleep, err := Tool("sleep")
	require.NoError(t, err)
	start := time.Now()
	res, err := runClient(context.Background(), clientSpec{name: "sleep", argv: []string{sleep, "30"},
		timeout: time.Minute, idle: 300 * time.Millisecond})
	require.NoError(t, err)
	assert.True(t, res.stalled)
	assert.GreaterOrEqual(t, res.idleFor, 300*time.Millisecond)
	assert.Less(t, time.Since(start), 5*time.Second)

	sh, err := Tool("sh")
	require.NoError(t, err)
	res, err = runClient(context.Background(), clientSpec{name: "reader", argv: []string{sh, "-c", "exec cat /dev/zero >/dev/null"},
		timeout: 1500 * time.Millisecond, idle: 300 * time.Millisecond})
	require.NoError(t, err)
	assert.True(t, res.stalled, "killed at the deadline")
	assert.Zero(t, res.idleFor, "never idle")
}

// Cancelling the context kills the client too, and says so.
func TestRunClientCancel(t *testing.T) {
	sleep, err := Tool("sleep")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := runClient(ctx, clientSpec{name: "sleep", argv: []string{sleep, "30"}, timeout: time.Minute})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, res.stalled)
}

// Cleanup stops what was added, newest first, once; a process that
// ignores SIGTERM is killed after the grace.
func TestCleanupStopsProcesses(t *testing.T) {
	sh, err := Tool("sh")
	require.NoError(t, err)
	out := &syncbuf.Buffer{}
	p, err := startProc(procSpec{name: "stubborn", argv: []string{sh, "-c", "trap '' TERM; echo up; exec sleep 30"}, out: out})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return out.String() == "up\n" }, 5*time.Second, 10*time.Millisecond)

	c := NewCleanup(nil)
	var order []string
	c.Add("first", func() error { order = append(order, "first"); return nil })
	c.Add("stop stubborn", func() error { order = append(order, "stop"); return p.Stop(100 * time.Millisecond) })
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "idempotent")
	assert.Equal(t, []string{"stop", "first"}, order)
	assert.True(t, p.Exited())
	assert.True(t, procGone(p.PID()), "pid %d reaped", p.PID())

	rss, err := p.PeakRSS()
	require.NoError(t, err, "ru_maxrss after exit")
	assert.Positive(t, rss)

	// Added after Close: runs at once rather than never.
	ran := false
	c.Add("late", func() error { ran = true; return nil })
	assert.True(t, ran)
}

func TestParseProcUsage(t *testing.T) {
	stat := []byte("1234 (mhcodi (x) d) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3*time.Second {
		t.Fatalf("parseStatCPU = %v, %v; want 3s", cpu, err)
	}
	v, f := parseCtxtSwitches([]byte("Name:\tx\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n"))
	if v != 42 || f != 7 {
		t.Fatalf("parseCtxtSwitches = %d, %d; want 42, 7", v, f)
	}
	if _, err := ReadProcUsage(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}
