package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mhcodi/mhcodi/configs"
)

// DefaultGuests is the guest a cluster gets when Options.Guests is nil:
// the loopback example's demo guest, mirrored across the first two storage
// nodes. A one-node cluster has none: a disk needs two legs.
func DefaultGuests(storage []string) []configs.Guest {
	if len(storage) < 2 {
		return nil
	}
	legs := storage[:2]
	return []configs.Guest{{
		Name: "demo", VCPUs: 1, Memory: 256 * configs.MiB, PreferredNode: storage[0],
		Disks: []configs.Disk{{Name: "root", Size: 256 * configs.MiB, Legs: legs}},
	}}
}

// q quotes a string for YAML: a Go double-quoted string is a YAML
// double-quoted string for the printable ASCII these files hold.
func q(s string) string { return strconv.Quote(s) }

// writeConfig writes the cluster file for the hosts and loads it back
// through configs.Load, which proves it valid and returns what every
// daemon will read.
//
// One file serves every node, as in production: each node's own paths are
// either in its nodes[] entry (storage.file.dir) or derived from the node
// name by whoever needs them. hypervisor.run_dir is cluster-wide, so it is
// the parent <dir>/run; Host.RunDir (<dir>/run/<node>) is what a daemon of
// one node gets as its own run directory (targetd's control socket lives
// there), passed by flag.
//
// mhcodi-fenced and the CLI take no such flags: on a real cluster
// hypervisor.run_dir and fencing.state_dir are per machine by nature. Here
// every node shares one filesystem, so each node also gets its own copy of
// the file, Host.ConfigPath, that differs only in those two paths (its
// guests' run directories under Host.RunDir, its etcd member under
// Host.StateDir). Everything else is the same byte for byte.
func (c *Cluster) writeConfig(o *Options) (*configs.Config, error) {
	path := c.path("cluster.yaml")
	cfg, err := c.writeConfigFile(o, path, c.path("run"), c.path("state", "fenced"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.path("nodes"), 0o755); err != nil {
		return nil, fmt.Errorf("node cluster files: %w", err)
	}
	for _, h := range c.hosts {
		if _, err := c.writeConfigFile(o, h.ConfigPath(), h.RunDir(), filepath.Join(h.StateDir(), "fenced")); err != nil {
			return nil, fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return cfg, nil
}

// writeConfigFile writes one cluster file with the given run and fenced
// state directories, and loads it back.
func (c *Cluster) writeConfigFile(o *Options, path, runDir, fencedState string) (*configs.Config, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by test/cluster for run %s; the nodes are network namespaces\n", c.prefix)
	fmt.Fprintf(&b, "# on the bridge in netns %s (subnet %s).\n", c.bridgeNetns, c.subnet)
	fmt.Fprintf(&b, "cluster:\n  name: %s\n  iqn_prefix: %s\n\nnodes:\n", q(o.ClusterName), q(o.IQNPrefix))
	var storage []string
	for _, h := range c.hosts {
		fmt.Fprintf(&b, "  - name: %s\n    role: %s\n", q(h.Name), h.Role)
		if h.Role == configs.RoleStorage {
			storage = append(storage, h.Name)
			fmt.Fprintf(&b, "    san_address: %s\n", q(h.SANAddr.String()))
		}
		fmt.Fprintf(&b, "    mgmt_address: %s\n", q(h.MgmtAddr.String()))
		if h.Role == configs.RoleStorage {
			fmt.Fprintf(&b, "    storage:\n      backend: file\n      file:\n        dir: %s\n", q(h.VolumeDir()))
		}
	}
	if o.ServiceNetwork {
		fmt.Fprintf(&b, "\nnetworks:\n  %s: {bridge: %s}\n", ServiceNetwork, ServiceBridge)
	}
	guests := o.Guests
	if guests == nil && len(storage) > 0 {
		guests = DefaultGuests(storage)
	}
	if len(guests) > 0 {
		b.WriteString("\nguests:\n")
	}
	for _, g := range guests {
		fmt.Fprintf(&b, "  - name: %s\n", q(g.Name))
		if g.VCPUs != 0 {
			fmt.Fprintf(&b, "    vcpus: %d\n", g.VCPUs)
		}
		if g.Memory != 0 {
			fmt.Fprintf(&b, "    memory: %s\n", g.Memory)
		}
		if g.PreferredNode != "" {
			fmt.Fprintf(&b, "    preferred_node: %s\n", q(g.PreferredNode))
		}
		if g.Boot != (configs.Boot{}) {
			fmt.Fprintf(&b, "    boot:\n      kernel: %s\n      initramfs: %s\n", q(g.Boot.Kernel), q(g.Boot.Initramfs))
			if g.Boot.Cmdline != "" {
				fmt.Fprintf(&b, "      cmdline: %s\n", q(g.Boot.Cmdline))
			}
		}
		if len(g.NICs) > 0 {
			b.WriteString("    nics:\n")
			for _, n := range g.NICs {
				fmt.Fprintf(&b, "      - network: %s\n", q(n.Network))
				if n.Name != "" {
					fmt.Fprintf(&b, "        name: %s\n", q(n.Name))
				}
				if n.MAC != "" {
					fmt.Fprintf(&b, "        mac: %s\n", q(n.MAC))
				}
				if addr := c.nicAddress(n.Address); addr != "" {
					fmt.Fprintf(&b, "        address: %s\n", q(addr))
				}
			}
		}
		b.WriteString("    disks:\n")
		for _, d := range g.Disks {
			legs := make([]string, len(d.Legs))
			for i, l := range d.Legs {
				legs[i] = q(l)
			}
			fmt.Fprintf(&b, "      - name: %s\n        size: %s\n        legs: [%s]\n", q(d.Name), d.Size, strings.Join(legs, ", "))
		}
	}
	fmt.Fprintf(&b, "\nhypervisor:\n  driver: qemu\n  accel: tcg\n  run_dir: %s\n  image_dir: %s\n",
		q(runDir), q(o.ImageDir))
	for _, l := range o.Hypervisor {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	// link_dir must be absolute and is per node by construction
	// (<link_dir>/<guest>/<disk>/<node>), so one directory of the run does.
	fmt.Fprintf(&b, "\ninitiator:\n  link_dir: %s\n", q(c.path("links")))
	fmt.Fprintf(&b, "\nfencing:\n  state_dir: %s\n", q(fencedState))
	for _, l := range o.Fencing {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	if len(o.Timeouts) > 0 {
		b.WriteString("\ntimeouts:\n")
		for _, l := range o.Timeouts {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	if o.TLS {
		fmt.Fprintf(&b, "\nsecurity:\n  tls_dir: %s\n", q(c.TLSDir()))
	}
	if o.ExtraYAML != "" {
		b.WriteString("\n" + strings.TrimSpace(o.ExtraYAML) + "\n")
	}

	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return nil, fmt.Errorf("write cluster file: %w", err)
	}
	cfg, err := configs.Load(path)
	if err != nil {
		return nil, fmt.Errorf("generated cluster file %s does not load: %w", path, err)
	}
	return cfg, nil
}

// nicAddress completes a NIC address of the form ".N" (the host part
// alone) with the service subnet: the subnet is chosen by New, after the
// caller wrote its guests.
func (c *Cluster) nicAddress(a string) string {
	if n, err := strconv.Atoi(strings.TrimPrefix(a, ".")); err == nil && strings.HasPrefix(a, ".") && n > 0 && n < 255 && c.svcSubnet.IsValid() {
		return c.ServiceAddr(byte(n)).String()
	}
	return a
}
