package guesttest

import (
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/test/cluster"
)

// driverOptions runs the driver's commands (qemu, the leg bridge) inside
// the host's namespace, makes guests' taps there, with the host's own run
// directory.
func driverOptions(c *cluster.Cluster, h *cluster.Host) hypervisor.Options {
	return hypervisor.Options{Prefix: h.Prefix(), Netns: h.Netns, Bridge: c.Bin("mhcodi-bridge"), RunDir: h.RunDir()}
}

func specOptions(_ *cluster.Cluster, h *cluster.Host) []hypervisor.SpecOption {
	return []hypervisor.SpecOption{hypervisor.WithRunDir(h.RunDir())}
}
