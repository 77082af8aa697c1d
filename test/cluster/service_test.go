package cluster

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
)

// TestServiceNetwork: with a service network every storage host has its
// bridge br-svc, the client reaches what is on it (here an address on
// node-a's bridge itself, standing in for a guest), NIC addresses ".N"
// become the service subnet's, and the client's namespace goes with the
// cluster.
func TestServiceNetwork(t *testing.T) {
	guests := DefaultGuests([]string{"node-a", "node-b"})
	guests[0].NICs = []configs.NIC{{Network: ServiceNetwork, Address: ".50"}}
	c := NewT(t, Options{Nodes: 2, ServiceNetwork: true, Guests: guests})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	require.True(t, c.ServiceSubnet().IsValid())
	nics := c.Config.NICs("demo")
	require.Len(t, nics, 1)
	assert.Equal(t, c.ServiceAddr(50).String(), nics[0].Address)
	assert.Equal(t, map[string]string{"node-a": ServiceBridge, "node-b": ServiceBridge}, nics[0].Bridges)

	a := c.Host("node-a")
	stand := c.ServiceAddr(60)
	require.NoError(t, runIP(ctx, c.ip, "-n", a.Netns, "addr", "add", stand.String(), "dev", ServiceBridge))
	_, err := c.WaitPing(ctx, stand.Addr())
	require.NoError(t, err)
	mac, err := c.ClientNeighbour(ctx, stand.Addr())
	require.NoError(t, err)
	assert.NotEmpty(t, mac)
	_, err = c.Ping(ctx, netip.MustParseAddr("10.201.0.1"), time.Second)
	assert.ErrorContains(t, err, "not on the service network", "the client pings the service network only")

	// The bridge taken away and given back.
	require.NoError(t, a.SetServiceBridge(ctx, false))
	out, err := a.Exec(ctx, c.ip, "-br", "link", "show", "type", "bridge").Output()
	require.NoError(t, err)
	assert.NotContains(t, strings.Fields(string(out)), ServiceBridge)
	require.NoError(t, a.SetServiceBridge(ctx, true))
	_, err = c.WaitPing(ctx, stand.Addr())
	require.NoError(t, err)

	client := c.ClientNetns()
	require.NoError(t, c.Close())
	_, err = os.Stat(filepath.Join(netnsDir, client))
	assert.True(t, os.IsNotExist(err), "the client namespace is gone")
}
