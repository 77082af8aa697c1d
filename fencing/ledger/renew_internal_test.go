package ledger

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// Renewals are frequent and short enough that one stuck on a leader that
// hangs (etcd forwards them and waits up to 7 s) is abandoned and tried
// again well within lease_ttl − lease_margin, for every TTL fenced allows.
func TestRenewTiming(t *testing.T) {
	for _, ttl := range []time.Duration{2 * time.Second, 5 * time.Second, 10 * time.Second, time.Minute} {
		every, timeout := renewTiming(ttl)
		assert.LessOrEqual(t, every, time.Second, "ttl %v", ttl)
		assert.GreaterOrEqual(t, every, 200*time.Millisecond, "ttl %v", ttl)
		assert.Less(t, every+timeout, ttl/2, "ttl %v: a stuck renewal and the next one fit in half the TTL", ttl)
	}
}
