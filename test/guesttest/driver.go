package guesttest

import (
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/test/cluster"
)

// driverOptions runs the driver's commands inside the host's namespace.
func driverOptions(c *cluster.Cluster, h *cluster.Host) hypervisor.Options {
	return hypervisor.Options{Prefix: h.Prefix()}
}

func specOptions(c *cluster.Cluster, h *cluster.Host) []hypervisor.SpecOption { return nil }
