package fencing

import (
	"encoding/json"
	"fmt"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// HostInfo is what a guest's guestraid learns from the host that starts
// it (fw_cfg at boot, the channel later): which host it runs on, at which
// fencing epoch, and for each disk which leg is local and which legs are
// stale (may hold another runner's writes, so they are wiped and resynced
// in full instead of re-added through the bitmap).
func HostInfo(cfg *configs.Config, guest, node string, epoch uint64, stale map[string]bool) (*channel.Host, error) {
	g, ok := cfg.Guest(guest)
	if !ok {
		return nil, fmt.Errorf("host info: guest %q is not in %s", guest, cfg.Path)
	}
	if _, ok := cfg.Node(node); !ok {
		return nil, fmt.Errorf("host info: node %q is not in %s", node, cfg.Path)
	}
	h := &channel.Host{Type: channel.TypeHost, Guest: guest, Node: node, Epoch: epoch}
	legs := map[string][]configs.LegInfo{}
	for _, l := range cfg.Legs() {
		if l.Guest == guest {
			legs[l.Disk] = append(legs[l.Disk], l)
		}
	}
	for _, d := range g.Disks {
		disk := channel.Disk{Name: d.Name}
		for _, n := range d.Legs {
			for _, l := range legs[d.Name] {
				if l.Node == n {
					disk.Legs = append(disk.Legs, channel.Leg{Node: n, Serial: l.Serial, Local: n == node, Stale: stale[n]})
				}
			}
		}
		h.Disks = append(h.Disks, disk)
	}
	for _, n := range cfg.NICs(guest) {
		h.NICs = append(h.NICs, channel.NIC{Name: n.Name, MAC: n.MAC, Address: n.Address})
	}
	return h, nil
}

// HostInfoJSON is HostInfo as the bytes the qemu driver hands the guest.
func HostInfoJSON(cfg *configs.Config, guest, node string, epoch uint64, stale map[string]bool) ([]byte, error) {
	h, err := HostInfo(cfg, guest, node, epoch, stale)
	if err != nil {
		return nil, err
	}
	return json.Marshal(h)
}
