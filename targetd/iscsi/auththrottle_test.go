package iscsi

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	t0      = time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	srcA    = netip.MustParseAddr("192.0.2.7")
	srcB    = netip.MustParseAddr("2001:db8::7")
	noLimit = time.Hour
)

func TestAuthThrottleBackoff(t *testing.T) {
	th := newAuthThrottle(time.Second, 4*time.Second, time.Minute)
	wait, ok := th.admit(srcA, t0, noLimit)
	require.True(t, ok)
	assert.Zero(t, wait, "a source without failures is not held up")

	// Sequential tries, each failing as soon as it is served: the waits
	// double from 1 s and stop at 4 s.
	now := t0
	var waits []time.Duration
	for range 6 {
		th.failed(srcA, now)
		wait, ok := th.admit(srcA, now, noLimit)
		require.True(t, ok)
		waits = append(waits, wait)
		now = now.Add(wait)
	}
	s := time.Second
	assert.Equal(t, []time.Duration{s, 2 * s, 4 * s, 4 * s, 4 * s, 4 * s}, waits)

	wait, _ = th.admit(srcB, now, noLimit)
	assert.Zero(t, wait, "other sources are not affected")
}

func TestAuthThrottleSpacesParallelLogins(t *testing.T) {
	th := newAuthThrottle(time.Second, 4*time.Second, time.Minute)
	th.failed(srcA, t0)
	// Five connections at once: they take turns, a delay apart, so that
	// parallel connections guess no faster than one.
	var waits []time.Duration
	for range 5 {
		wait, ok := th.admit(srcA, t0, 10*time.Second)
		require.True(t, ok)
		waits = append(waits, wait)
	}
	s := time.Second
	assert.Equal(t, []time.Duration{s, 2 * s, 3 * s, 4 * s, 5 * s}, waits)
	for range 5 {
		th.admit(srcA, t0, 10*time.Second)
	}
	_, ok := th.admit(srcA, t0, 10*time.Second)
	assert.False(t, ok, "a login that would wait past the limit is dropped")
	_, ok = th.admit(srcA, t0, 10*time.Second)
	assert.False(t, ok, "and takes no turn")
	wait, ok := th.admit(srcA, t0.Add(time.Second), 10*time.Second)
	assert.True(t, ok)
	assert.Equal(t, 10*time.Second, wait)
}

func TestAuthThrottleSuccessForgets(t *testing.T) {
	th := newAuthThrottle(time.Second, 4*time.Second, time.Minute)
	for i := range 3 {
		th.failed(srcA, t0.Add(time.Duration(i)*time.Second))
	}
	_, ok := th.succeeded(srcA, t0.Add(3*time.Second))
	assert.True(t, ok, "the failures not logged yet are summed up")
	wait, _ := th.admit(srcA, t0.Add(3*time.Second), noLimit)
	assert.Zero(t, wait)
	logIt, next := th.failed(srcA, t0.Add(4*time.Second))
	assert.True(t, logIt, "a failure after a success is logged in full")
	assert.Equal(t, time.Second, next, "and starts the backoff over")
}

func TestAuthThrottleForgetsIdleSources(t *testing.T) {
	th := newAuthThrottle(time.Second, 4*time.Second, time.Minute)
	for i := range 5 {
		th.failed(srcA, t0.Add(time.Duration(i)*time.Second))
	}
	th.due(t0.Add(time.Minute)) // the window ends, counting
	th.due(t0.Add(2 * time.Minute))
	_, next := th.failed(srcA, t0.Add(3*time.Minute))
	assert.Equal(t, 4*time.Second, next, "failures a few minutes apart still add up")
	th.due(t0.Add(5 * time.Minute))
	_, next = th.failed(srcA, t0.Add(3*time.Minute+authForget))
	assert.Equal(t, time.Second, next, "after a quiet spell of authForget the source starts over")

	th.maxSources = 3
	for i := range 10 {
		th.failed(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), t0.Add(time.Hour+time.Duration(i)*time.Second))
	}
	assert.Len(t, th.srcs, 3, "the table is bounded")
	assert.Contains(t, th.srcs, netip.AddrFrom4([4]byte{198, 51, 100, 9}), "the most recent source is kept")
}

// TestAuthThrottleLogWindows: 50 failures in a second log one line, then
// one summary when the window ends; a window without failures closes.
func TestAuthThrottleLogWindows(t *testing.T) {
	th := newAuthThrottle(time.Second, 4*time.Second, time.Minute)
	logged := 0
	for i := range 50 {
		if logIt, _ := th.failed(srcA, t0.Add(time.Duration(i)*17*time.Millisecond)); logIt {
			logged++
		}
	}
	assert.Equal(t, 1, logged, "only the first failure is logged in full")
	at, ok := th.nextDue()
	require.True(t, ok)
	assert.Equal(t, t0.Add(time.Minute), at)
	assert.Empty(t, th.due(t0.Add(59*time.Second)), "nothing before the window ends")
	assert.Equal(t, []authSummary{{src: srcA, count: 49, window: time.Minute}}, th.due(t0.Add(time.Minute)))

	// The attack goes on: a summary per window.
	for i := range 7 {
		logIt, _ := th.failed(srcA, t0.Add(time.Minute+time.Duration(i)*time.Second))
		assert.False(t, logIt)
	}
	assert.Equal(t, []authSummary{{src: srcA, count: 7, window: time.Minute}}, th.due(t0.Add(2*time.Minute)))
	// A quiet window closes without a line; the next failure is logged.
	assert.Empty(t, th.due(t0.Add(3*time.Minute)))
	_, ok = th.nextDue()
	assert.False(t, ok, "no window open")
	logIt, _ := th.failed(srcA, t0.Add(4*time.Minute))
	assert.True(t, logIt)

	// Stopping sums up the open windows.
	th.failed(srcA, t0.Add(4*time.Minute+time.Second))
	th.failed(srcB, t0.Add(4*time.Minute+time.Second))
	assert.Equal(t, []authSummary{{src: srcA, count: 1, window: 10 * time.Second}}, th.flush(t0.Add(4*time.Minute+10*time.Second)),
		"srcB's one failure was logged in full")
}
