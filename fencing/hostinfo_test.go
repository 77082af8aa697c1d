package fencing

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

func TestHostInfo(t *testing.T) {
	cfg, err := configs.Load("../configs/examples/loopback.yaml")
	require.NoError(t, err)
	b, err := HostInfoJSON(cfg, "demo", "node-b", 7, map[string]bool{"node-a": true})
	require.NoError(t, err)
	h, err := channel.ParseHost(b)
	require.NoError(t, err)
	assert.Equal(t, "node-b", h.Node)
	assert.Equal(t, uint64(7), h.Epoch)
	require.Len(t, h.Disks, 1)
	legs := h.Disks[0].Legs
	require.Len(t, legs, 2)
	assert.Equal(t, "node-a", legs[0].Node)
	assert.True(t, legs[0].Stale)
	assert.False(t, legs[0].Local)
	assert.Equal(t, "node-b", legs[1].Node)
	assert.True(t, legs[1].Local)
	assert.False(t, legs[1].Stale)
	for _, l := range cfg.Legs() {
		if l.Node == legs[0].Node {
			assert.Equal(t, l.Serial, legs[0].Serial, "serials come from naming")
		}
	}
	var raw map[string]any
	require.NoError(t, json.Unmarshal(b, &raw))
	assert.Equal(t, "host", raw["type"])

	_, err = HostInfo(cfg, "nope", "node-a", 1, nil)
	assert.ErrorContains(t, err, `guest "nope"`)
	_, err = HostInfo(cfg, "demo", "node-z", 1, nil)
	assert.ErrorContains(t, err, `node "node-z"`)
}

// TestHostInfoNICs: the guest learns its NICs' MACs and static
// addresses, the same whichever node starts it.
func TestHostInfoNICs(t *testing.T) {
	cfg, err := configs.Load("../configs/examples/two-node.yaml")
	require.NoError(t, err)
	var got [][]channel.NIC
	for _, node := range []string{"node-a", "node-b"} {
		b, err := HostInfoJSON(cfg, "web1", node, 3, nil)
		require.NoError(t, err)
		h, err := channel.ParseHost(b)
		require.NoError(t, err)
		got = append(got, h.NICs)
	}
	want := []channel.NIC{
		{Name: "svc", MAC: cfg.NICs("web1")[0].MAC, Address: "203.0.113.10/24"},
		{Name: "backup", MAC: cfg.NICs("web1")[1].MAC},
	}
	assert.Equal(t, want, got[0])
	assert.Equal(t, want, got[1])
}
