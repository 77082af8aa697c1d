package hypervisor

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// scratchNetns makes a named network namespace for the test (root only).
func scratchNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a network namespace, a bridge and taps")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("no /dev/net/tun")
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "mhcht-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name
}

func TestNetlinkNetTaps(t *testing.T) {
	name := scratchNetns(t)
	hn := NetlinkNet{Netns: name}
	assert.Equal(t, BridgeInfo{Name: "br-svc"}, hn.Bridge("br-svc"))
	assert.Equal(t, "bridge br-svc does not exist", hn.Bridge("br-svc").Problem(0))

	ns, err := netns.GetFromName(name)
	require.NoError(t, err)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	require.NoError(t, err)
	defer h.Close()
	require.NoError(t, h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-plain", MTU: 1400}}))
	require.NoError(t, h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-svc"}}))
	svc, err := h.LinkByName("br-svc")
	require.NoError(t, err)
	// Kernels built without CONFIG_BRIDGE_VLAN_FILTERING refuse it.
	vlans := h.BridgeSetVlanFiltering(svc, true) == nil

	plain := hn.Bridge("br-plain")
	assert.True(t, plain.Present)
	assert.Empty(t, plain.Problem(0))
	assert.Contains(t, plain.Problem(10), "bridge br-plain does not filter VLANs")
	if vlans {
		assert.Empty(t, hn.Bridge("br-svc").Problem(10))
	}
	assert.Contains(t, hn.Bridge("lo").Problem(0), "lo is a device, not a bridge")

	// An untagged tap takes the bridge's MTU.
	require.NoError(t, hn.AddTap("mttest0", "br-plain", 0))
	tap, err := h.LinkByName("mttest0")
	require.NoError(t, err)
	br, _ := h.LinkByName("br-plain")
	assert.Equal(t, br.Attrs().Index, tap.Attrs().MasterIndex)
	assert.Equal(t, 1400, tap.Attrs().MTU)
	assert.Equal(t, "tuntap", tap.Type())

	// A tap in VLAN 10: PVID, untagged, and nothing else.
	if vlans {
		require.NoError(t, hn.AddTap("mttest1", "br-svc", 10))
		tap1, err := h.LinkByName("mttest1")
		require.NoError(t, err)
		vids, err := h.BridgeVlanList()
		require.NoError(t, err)
		got := vids[int32(tap1.Attrs().Index)]
		require.Len(t, got, 1, "%v", got)
		assert.EqualValues(t, 10, got[0].Vid)
		assert.True(t, got[0].PortVID() && got[0].EngressUntag())
	} else {
		t.Log("this kernel's bridges do not filter VLANs (CONFIG_BRIDGE_VLAN_FILTERING): the VLAN part is not run")
	}

	// Made again (a run that died left it): replaced, not refused.
	require.NoError(t, hn.AddTap("mttest0", "br-plain", 0))

	// A tap on a bridge that does not exist fails and leaves nothing.
	require.Error(t, hn.AddTap("mttest2", "br-none", 0))
	_, err = h.LinkByName("mttest2")
	require.Error(t, err)

	require.NoError(t, hn.DelLink("mttest0"))
	require.NoError(t, hn.DelLink("mttest0"), "a tap that is gone is no error")
	_, err = h.LinkByName("mttest0")
	require.Error(t, err)
}

// TestSetupTapsRecordsAndRemoves: the taps a start made are recorded in
// the run directory and removed from it, and a failing NIC leaves none.
func TestSetupTapsRecordsAndRemoves(t *testing.T) {
	cfg := loadCluster(t, nil)
	spec, err := SpecFor(cfg, "web1", "node-a", nil)
	require.NoError(t, err)
	spec.RunDir = t.TempDir()
	hn := newFakeNet(map[string]bool{"br-svc": true, "br-lan": false})
	require.NoError(t, setupTaps(hn, spec))
	assert.Equal(t, map[string]string{spec.NICs[0].Tap: "br-svc", spec.NICs[1].Tap: "br-lan"}, hn.Taps())
	assert.FileExists(t, filepath.Join(spec.RunDir, TapsFile))
	assert.Empty(t, removeRecordedTaps(hn, spec.RunDir))
	assert.Empty(t, hn.Taps())
	assert.NoFileExists(t, filepath.Join(spec.RunDir, TapsFile))

	hn.failTap = spec.NICs[1].Tap
	require.ErrorContains(t, setupTaps(hn, spec), "NIC lan: no tap for you")
	assert.Empty(t, hn.Taps(), "the first NIC's tap is removed again")
}

// TestQEMUMissingBridge: a start on a host without a NIC's bridge fails
// before anything is made, naming the bridge.
func TestQEMUMissingBridge(t *testing.T) {
	cfg := loadCluster(t, nil)
	cfg.Hypervisor.RunDir = t.TempDir()
	spec, err := SpecFor(cfg, "web1", "node-b", nil)
	require.NoError(t, err)
	hn := newFakeNet(map[string]bool{"br-svc": true, "br-lan": false})
	d, err := NewQEMU(cfg, "node-b", Options{HostNet: hn, QEMU: "/nonexistent/qemu"})
	require.NoError(t, err)
	err = d.Start(t.Context(), spec)
	require.ErrorContains(t, err, "NIC svc (network svc): bridge br-trunk does not exist on node-b")
	assert.Empty(t, hn.Taps())
	assert.NoDirExists(t, filepath.Join(cfg.Hypervisor.RunDir, "web1"))
}

// TestQEMUListReapsTaps: the taps of a guest whose qemu ended by itself
// go at the next List; those of a start in progress (holding the start
// lock) stay.
func TestQEMUListReapsTaps(t *testing.T) {
	cfg := loadCluster(t, nil)
	cfg.Hypervisor.RunDir = t.TempDir()
	hn := newFakeNet(map[string]bool{"br-svc": true, "br-lan": false})
	d, err := NewQEMU(cfg, "node-a", Options{HostNet: hn})
	require.NoError(t, err)
	spec, err := SpecFor(cfg, "web1", "node-a", nil)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(spec.RunDir, 0o700))
	require.NoError(t, setupTaps(hn, spec))

	unlock, err := d.lockStart("web1")
	require.NoError(t, err)
	_, err = d.List(t.Context())
	require.NoError(t, err)
	assert.Len(t, hn.Taps(), 2, "a start in progress keeps its taps")
	unlock()

	_, err = d.List(t.Context())
	require.NoError(t, err)
	assert.Empty(t, hn.Taps())
	assert.NoFileExists(t, filepath.Join(spec.RunDir, TapsFile))
}
