package configs

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/naming"
)

// Limits checked by validate.
const (
	minDiskSize   = MiB
	minMemory     = 64 * MiB
	maxVCPUs      = 512
	maxStripes    = 128
	legsPerDisk   = 2
	sizeAlignment = MiB
)

var (
	replacementTimeoutRange = [2]time.Duration{time.Second, 2 * time.Minute}
	leaseTTLRange           = [2]time.Duration{2 * time.Second, 5 * time.Minute}
	stopTimeoutRange        = [2]time.Duration{time.Second, time.Hour}
	ioTimeoutRange          = [2]time.Duration{time.Second, 2 * time.Minute}
	monitorIntervalRange    = [2]time.Duration{500 * time.Millisecond, time.Minute}
)

// vgNameRE is lvm(8)'s rule for VG names: letters, digits and "+_.-", not
// starting with '-'.
var vgNameRE = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$`)

func (c *Config) applyDefaults() {
	for i := range c.Nodes {
		if c.Nodes[i].Role == "" {
			c.Nodes[i].Role = RoleStorage
		}
	}
	for i := range c.Guests {
		g := &c.Guests[i]
		if g.VCPUs == 0 {
			g.VCPUs = DefaultVCPUs
		}
		if g.Memory == 0 {
			g.Memory = DefaultMemory
		}
		if g.PreferredNode == "" && len(g.Disks) > 0 && len(g.Disks[0].Legs) > 0 {
			g.PreferredNode = g.Disks[0].Legs[0]
		}
	}
}

// validator collects every broken rule of one file.
type validator struct {
	file string
	env  map[string]string
	errs Errors
}

func (v *validator) addf(key, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{File: v.file, Key: key, Env: v.env[key], Rule: fmt.Sprintf(format, args...)})
}

func (v *validator) label(key, s string) {
	if err := naming.ValidLabel(s); err != nil {
		v.addf(key, "%v", err)
	}
}

// uniqueName checks the name of list[i] (a node, guest or disk of kind) as a
// label and against the names seen before it in list; valid names are
// recorded in seen. scope ends the rule, e.g. " within a guest".
func (v *validator) uniqueName(seen map[string]int, list string, i int, kind, name, scope string) {
	key := fmt.Sprintf("%s[%d].name", list, i)
	v.label(key, name)
	if j, dup := seen[name]; dup && name != "" {
		v.addf(key, "%s name %q is already used by %s[%d]; %s names must be unique%s", kind, name, list, j, kind, scope)
	} else if naming.ValidLabel(name) == nil {
		seen[name] = i
	}
}

// validate checks every rule and resolves relative paths. It assumes
// applyDefaults ran.
func (c *Config) validate(env map[string]string) error {
	v := &validator{file: c.Path, env: env}

	v.label("cluster.name", c.Cluster.Name)
	if err := naming.ValidIQNPrefix(c.Cluster.IQNPrefix); err != nil {
		v.addf("cluster.iqn_prefix", "%v", err)
	}

	nodes := c.validateNodes(v)
	c.Storage.validate(v, "storage", c.Dir, c.needsClusterStorage())
	c.checkSharedDirs(v)
	c.validateNetworks(v)
	c.validateGuests(v, nodes)

	if c.Security.CHAPSecrets != "" {
		c.Security.CHAPSecrets = resolve(c.Dir, c.Security.CHAPSecrets)
	}
	checkRange(v, "timeouts.replacement_timeout", c.Timeouts.ReplacementTimeout, replacementTimeoutRange)
	checkRange(v, "timeouts.lease_ttl", c.Timeouts.LeaseTTL, leaseTTLRange)
	c.validateHypervisor(v)
	c.validateInitiator(v)
	c.validateFencing(v)

	if len(v.errs) > 0 {
		// Left in the order the checks ran, which follows the file.
		return v.errs
	}
	return nil
}

func (c *Config) validateHypervisor(v *validator) {
	h := &c.Hypervisor
	if h.Driver == "" {
		h.Driver = DefaultHypervisorDriver
	}
	if h.Driver != DriverQEMU && h.Driver != DriverXen {
		v.addf("hypervisor.driver", "%q is not a driver: use %q or %q", h.Driver, DriverQEMU, DriverXen)
	}
	if h.Accel == "" {
		h.Accel = DefaultAccel
	}
	if h.Accel != AccelAuto && h.Accel != AccelKVM && h.Accel != AccelTCG {
		v.addf("hypervisor.accel", "%q is not an accelerator: use %q, %q or %q", h.Accel, AccelAuto, AccelKVM, AccelTCG)
	}
	if h.QEMU == "" {
		h.QEMU = DefaultQEMU
	}
	if h.RunDir == "" {
		h.RunDir = DefaultRunDir
	}
	h.RunDir = resolve(c.Dir, h.RunDir)
	if h.ImageDir == "" {
		h.ImageDir = DefaultImageDir
	}
	h.ImageDir = resolve(c.Dir, h.ImageDir)
	checkRange(v, "hypervisor.stop_timeout", h.StopTimeout, stopTimeoutRange)
	checkRange(v, "hypervisor.io_timeout", h.IOTimeout, ioTimeoutRange)
	if h.RemoteLegs == "" {
		h.RemoteLegs = RemoteBridge
	}
	if h.RemoteLegs != RemoteBridge && h.RemoteLegs != RemoteLibiscsi {
		v.addf("hypervisor.remote_legs", "%q is not a way to reach a remote leg: use %q or %q", h.RemoteLegs, RemoteBridge, RemoteLibiscsi)
	}
	for i := range c.Guests {
		b := &c.Guests[i].Boot
		key := fmt.Sprintf("guests[%d].boot", i)
		if (b.Kernel == "") != (b.Initramfs == "") {
			v.addf(key, "set both kernel and initramfs, or neither (to boot the image in hypervisor.image_dir)")
		}
		if b.Kernel != "" {
			b.Kernel = resolve(c.Dir, b.Kernel)
		}
		if b.Initramfs != "" {
			b.Initramfs = resolve(c.Dir, b.Initramfs)
		}
	}
}

func (c *Config) validateInitiator(v *validator) {
	in := &c.Initiator
	if in.Backend == "" {
		in.Backend = DefaultInitiatorBackend
	}
	switch in.Backend {
	case InitiatorQEMU:
		if c.Hypervisor.Driver != DriverQEMU {
			v.addf("initiator.backend", "%q needs hypervisor.driver %q; with %q use %q or %q", in.Backend, DriverQEMU, c.Hypervisor.Driver, InitiatorOpenISCSI, InitiatorNetlink)
		}
	case InitiatorOpenISCSI:
	case InitiatorNetlink:
		if c.Security.CHAPSecrets != "" {
			v.addf("initiator.backend", "%q cannot do CHAP, but security.chap_secrets is set; use %q", in.Backend, InitiatorOpenISCSI)
		}
	default:
		v.addf("initiator.backend", "%q is not a backend: use %q, %q or %q", in.Backend, InitiatorQEMU, InitiatorOpenISCSI, InitiatorNetlink)
	}
	if in.LinkDir == "" {
		in.LinkDir = DefaultLinkDir
	}
	if !filepath.IsAbs(in.LinkDir) {
		v.addf("initiator.link_dir", "%q is not an absolute path", in.LinkDir)
	}
}

func (c *Config) validateFencing(v *validator) {
	f := &c.Fencing
	checkRange(v, "fencing.monitor_interval", f.MonitorInterval, monitorIntervalRange)
	if f.LeaseMargin <= 0 || f.LeaseMargin >= c.Timeouts.LeaseTTL {
		v.addf("fencing.lease_margin", "%v must be above zero and below timeouts.lease_ttl (%v): an owner that cannot renew destroys its guests this long before its lease can expire elsewhere", f.LeaseMargin, c.Timeouts.LeaseTTL)
	}
	if f.StateDir == "" {
		f.StateDir = DefaultFencedStateDir
	}
	f.StateDir = resolve(c.Dir, f.StateDir)
	if f.Watchdog != "" && !filepath.IsAbs(f.Watchdog) {
		v.addf("fencing.watchdog", "%q is not an absolute path (e.g. /dev/watchdog)", f.Watchdog)
	}
	if f.Etcd.ClientPort == 0 {
		f.Etcd.ClientPort = DefaultEtcdClientPort
	}
	if f.Etcd.PeerPort == 0 {
		f.Etcd.PeerPort = DefaultEtcdPeerPort
	}
	if f.Etcd.ClientPort == f.Etcd.PeerPort || f.Etcd.ClientPort == DefaultMgmtPort || f.Etcd.PeerPort == DefaultMgmtPort {
		v.addf("fencing.etcd", "client_port %d, peer_port %d and fenced's port %d must differ", f.Etcd.ClientPort, f.Etcd.PeerPort, DefaultMgmtPort)
	}
	if c.Security.TLSDir == "" {
		c.Security.TLSDir = DefaultTLSDir
	}
	c.Security.TLSDir = resolve(c.Dir, c.Security.TLSDir)
}

func checkRange(v *validator, key string, d time.Duration, r [2]time.Duration) {
	if d < r[0] || d > r[1] {
		v.addf(key, "%v is out of range: must be between %v and %v", d, r[0], r[1])
	}
}

// validateNodes checks the nodes and returns the index of each valid name.
func (c *Config) validateNodes(v *validator) map[string]int {
	byName := map[string]int{}
	san := map[string]int{}
	mgmt := map[string]int{}
	if len(c.Nodes) == 0 {
		v.addf("nodes", "at least one node must be defined")
	}
	for i := range c.Nodes {
		n := &c.Nodes[i]
		key := fmt.Sprintf("nodes[%d]", i)
		v.uniqueName(byName, "nodes", i, "node", n.Name, "")
		switch n.Role {
		case RoleStorage:
			if n.SANAddress.IsZero() {
				v.addf(key+".san_address", "a storage node needs a SAN address (where its targetd listens)")
			}
		case RoleWitness:
			if !n.SANAddress.IsZero() {
				v.addf(key+".san_address", "a witness holds no storage, so it has no SAN address; remove the key")
			}
			if n.Storage != nil {
				v.addf(key+".storage", "a witness holds no storage; remove the section")
			}
		default:
			v.addf(key+".role", "%q is not a role: use %q or %q", n.Role, RoleStorage, RoleWitness)
		}
		if n.MgmtAddress.IsZero() {
			v.addf(key+".mgmt_address", "every node needs a management address (where its fenced listens)")
		}
		if !n.SANAddress.IsZero() {
			ap := n.SANAddress.AddrPort(DefaultSANPort).String()
			if j, dup := san[ap]; dup {
				v.addf(key+".san_address", "%s is already the SAN address of nodes[%d]; every target needs its own address", ap, j)
			}
			san[ap] = i
		}
		if !n.MgmtAddress.IsZero() {
			ap := n.MgmtAddress.AddrPort(DefaultMgmtPort).String()
			if j, dup := mgmt[ap]; dup {
				v.addf(key+".mgmt_address", "%s is already the management address of nodes[%d]", ap, j)
			}
			mgmt[ap] = i
			if !n.SANAddress.IsZero() && n.SANAddress.AddrPort(DefaultSANPort) == n.MgmtAddress.AddrPort(DefaultMgmtPort) {
				v.addf(key+".mgmt_address", "%s is also this node's SAN address; targetd and fenced cannot share a port", ap)
			}
		}
		if n.Storage != nil {
			n.Storage.validate(v, key+".storage", c.Dir, true)
		}
	}
	return byName
}

// needsClusterStorage reports whether some storage node has no storage
// section of its own and so uses the cluster's.
func (c *Config) needsClusterStorage() bool {
	for _, n := range c.Nodes {
		if n.Role == RoleStorage && n.Storage == nil {
			return true
		}
	}
	return false
}

func (s *Storage) validate(v *validator, key, dir string, required bool) {
	lvmSet := s.LVM != (LVMStorage{})
	fileSet := s.File != (FileStorage{})
	switch s.Backend {
	case "":
		if required {
			v.addf(key+".backend", "missing: choose %q (a volume group) or %q (a directory of sparse files)", BackendLVM, BackendFile)
		}
		return
	case BackendLVM:
		if s.LVM.VG == "" {
			v.addf(key+".lvm.vg", "missing: the lvm backend needs the volume group that holds the legs")
		} else if !vgNameRE.MatchString(s.LVM.VG) {
			v.addf(key+".lvm.vg", "%q is not a volume group name (letters, digits and +_.- only, not starting with '-')", s.LVM.VG)
		}
		if s.LVM.Stripes < 0 || s.LVM.Stripes > maxStripes {
			v.addf(key+".lvm.stripes", "%d is out of range: must be between 1 and %d (lvcreate -i)", s.LVM.Stripes, maxStripes)
		}
		if s.LVM.Stripes == 0 {
			s.LVM.Stripes = DefaultStripes
		}
		if fileSet {
			v.addf(key+".file", "set, but %s.backend is %q; remove the section or change the backend", key, s.Backend)
		}
	case BackendFile:
		if s.File.Dir == "" {
			v.addf(key+".file.dir", "missing: the file backend needs the directory that holds the legs")
		} else {
			s.File.Dir = resolve(dir, s.File.Dir)
		}
		if lvmSet {
			v.addf(key+".lvm", "set, but %s.backend is %q; remove the section or change the backend", key, s.Backend)
		}
	default:
		v.addf(key+".backend", "%q is not a backend: use %q or %q", s.Backend, BackendLVM, BackendFile)
	}
}

// checkSharedDirs refuses two nodes on this machine's loopback addresses
// that would keep their legs in the same directory: both legs of a disk
// have the same file name, so they would be one file, not a mirror.
func (c *Config) checkSharedDirs(v *validator) {
	seen := map[string]int{}
	for i, n := range c.Nodes {
		if n.Role != RoleStorage || !n.SANAddress.IP.IsLoopback() {
			continue
		}
		s := c.StorageFor(n.Name)
		if s.Backend != BackendFile || s.File.Dir == "" {
			continue
		}
		if j, dup := seen[s.File.Dir]; dup {
			v.addf(fmt.Sprintf("nodes[%d].storage.file.dir", i),
				"nodes[%d] and nodes[%d] run on this machine (loopback) and would share %s, so both legs of a disk would be one file; give each node its own storage.file.dir", j, i, s.File.Dir)
		}
		seen[s.File.Dir] = i
	}
}

func (c *Config) validateGuests(v *validator, nodes map[string]int) {
	guests := map[string]int{}
	volumes := map[string]string{} // volume name -> key of the disk that has it
	macs := map[string]string{}    // NIC MAC -> key of the NIC that has it
	addrs := map[string]string{}   // NIC address -> key of the NIC that has it
	for i := range c.Guests {
		g := &c.Guests[i]
		key := fmt.Sprintf("guests[%d]", i)
		v.uniqueName(guests, "guests", i, "guest", g.Name, "")
		if g.VCPUs < 1 || g.VCPUs > maxVCPUs {
			v.addf(key+".vcpus", "%d is out of range: must be between 1 and %d", g.VCPUs, maxVCPUs)
		}
		if g.Memory < minMemory || g.Memory%sizeAlignment != 0 {
			v.addf(key+".memory", "%s (%d bytes) must be at least %s and a whole number of MiB", g.Memory, uint64(g.Memory), minMemory)
		}
		if len(g.Disks) == 0 {
			v.addf(key+".disks", "a guest needs at least one disk")
		}
		disks := map[string]int{}
		for j := range g.Disks {
			d := &g.Disks[j]
			dkey := fmt.Sprintf("%s.disks[%d]", key, j)
			v.uniqueName(disks, key+".disks", j, "disk", d.Name, " within a guest")
			if d.Size == 0 {
				v.addf(dkey+".size", "missing: every disk needs a size with a unit, e.g. 10G (binary units K, M, G, T)")
			} else if d.Size < minDiskSize || d.Size%sizeAlignment != 0 {
				v.addf(dkey+".size", "%s (%d bytes) must be at least %s and a whole number of MiB, so both legs have the same size on every backend", d.Size, uint64(d.Size), minDiskSize)
			}
			c.validateLegs(v, dkey, d.Legs, nodes)
			if naming.ValidLabel(g.Name) == nil && naming.ValidLabel(d.Name) == nil {
				vol := naming.VolumeName(g.Name, d.Name)
				if other, dup := volumes[vol]; dup {
					v.addf(dkey+".name", "volume name %s is also the volume name of %s (names join with '-'); rename one guest or disk", vol, other)
				}
				volumes[vol] = dkey
				for _, node := range d.Legs {
					if naming.ValidLabel(node) != nil || naming.ValidLabel(c.Cluster.Name) != nil {
						continue
					}
					iqn := naming.TargetIQN(c.Cluster.IQNPrefix, naming.Leg{Cluster: c.Cluster.Name, Guest: g.Name, Disk: d.Name, Node: node})
					if len(iqn) > naming.MaxIQNLen {
						v.addf(dkey, "target IQN %s is %d bytes, RFC 7143 allows %d; shorten the IQN prefix or the names", iqn, len(iqn), naming.MaxIQNLen)
					}
				}
			}
		}
		c.validatePreferred(v, key, g, nodes)
		c.validateNICs(v, key, g, macs, addrs)
	}
}

func (c *Config) validateLegs(v *validator, dkey string, legs []string, nodes map[string]int) {
	if len(legs) != legsPerDisk {
		v.addf(dkey+".legs", "has %d legs; a disk is mirrored across exactly %d legs on two different storage nodes", len(legs), legsPerDisk)
	}
	seen := map[string]int{}
	for k, node := range legs {
		lkey := fmt.Sprintf("%s.legs[%d]", dkey, k)
		i, ok := nodes[node]
		switch {
		case !ok:
			v.addf(lkey, "node %q is not defined", node)
		case c.Nodes[i].Role != RoleStorage:
			v.addf(lkey, "node %q is a %s; legs live on storage nodes", node, c.Nodes[i].Role)
		}
		if first, dup := seen[node]; dup {
			v.addf(lkey, "node %q already holds legs[%d] of this disk; the two legs must be on different nodes, or one host's loss takes both", node, first)
		}
		seen[node] = k
	}
}

func (c *Config) validatePreferred(v *validator, key string, g *Guest, nodes map[string]int) {
	pkey := key + ".preferred_node"
	if g.PreferredNode == "" {
		return // no disks: reported already
	}
	i, ok := nodes[g.PreferredNode]
	if !ok {
		v.addf(pkey, "node %q is not defined", g.PreferredNode)
		return
	}
	if c.Nodes[i].Role != RoleStorage {
		v.addf(pkey, "node %q is a %s; guests run on storage nodes", g.PreferredNode, c.Nodes[i].Role)
		return
	}
	for j, d := range g.Disks {
		if len(d.Legs) > 0 && !slices.Contains(d.Legs, g.PreferredNode) {
			v.addf(pkey, "node %q holds no leg of disks[%d] (%s), so the guest would read it over the network; pick a node that holds a leg of every disk", g.PreferredNode, j, d.Name)
		}
	}
}

// resolve makes p absolute against dir, the config file's directory.
func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, strings.TrimPrefix(p, "./"))
}
