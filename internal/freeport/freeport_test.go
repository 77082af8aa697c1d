package freeport

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A daemon handed two portals at once must get two ports, and none that an
// outgoing connection could be given meanwhile (CI lost a targetd start to
// a metrics port that was already taken).
func TestPortalsDistinctFreeAndNotEphemeral(t *testing.T) {
	lo, _ := EphemeralRange()
	for i := 0; i < 50; i++ {
		ps, err := Portals("127.0.0.11", 3)
		require.NoError(t, err)
		seen := map[string]bool{}
		for _, p := range ps {
			host, port, err := net.SplitHostPort(p)
			require.NoError(t, err)
			assert.Equal(t, "127.0.0.11", host)
			n, err := strconv.Atoi(port)
			require.NoError(t, err)
			assert.GreaterOrEqual(t, n, minPort)
			assert.Less(t, n, lo, "port %d is in the ephemeral range", n)
			assert.False(t, seen[port], "port %s handed out twice in %v", port, ps)
			seen[port] = true
			l, err := net.Listen("tcp4", p)
			require.NoError(t, err, "portal %s is not free", p)
			l.Close()
		}
	}
}

func TestPortSkipsATakenPort(t *testing.T) {
	// Take many ports; Port must never return one of them.
	taken := map[int]bool{}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ps, err := Portals("127.0.0.1", 200)
	require.NoError(t, err)
	for _, p := range ps {
		l, err := net.Listen("tcp4", p)
		require.NoError(t, err)
		ls = append(ls, l)
		taken[l.Addr().(*net.TCPAddr).Port] = true
	}
	for i := 0; i < 100; i++ {
		p, err := Port("127.0.0.1")
		require.NoError(t, err)
		assert.False(t, taken[p], "port %d is held by this test", p)
	}
}
