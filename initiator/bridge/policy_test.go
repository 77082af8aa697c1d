package bridge

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPolicyBackoffAndRecovery(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := NewPolicy(PolicyConfig{IOTimeout: 5 * time.Second}, t0)
	st, since, _ := p.State()
	assert.Equal(t, StateConnecting, st)
	assert.Equal(t, t0, since)
	assert.Equal(t, t0, p.NextAttempt(), "first login at once")

	// Target not there yet: connecting stays, backoff doubles to 5 s.
	c, ok := p.LoginFailed(t0, "connection refused", false)
	require.True(t, ok, "the first failure's reason is reported")
	assert.Equal(t, Change{From: StateConnecting, To: StateConnecting, Since: t0, Reason: "connection refused"}, c)
	now := t0
	var delays []time.Duration
	for range 8 {
		delays = append(delays, p.NextAttempt().Sub(now))
		now = p.NextAttempt()
		_, ok = p.LoginFailed(now, "connection refused", false)
		assert.False(t, ok, "still connecting: no change")
	}
	assert.Equal(t, []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second, 5 * time.Second, 5 * time.Second}, delays)

	c, ok = p.LoginSucceeded(now)
	require.True(t, ok)
	assert.Equal(t, Change{From: StateConnecting, To: StateUp, Since: now}, c)

	// Lost: retry at once, backoff starts over.
	lostAt := now.Add(time.Minute)
	c, ok = p.SessionLost(lostAt, "target closed the connection")
	require.True(t, ok)
	assert.Equal(t, Change{From: StateUp, To: StateDown, Since: lostAt, Reason: "target closed the connection"}, c)
	assert.Equal(t, lostAt, p.NextAttempt())
	_, ok = p.LoginFailed(lostAt, "connection refused", false)
	assert.False(t, ok, "a failed login while down is no new state")
	assert.Equal(t, lostAt.Add(200*time.Millisecond), p.NextAttempt())
	assert.Equal(t, lostAt.Add(5*time.Second), p.Deadline(lostAt))
	assert.Equal(t, lostAt.Add(5*time.Second), p.Deadline(lostAt.Add(2*time.Second)),
		"a request that arrives while the leg is down waits only what is left of the timeout")
	assert.True(t, p.Deadline(lostAt.Add(time.Minute)).Before(lostAt.Add(time.Minute)),
		"a leg down for longer than the timeout fails new requests at once")
	_, _ = p.LoginSucceeded(lostAt.Add(2 * time.Minute))
	assert.Equal(t, lostAt.Add(2*time.Minute+5*time.Second), p.Deadline(lostAt.Add(2*time.Minute)), "up again: the whole timeout")
	_, _ = p.SessionLost(lostAt, "target closed the connection")
	st, since, reason := p.State()
	assert.Equal(t, StateDown, st)
	assert.Equal(t, lostAt, since)
	assert.Equal(t, "target closed the connection", reason)
}

func TestPolicyRefusalLoggedOnce(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := NewPolicy(PolicyConfig{}, t0)
	c, ok := p.LoginFailed(t0, "authorization failure", true)
	require.True(t, ok)
	assert.Equal(t, StateRefused, c.To)
	assert.Equal(t, "authorization failure", c.Reason)
	assert.Equal(t, t0.Add(10*time.Second), p.NextAttempt(), "slow retry after a refusal")

	t1 := p.NextAttempt()
	_, ok = p.LoginFailed(t1, "authorization failure", true)
	assert.False(t, ok, "the same refusal again is not a change")

	t2 := p.NextAttempt()
	c, ok = p.LoginFailed(t2, "authentication failure", true)
	require.True(t, ok, "a refusal for another reason is")
	assert.Equal(t, StateRefused, c.From)
	assert.Equal(t, t0, c.Since, "still refused since the first refusal")

	// The target goes away: down, fast retries again.
	t3 := p.NextAttempt()
	c, ok = p.LoginFailed(t3, "connection refused", false)
	require.True(t, ok)
	assert.Equal(t, StateDown, c.To)
	assert.Equal(t, t3.Add(200*time.Millisecond), p.NextAttempt())

	c, ok = p.Stopped(t3)
	require.True(t, ok)
	assert.Equal(t, StateStopped, c.To)
}
