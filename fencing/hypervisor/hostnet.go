package hypervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TapsFile lists, in a guest's run directory, the taps its start made:
// what cleanup removes, whatever the cluster file says by then.
const TapsFile = "taps"

// BridgeInfo is what a host says about one of its bridges.
type BridgeInfo struct {
	Name string `json:"name"`
	// Present is false when no bridge of that name exists (Err says what
	// is there instead, if anything).
	Present bool `json:"present"`
	// VLANFiltering says whether the bridge filters VLANs, which a
	// network with a VLAN needs.
	VLANFiltering bool   `json:"vlan_filtering,omitempty"`
	Err           string `json:"err,omitempty"`
}

// Problem says why bi cannot carry a network with vlan, or "".
func (bi BridgeInfo) Problem(vlan int) string {
	switch {
	case bi.Err != "":
		return bi.Err
	case !bi.Present:
		return fmt.Sprintf("bridge %s does not exist", bi.Name)
	case vlan != 0 && !bi.VLANFiltering:
		return fmt.Sprintf("bridge %s does not filter VLANs, which VLAN %d needs (ip link set %s type bridge vlan_filtering 1, and VLAN %d on its uplink)", bi.Name, vlan, bi.Name, vlan)
	}
	return ""
}

// HostNet is what the drivers do to the host's network: look at bridges,
// make and remove the guests' taps, and put a port in a VLAN.
type HostNet interface {
	Bridge(name string) BridgeInfo
	// AddTap makes a persistent tap, a port of bridge with the bridge's
	// MTU, in vlan (its PVID, untagged; 0 leaves the bridge's default),
	// and up. A tap of that name left by an earlier run is replaced.
	AddTap(tap, bridge string, vlan int) error
	// PortVLAN puts dev, a port of a VLAN-filtering bridge, in vlan
	// alone (xen: the vif the hotplug script enslaved).
	PortVLAN(dev string, vlan int) error
	// DelLink removes an interface; one that is gone is no error.
	DelLink(name string) error
}

// NetlinkNet is HostNet through rtnetlink (vishvananda/netlink), in the
// network namespace of the process, or in the one Netns names.
type NetlinkNet struct {
	// Netns is a named network namespace (/run/netns/<name>) to work in;
	// "" is the process's own.
	Netns string
}

var _ HostNet = NetlinkNet{}

// do runs fn with a netlink handle in the namespace. A tap is made
// through /dev/net/tun in the namespace of the thread that opens it, so
// for another namespace fn runs on a thread of its own that enters it;
// the thread is never unlocked, so it ends with the goroutine instead of
// going back to the pool in the wrong namespace.
func (n NetlinkNet) do(fn func(h *netlink.Handle) error) error {
	if n.Netns == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		return fn(h)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromName(n.Netns)
		if err != nil {
			errc <- fmt.Errorf("network namespace %s: %w", n.Netns, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("entering network namespace %s: %w", n.Netns, err)
			return
		}
		h, err := netlink.NewHandle()
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		errc <- fn(h)
	}()
	return <-errc
}

// Bridge implements HostNet.
func (n NetlinkNet) Bridge(name string) BridgeInfo {
	bi := BridgeInfo{Name: name}
	var l netlink.Link
	err := n.do(func(h *netlink.Handle) (err error) {
		l, err = h.LinkByName(name)
		return err
	})
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		return bi
	case err != nil:
		bi.Err = fmt.Sprintf("bridge %s: %v", name, err)
		return bi
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		bi.Err = fmt.Sprintf("%s is a %s, not a bridge", name, l.Type())
		return bi
	}
	bi.Present = true
	bi.VLANFiltering = br.VlanFiltering != nil && *br.VlanFiltering
	return bi
}

// AddTap implements HostNet.
func (n NetlinkNet) AddTap(tap, bridge string, vlan int) error {
	return n.do(func(h *netlink.Handle) error { return addTap(h, tap, bridge, vlan) })
}

func addTap(h *netlink.Handle, tap, bridge string, vlan int) (err error) {
	brl, err := h.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	if old, err := h.LinkByName(tap); err == nil {
		if err := h.LinkDel(old); err != nil {
			return fmt.Errorf("removing the tap %s an earlier run left: %w", tap, err)
		}
	}
	t := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: tap, MTU: brl.Attrs().MTU},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE | netlink.TUNTAP_VNET_HDR,
	}
	if err := h.LinkAdd(t); err != nil {
		return fmt.Errorf("tap %s: %w", tap, err)
	}
	defer func() {
		if err != nil {
			_ = h.LinkDel(t)
		}
	}()
	l, err := h.LinkByName(tap)
	if err != nil {
		return fmt.Errorf("tap %s: %w", tap, err)
	}
	if err := h.LinkSetMTU(l, brl.Attrs().MTU); err != nil {
		return fmt.Errorf("tap %s: mtu %d: %w", tap, brl.Attrs().MTU, err)
	}
	if err := h.LinkSetMaster(l, brl); err != nil {
		return fmt.Errorf("tap %s: on bridge %s: %w", tap, bridge, err)
	}
	if vlan != 0 {
		if err := portVLAN(h, l, vlan); err != nil {
			return fmt.Errorf("tap %s: %w", tap, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("tap %s: up: %w", tap, err)
	}
	return nil
}

// PortVLAN implements HostNet.
func (n NetlinkNet) PortVLAN(dev string, vlan int) error {
	return n.do(func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: %w", dev, err)
		}
		return portVLAN(h, l, vlan)
	})
}

// portVLAN makes vlan the port's only VLAN: its PVID, untagged on the way
// to the guest. The default PVID a new port gets (VLAN 1) is dropped, so
// the guest sees its network's traffic only.
func portVLAN(h *netlink.Handle, l netlink.Link, vlan int) error {
	vids, err := h.BridgeVlanList()
	if err != nil {
		return fmt.Errorf("listing VLANs: %w", err)
	}
	for _, v := range vids[int32(l.Attrs().Index)] {
		if int(v.Vid) == vlan {
			continue
		}
		if err := h.BridgeVlanDel(l, v.Vid, v.PortVID(), v.EngressUntag(), false, true); err != nil {
			return fmt.Errorf("dropping VLAN %d: %w", v.Vid, err)
		}
	}
	if err := h.BridgeVlanAdd(l, uint16(vlan), true, true, false, true); err != nil {
		return fmt.Errorf("VLAN %d: %w", vlan, err)
	}
	return nil
}

// DelLink implements HostNet.
func (n NetlinkNet) DelLink(name string) error {
	return n.do(func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return err
		}
		return nil
	})
}

// CheckBridges says, for every NIC of spec, what keeps its bridge from
// carrying it on this host; nil when every bridge is fit. The error
// names the bridges.
func CheckBridges(hn HostNet, spec GuestSpec) error {
	var probs []string
	for _, nic := range spec.NICs {
		if p := hn.Bridge(nic.Bridge).Problem(nic.VLAN); p != "" {
			probs = append(probs, fmt.Sprintf("NIC %s (network %s): %s on %s", nic.Name, nic.Network, p, spec.Node))
		}
	}
	if len(probs) > 0 {
		return errors.New(strings.Join(probs, "; "))
	}
	return nil
}

// setupTaps makes every NIC's tap and records them in the run directory;
// on failure it removes what it made.
func setupTaps(hn HostNet, spec GuestSpec) error {
	var made []string
	for _, nic := range spec.NICs {
		if err := hn.AddTap(nic.Tap, nic.Bridge, nic.VLAN); err != nil {
			removeTaps(hn, made)
			return fmt.Errorf("NIC %s: %w", nic.Name, err)
		}
		made = append(made, nic.Tap)
		if err := os.WriteFile(filepath.Join(spec.RunDir, TapsFile), []byte(strings.Join(made, "\n")+"\n"), 0o600); err != nil {
			removeTaps(hn, made)
			return fmt.Errorf("recording the taps: %w", err)
		}
	}
	return nil
}

func removeTaps(hn HostNet, taps []string) []error {
	var errs []error
	for _, t := range taps {
		if err := hn.DelLink(t); err != nil {
			errs = append(errs, fmt.Errorf("tap %s: %w", t, err))
		}
	}
	return errs
}

// removeRecordedTaps removes the taps listed in dir's TapsFile, then the
// file.
func removeRecordedTaps(hn HostNet, dir string) []error {
	b, err := os.ReadFile(filepath.Join(dir, TapsFile))
	if err != nil {
		return nil
	}
	errs := removeTaps(hn, strings.Fields(string(b)))
	if len(errs) == 0 {
		_ = os.Remove(filepath.Join(dir, TapsFile))
	}
	return errs
}
