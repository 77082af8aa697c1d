package fenced

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/hypervisor"
)

// presentBridges is a HostNet that knows which bridges exist, and makes
// nothing.
type presentBridges map[string]bool

func (p presentBridges) Bridge(name string) hypervisor.BridgeInfo {
	return hypervisor.BridgeInfo{Name: name, Present: p[name]}
}
func (presentBridges) AddTap(string, string, int) error { return nil }
func (presentBridges) PortVLAN(string, int) error       { return nil }
func (presentBridges) DelLink(string) error             { return nil }

// TestNodeStatusBridges: a node reports its bridge of every service
// network, once per bridge, with whether it is there.
func TestNodeStatusBridges(t *testing.T) {
	cfg := testConfig(t, false, "networks:\n  svc: {bridge: br-svc}\n  also: {bridge: br-svc}\n  lan: {bridge: br-lan}\n")
	s, _, _, _ := newTestServer(t, cfg, "node-a")
	s.hostNet = presentBridges{"br-svc": true}
	st, err := s.NodeStatus(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []hypervisor.BridgeInfo{{Name: "br-svc", Present: true}, {Name: "br-lan"}}, st.Bridges)
}
