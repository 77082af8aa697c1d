package configs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("examples", name))
	require.NoError(t, err)
	return string(b)
}

// writeConfig writes text as <tmp>/cluster.yaml and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.yaml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	return p
}

func TestExamplesLoad(t *testing.T) {
	for _, name := range []string{"two-node.yaml", "three-node.yaml", "loopback.yaml"} {
		t.Run(name, func(t *testing.T) {
			c, err := Load(filepath.Join("examples", name))
			require.NoError(t, err)
			assert.NotEmpty(t, c.Legs())
			for _, l := range c.Legs() {
				assert.NotEmpty(t, l.Location, l.Leg)
			}
		})
	}
}

func TestTwoNode(t *testing.T) {
	c, err := Load("examples/two-node.yaml")
	require.NoError(t, err)
	assert.Equal(t, "prod", c.Cluster.Name)
	require.Len(t, c.Nodes, 2)
	assert.Equal(t, "192.0.2.11:3260", c.Nodes[0].SANAddress.AddrPort(DefaultSANPort).String())
	assert.Equal(t, "198.51.100.12:7440", c.Nodes[1].MgmtAddress.AddrPort(DefaultMgmtPort).String())
	g, ok := c.Guest("web1")
	require.True(t, ok)
	assert.Equal(t, 2*GiB, g.Memory)
	assert.Equal(t, 50*GiB, g.Disks[1].Size)
	assert.Equal(t, 10*time.Second, c.Timeouts.ReplacementTimeout)
	legs := c.Legs()
	require.Len(t, legs, 6)
	assert.Equal(t, "/dev/vg0/mhc-web1-root", legs[0].Location)
	assert.Equal(t, "iqn.2026-11.org.example:prod.node-a.web1.root", legs[0].TargetIQN)
	assert.Equal(t, "/dev/mhcodi/web1/root/node-b", legs[1].DevPath)
	assert.Len(t, c.LegsOn("node-a"), 3)
	assert.Equal(t, "iqn.2026-11.org.example:prod.node-b.initiator", c.InitiatorIQN("node-b"))
}

func TestThreeNode(t *testing.T) {
	c, err := Load("examples/three-node.yaml")
	require.NoError(t, err)
	w, ok := c.Node("quorum")
	require.True(t, ok)
	assert.Equal(t, RoleWitness, w.Role)
	assert.Equal(t, RoleStorage, c.Nodes[0].Role, "role defaults to storage")
	assert.Equal(t, "vg_ssd", c.StorageFor("node-b").LVM.VG)
	assert.Equal(t, 2, c.StorageFor("node-b").LVM.Stripes)
	assert.Equal(t, 1, c.StorageFor("node-a").LVM.Stripes, "stripes defaults to 1")
	g, _ := c.Guest("files")
	assert.Equal(t, DefaultVCPUs, g.VCPUs)
	abs, _ := filepath.Abs("examples/chap-secrets.yaml")
	assert.Equal(t, abs, c.Security.CHAPSecrets, "relative paths resolve against the config's directory")
	assert.Equal(t, 15*time.Second, c.Timeouts.LeaseTTL)
}

func TestLoopback(t *testing.T) {
	c, err := Load("examples/loopback.yaml")
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.11:3260", c.Nodes[0].SANAddress.AddrPort(DefaultSANPort).String())
	assert.Equal(t, "127.0.0.12:3260", c.Nodes[1].SANAddress.AddrPort(DefaultSANPort).String())
	legs := c.Legs()
	require.Len(t, legs, 2)
	assert.Equal(t, "demo", legs[0].Guest)
	assert.Equal(t, 256*MiB, legs[0].Size)
	dir, _ := filepath.Abs("examples")
	assert.Equal(t, filepath.Join(dir, "loopback-volumes/node-a/mhc-demo-root"), legs[0].Location)
	assert.Equal(t, filepath.Join(dir, "loopback-volumes/node-b/mhc-demo-root"), legs[1].Location)
}

// broken is one way to break two-node.yaml and the error it must give.
type broken struct {
	name     string
	old, new string // replace old by new in two-node.yaml
	key      string // the key path the error must name
	rule     string // a piece of the rule the error must state
}

var brokenCases = []broken{
	{"unknown key", "    vcpus: 2\n", "    vcpus: 2\n    vpcus: 3\n", "guests[0].vpcus", `unknown key "vpcus" (did you mean "vcpus"?)`},
	{"unknown top-level key", "timeouts:\n", "timeout:\n  foo: 1\ntimeouts:\n", "timeout", `unknown key "timeout"`},
	{"leg on undefined node", "        size: 50G\n        legs: [node-a, node-b]", "        size: 50G\n        legs: [node-a, node-c]", "guests[0].disks[1].legs[1]", `node "node-c" is not defined`},
	{"upper-case node name", "  - name: node-b\n", "  - name: Node-B\n", "nodes[1].name", "upper-case"},
	{"upper-case guest name", "  - name: web1\n", "  - name: Web1\n", "guests[0].name", "upper-case"},
	{"over-long disk name", "      - name: data\n", "      - name: " + strings.Repeat("d", 32) + "\n", "guests[0].disks[1].name", "the limit is 31"},
	{"over-long cluster name", "  name: prod ", "  name: " + strings.Repeat("p", 40) + " ", "cluster.name", "the limit is 31"},
	{"two legs on one node", "        size: 50G\n        legs: [node-a, node-b]", "        size: 50G\n        legs: [node-a, node-a]", "guests[0].disks[1].legs[1]", "must be on different nodes"},
	{"one leg", "        size: 50G\n        legs: [node-a, node-b]", "        size: 50G\n        legs: [node-a]", "guests[0].disks[1].legs", "exactly 2 legs"},
	{"three legs", "        size: 50G\n        legs: [node-a, node-b]", "        size: 50G\n        legs: [node-a, node-b, node-a]", "guests[0].disks[1].legs", "has 3 legs"},
	{"bad size", "size: 50G", "size: 50X", "guests[0].disks[1].size", `"50X" is not a size`},
	{"size not whole MiB", "size: 50G", "size: 1000K", "guests[0].disks[1].size", "whole number of MiB"},
	{"size without unit", "size: 50G", "size: 10", "guests[0].disks[1].size", "10 has no unit, so it would be 10 bytes: write 10G or 10M"},
	{"quoted size without unit", "size: 50G", `size: "4096"`, "guests[0].disks[1].size", "4096 has no unit"},
	{"memory without unit", "memory: 2G", "memory: 2048", "guests[0].memory", "2048 has no unit, so it would be 2048 bytes: write 2048G or 2048M"},
	{"negative size", "size: 50G", "size: -5", "guests[0].disks[1].size", "-5 is not a size"},
	{"missing disk size", "        size: 50G\n", "", "guests[0].disks[1].size", "missing: every disk needs a size"},
	{"negative vcpus", "vcpus: 2", "vcpus: -2", "guests[0].vcpus", "out of range"},
	{"vcpus not a number", "vcpus: 2", "vcpus: two", "guests[0].vcpus", "is not a valid whole number"},
	{"bad address", "san_address: 192.0.2.12", "san_address: 192.0.2.300", "nodes[1].san_address", "is not an IP address"},
	{"host name address", "san_address: 192.0.2.12", "san_address: node-b.example.org", "nodes[1].san_address", "host names are not allowed"},
	{"duplicate SAN address", "san_address: 192.0.2.12", "san_address: 192.0.2.11:3260", "nodes[1].san_address", "already the SAN address of nodes[0]"},
	{"duplicate node", "  - name: node-b\n", "  - name: node-a\n", "nodes[1].name", "already used by nodes[0]"},
	{"duplicate guest", "  - name: db1\n", "  - name: web1\n", "guests[1].name", "already used by guests[0]"},
	{"bad role", "    role: storage\n    san_address: 192.0.2.12", "    role: disk\n    san_address: 192.0.2.12", "nodes[1].role", `"disk" is not a role`},
	{"bad backend", "backend: lvm", "backend: zfs", "storage.backend", `"zfs" is not a backend`},
	{"missing vg", "    vg: vg0 ", "    vg: \"\" ", "storage.lvm.vg", "needs the volume group"},
	{"bad iqn prefix", "iqn_prefix: iqn.2026-11.org.example", "iqn_prefix: iqn.org.example", "cluster.iqn_prefix", "iqn.yyyy-mm.reversed.domain"},
	{"iqn too long", "iqn_prefix: iqn.2026-11.org.example", "iqn_prefix: iqn.2026-11.org." + strings.Repeat("x", 200), "guests[0].disks[0]", "RFC 7143 allows 223"},
	{"duration without unit", "lease_ttl: 10s", "lease_ttl: 10", "timeouts.lease_ttl", "a bare number would be nanoseconds"},
	{"duration out of range", "replacement_timeout: 10s", "replacement_timeout: 0s", "timeouts.replacement_timeout", "out of range"},
	{"preferred node without legs", "    preferred_node: node-a\n", "    preferred_node: node-x\n", "guests[0].preferred_node", `node "node-x" is not defined`},
	{"disks not a list", "    disks:\n      - name: root\n        size: 10G\n        legs: [node-b, node-a]\n", "    disks: root\n", "guests[1].disks[0]", "expected a mapping (key: value lines), got a single value"},
	{"both backends", "    stripes: 1 ", "    stripes: 1\n  file:\n    dir: /srv ", "storage.file", `backend is "lvm"`},
	{"bad hypervisor driver", "timeouts:\n", "hypervisor:\n  driver: kvm\ntimeouts:\n", "hypervisor.driver", `"kvm" is not a driver`},
	{"bad accel", "timeouts:\n", "hypervisor:\n  accel: hvf\ntimeouts:\n", "hypervisor.accel", `"hvf" is not an accelerator`},
	{"bad remote legs", "timeouts:\n", "hypervisor:\n  remote_legs: nfs\ntimeouts:\n", "hypervisor.remote_legs", "not a way to reach a remote leg"},
	{"io timeout too long", "timeouts:\n", "hypervisor:\n  io_timeout: 10m\ntimeouts:\n", "hypervisor.io_timeout", "out of range"},
	{"kernel without initramfs", "    vcpus: 2\n", "    vcpus: 2\n    boot: {kernel: /boot/vmlinuz}\n", "guests[0].boot", "set both kernel and initramfs"},
	{"netlink with CHAP", "timeouts:\n", "initiator:\n  backend: netlink\ntimeouts:\n", "initiator.backend", "cannot do CHAP"},
	{"qemu initiator with xen", "timeouts:\n", "hypervisor:\n  driver: xen\ntimeouts:\n", "initiator.backend", `needs hypervisor.driver "qemu"`},
	{"relative link dir", "timeouts:\n", "initiator:\n  backend: open-iscsi\n  link_dir: dev/mhcodi\ntimeouts:\n", "initiator.link_dir", "not an absolute path"},
}

func TestBrokenConfigs(t *testing.T) {
	base := readExample(t, "two-node.yaml")
	for _, tc := range brokenCases {
		t.Run(tc.name, func(t *testing.T) {
			require.Contains(t, base, tc.old, "test case no longer matches two-node.yaml")
			p := writeConfig(t, strings.Replace(base, tc.old, tc.new, 1))
			c, err := Load(p)
			require.Error(t, err, "a broken config must not load")
			assert.Nil(t, c)
			want := p + ": " + tc.key + ": "
			assert.Contains(t, err.Error(), want, "error must name the file and the key path")
			assert.Contains(t, err.Error(), tc.rule, "error must state the rule")
			es, ok := AsErrors(err)
			require.True(t, ok)
			for _, e := range es {
				assert.Equal(t, p, e.File)
			}
		})
	}
}

func TestVolumeNameCollision(t *testing.T) {
	base := readExample(t, "two-node.yaml")
	text := strings.Replace(base, "  - name: db1\n", "  - name: web1-root\n", 1)
	text = strings.Replace(text, "      - name: data\n", "      - name: x\n", 1)
	// guest web1 disk root-root vs guest web1-root disk root: mhc-web1-root-root twice.
	text = strings.Replace(text, "      - name: root\n        size: 10G\n        legs: [node-a, node-b]", "      - name: root-root\n        size: 10G\n        legs: [node-a, node-b]", 1)
	_, err := Load(writeConfig(t, text))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "volume name mhc-web1-root-root is also the volume name of guests[0].disks[0]")
}

func TestAllErrorsAtOnce(t *testing.T) {
	base := readExample(t, "two-node.yaml")
	text := strings.Replace(base, "  - name: node-b\n", "  - name: Node-B\n", 1)
	text = strings.Replace(text, "size: 50G", "size: lots", 1)
	text = strings.Replace(text, "    vcpus: 2\n", "    vcpus: 2\n    cpus: 2\n", 1)
	_, err := Load(writeConfig(t, text))
	require.Error(t, err)
	es, ok := AsErrors(err)
	require.True(t, ok)
	// An unknown key and a value that does not decode do not hide the
	// rules broken elsewhere; all come at once, in file order.
	keys := []string{}
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	// Keys in the order the schema lists them; unknown keys after the
	// known ones of their mapping.
	assert.Equal(t, []string{
		"nodes[1].name",
		"guests[0].disks[0].legs[1]", // legs on the renamed node are now undefined
		"guests[0].disks[1].size",
		"guests[0].disks[1].legs[1]",
		"guests[0].cpus",
		"guests[1].preferred_node",
		"guests[1].disks[0].legs[0]",
	}, keys, err.Error())
	// The size that did not decode is reported once, as it is written,
	// not again as a size that is missing or too small.
	assert.Equal(t, `"lots" is not a size: write a number with an optional unit K, M, G, T or P (binary, e.g. 10G, 512M)`, es[2].Rule)

	text = strings.Replace(base, "  - name: node-b\n", "  - name: Node-B\n", 1)
	text = strings.Replace(text, "vcpus: 4", "vcpus: 0", 1)
	text = strings.Replace(text, "memory: 8G", "memory: 1M", 1)
	_, err = Load(writeConfig(t, text))
	es, ok = AsErrors(err)
	require.True(t, ok)
	keys = keys[:0]
	for _, e := range es {
		keys = append(keys, e.Key)
	}
	assert.Contains(t, keys, "nodes[1].name")
	assert.Contains(t, keys, "guests[1].memory")
	assert.Contains(t, keys, "guests[0].disks[0].legs[1]", "legs on the renamed node are now undefined")
}

// An unknown key used to stop loading before the rules were checked, so a
// file with a typo and a broken rule needed two runs to fix.
func TestUnknownKeyAndRuleErrorsTogether(t *testing.T) {
	base := readExample(t, "two-node.yaml")
	text := strings.Replace(base, "    vcpus: 2\n", "    vcpus: 2\n    cpus: 2\n", 1)
	text = strings.Replace(text, "  - name: node-b\n", "  - name: node_b\n", 1)
	text = strings.Replace(text, "        size: 50G\n", "", 1)
	p := writeConfig(t, text)
	c, err := Load(p)
	require.Error(t, err)
	assert.Nil(t, c)
	es, ok := AsErrors(err)
	require.True(t, ok)
	for _, want := range []string{
		p + `: guests[0].cpus: unknown key "cpus" (did you mean "vcpus"?)`,
		p + `: nodes[1].name: "node_b" `,
		p + `: guests[0].disks[1].size: missing: every disk needs a size with a unit, e.g. 10G`,
	} {
		assert.Contains(t, err.Error(), want)
	}
	byKey := map[string]*FieldError{}
	for _, e := range es {
		assert.Equal(t, p, e.File)
		byKey[e.Key] = e
	}
	require.Contains(t, byKey, "nodes[1].name", err.Error())
	assert.Contains(t, byKey["nodes[1].name"].Rule, "is not a DNS label")
	// The file's order: nodes before guests.
	assert.Equal(t, "nodes[1].name", es[0].Key, err.Error())
}

// A bare number for a size below 1 MiB is refused with a hint, both as a
// YAML number and as a quoted string; an explicit unit, B included, and a
// bare byte count of at least 1 MiB (what scripts write) are accepted.
func TestSizeNeedsUnit(t *testing.T) {
	base := readExample(t, "loopback.yaml")
	require.Contains(t, base, "size: 256M")
	for _, bare := range []string{"10", `"4096"`, "1048575", "1.5", "1048576.5"} {
		p := writeConfig(t, strings.Replace(base, "size: 256M", "size: "+bare, 1))
		_, err := Load(p)
		require.Error(t, err, bare)
		assert.Contains(t, err.Error(), p+": guests[0].disks[0].size: ", bare)
		assert.Contains(t, err.Error(), "has no unit", bare)
		es, _ := AsErrors(err)
		assert.Len(t, es, 1, "only the size is wrong: %v", err)
	}
	for in, want := range map[string]Size{"268435456B": 256 * MiB, "0.25G": 256 * MiB, "262144K": 256 * MiB,
		"268435456": 256 * MiB, `"268435456"`: 256 * MiB, "1048576": MiB} {
		c, err := Load(writeConfig(t, strings.Replace(base, "size: 256M", "size: "+in, 1)))
		require.NoError(t, err, in)
		assert.Equal(t, want, c.Guests[0].Disks[0].Size, in)
	}
}

func TestWitnessRules(t *testing.T) {
	base := readExample(t, "three-node.yaml")
	for _, tc := range []broken{
		{"leg on witness", "        size: 20G\n        legs: [node-a, node-b]", "        size: 20G\n        legs: [node-a, quorum]", "guests[0].disks[0].legs[1]", `node "quorum" is a witness`},
		{"witness with SAN address", "    role: witness\n", "    role: witness\n    san_address: 192.0.2.23\n", "nodes[2].san_address", "a witness holds no storage"},
		{"guest prefers witness", "    preferred_node: node-a\n", "    preferred_node: quorum\n", "guests[0].preferred_node", "guests run on storage nodes"},
		{"storage node without SAN address", "    san_address: 192.0.2.21\n", "", "nodes[0].san_address", "needs a SAN address"},
		{"node without mgmt address", "    mgmt_address: 198.51.100.23\n", "", "nodes[2].mgmt_address", "needs a management address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Contains(t, base, tc.old)
			p := writeConfig(t, strings.Replace(base, tc.old, tc.new, 1))
			_, err := Load(p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), p+": "+tc.key+": ")
			assert.Contains(t, err.Error(), tc.rule)
		})
	}
}

func TestPreferredNodeMustHoldLegs(t *testing.T) {
	base := readExample(t, "three-node.yaml")
	// Add a third storage node that holds no leg of "mail" and prefer it.
	text := strings.Replace(base, "  - name: quorum\n", "  - name: node-c\n    san_address: 192.0.2.24\n    mgmt_address: 198.51.100.24\n  - name: quorum\n", 1)
	text = strings.Replace(text, "    preferred_node: node-a\n", "    preferred_node: node-c\n", 1)
	p := writeConfig(t, text)
	_, err := Load(p)
	require.Error(t, err)
	assert.Contains(t, err.Error(), p+`: guests[0].preferred_node: node "node-c" holds no leg of disks[0] (root)`)
}

func TestLoopbackSharedDir(t *testing.T) {
	base := readExample(t, "loopback.yaml")
	p := writeConfig(t, strings.Replace(base, "dir: loopback-volumes/node-b", "dir: loopback-volumes/node-a", 1))
	_, err := Load(p)
	require.Error(t, err)
	assert.Contains(t, err.Error(), p+": nodes[1].storage.file.dir: ")
	assert.Contains(t, err.Error(), "both legs of a disk would be one file")
}

func TestFileErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.yaml: cannot read: no such file or directory")

	p := writeConfig(t, "cluster:\n  name: [unclosed\n")
	_, err = Load(p)
	require.Error(t, err)
	assert.Contains(t, err.Error(), p+": not valid YAML: line")

	_, err = Load(t.TempDir())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is a directory")
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("MHCODI_TIMEOUTS_LEASE_TTL", "30s")
	t.Setenv("MHCODI_STORAGE_LVM_VG", "vg_other")
	c, err := Load("examples/two-node.yaml")
	require.NoError(t, err)
	assert.Equal(t, 30*time.Second, c.Timeouts.LeaseTTL)
	assert.Equal(t, "vg_other", c.Storage.LVM.VG)
	assert.Equal(t, "/dev/vg_other/mhc-web1-root", c.Legs()[0].Location)

	t.Setenv("MHCODI_TIMEOUTS_LEASE_TTL", "1h")
	_, err = Load("examples/two-node.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "examples/two-node.yaml: timeouts.lease_ttl (from $MHCODI_TIMEOUTS_LEASE_TTL): 1h0m0s is out of range")

	t.Setenv("MHCODI_TIMEOUTS_LEASE_TTL", "soon")
	_, err = Load("examples/two-node.yaml")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "timeouts.lease_ttl (from $MHCODI_TIMEOUTS_LEASE_TTL): ")
	assert.Contains(t, err.Error(), `"soon" is not a duration`)
}

func TestEnvOverrideFillsMissingSection(t *testing.T) {
	base := readExample(t, "two-node.yaml")
	i := strings.Index(base, "timeouts:")
	p := writeConfig(t, base[:i])
	t.Setenv("MHCODI_TIMEOUTS_REPLACEMENT_TIMEOUT", "5s")
	c, err := Load(p)
	require.NoError(t, err)
	assert.Equal(t, 5*time.Second, c.Timeouts.ReplacementTimeout)
	assert.Equal(t, DefaultLeaseTTL, c.Timeouts.LeaseTTL)
}

func TestKeyLess(t *testing.T) {
	assert.True(t, keyLess("guests[2].name", "guests[10].name"))
	assert.True(t, keyLess("guests[1]", "guests[1].name"))
	assert.False(t, keyLess("nodes[0]", "guests[5]"))
	assert.True(t, keyLess("", "cluster.name"))

	cfg := reflect.TypeFor[Config]()
	assert.True(t, keyLessIn(cfg, "nodes[0]", "guests[5]"), "schema order, as files are written")
	assert.True(t, keyLessIn(cfg, "cluster.name", "cluster.iqn_prefix"))
	assert.True(t, keyLessIn(cfg, "guests[0].memory", "guests[0].disks[0].name"))
	assert.True(t, keyLessIn(cfg, "guests[0].disks[0].size", "guests[0].disks[0].legs[1]"))
	assert.True(t, keyLessIn(cfg, "nodes[1].storage.lvm.vg", "nodes[1].storage.file"), "through the *Storage pointer")
	assert.True(t, keyLessIn(cfg, "guests[0].boot", "guests[0].cpus"), "unknown keys after the known ones")
	assert.True(t, keyLessIn(cfg, "guests[2].name", "guests[10].name"))
	assert.False(t, keyLessIn(cfg, "fencing", "cluster"))
}

func TestDuplicateDisk(t *testing.T) {
	base := readExample(t, "two-node.yaml")
	p := writeConfig(t, strings.Replace(base, "      - name: data\n", "      - name: root\n", 1))
	_, err := Load(p)
	require.Error(t, err)
	assert.Contains(t, err.Error(), p+`: guests[0].disks[1].name: disk name "root" is already used by guests[0].disks[0]; disk names must be unique within a guest`)
}

func TestNetworks(t *testing.T) {
	c, err := Load("examples/two-node.yaml")
	require.NoError(t, err)
	assert.Equal(t, []string{"backup", "svc"}, c.NetworkNames())
	assert.Equal(t, "br-svc", c.BridgeFor("node-a", "svc"))
	assert.Equal(t, "br-vlans", c.BridgeFor("node-b", "svc"), "a node's own bridge replaces the network's")
	assert.Equal(t, "br-backup", c.BridgeFor("node-b", "backup"))
	nics := c.NICs("web1")
	require.Len(t, nics, 2)
	assert.Equal(t, "svc", nics[0].Name, "a NIC is named after its network by default")
	assert.Equal(t, 10, nics[0].VLAN)
	assert.True(t, nics[0].Derived)
	assert.Equal(t, map[string]string{"node-a": "br-svc", "node-b": "br-vlans"}, nics[0].Bridges)
	assert.Equal(t, "203.0.113.10/24", nics[0].Address)
	assert.NotEqual(t, nics[0].MAC, nics[1].MAC)
	assert.Empty(t, c.NICs("db1"))
	again, err := Load("examples/two-node.yaml")
	require.NoError(t, err)
	assert.Equal(t, nics, again.NICs("web1"), "MACs are stable")
}

func TestNetworkErrors(t *testing.T) {
	base := readExample(t, "two-node.yaml")
	cases := []struct {
		name, old, new string
		want           []string // "KEY: RULE fragment"
	}{
		{"unknown network", "      - network: backup\n", "      - network: bakup\n",
			[]string{`guests[0].nics[1].network: network "bakup" is not defined in networks (defined: backup, svc)`}},
		{"VLAN out of range", "vlan: 10}", "vlan: 4095}",
			[]string{"networks.svc.vlan: 4095 is outside 1–4094"}},
		{"VLAN negative", "vlan: 10}", "vlan: -1}",
			[]string{"networks.svc.vlan: -1 is outside 1–4094"}},
		{"two NICs with one MAC", "      - network: backup\n", "        mac: 52:54:00:00:00:01\n      - network: backup\n        mac: 52:54:00:00:00:01\n",
			[]string{"guests[0].nics[1].mac: MAC 52:54:00:00:00:01 is also the MAC of guests[0].nics[0]"}},
		{"multicast MAC", "      - network: backup\n", "      - network: backup\n        mac: 01:00:5e:00:00:01\n",
			[]string{"guests[0].nics[1].mac: \"01:00:5e:00:00:01\" is a multicast address"}},
		{"SAN bridge as a service bridge", "{bridge: br-backup}", "{bridge: br-san}",
			[]string{`networks.backup.bridge: bridge "br-san" is node-a's SAN bridge (nodes[0].san_bridge); a service network needs a bridge of its own`}},
		{"SAN bridge as a node's own bridge", "svc: {bridge: br-vlans}", "svc: {bridge: br-sanb}\n    san_bridge: br-sanb",
			[]string{`nodes[1].networks.svc.bridge: bridge "br-sanb" is node-b's SAN bridge`}},
		{"node names an unknown network", "svc: {bridge: br-vlans}", "svx: {bridge: br-vlans}",
			[]string{`nodes[1].networks.svx: network "svx" is not defined in networks`}},
		{"bridge name too long", "{bridge: br-backup}", "{bridge: br-backup-0123456789}",
			[]string{`networks.backup.bridge: "br-backup-0123456789" is 20 bytes; Linux interface names have at most 15`}},
		{"no bridge anywhere", "{bridge: br-backup}", "{vlan: 20}",
			[]string{"networks.backup.bridge: missing: name the network's bridge here, or on every storage node (nodes[].networks.backup.bridge); node-a, node-b name none"}},
		{"two NICs with one name", "      - network: backup\n", "      - network: svc\n",
			[]string{`guests[0].nics[1].name: NIC name "svc" is already used by guests[0].nics[0]`}},
		{"bad address", "address: 203.0.113.10/24", "address: 203.0.113.10",
			[]string{`guests[0].nics[0].address: "203.0.113.10" is not an address with its prefix length`}},
		{"unknown key in a network", "{bridge: br-backup}", "{bridge: br-backup, vlna: 3}",
			[]string{`networks.backup.vlna: unknown key "vlna" (did you mean "vlan"?)`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.Replace(base, tc.old, tc.new, 1)
			require.NotEqual(t, base, text, "the case changes nothing")
			_, err := Load(writeConfig(t, text))
			require.Error(t, err)
			es, ok := AsErrors(err)
			require.True(t, ok, "%v", err)
			var got []string
			for _, e := range es {
				got = append(got, e.Key+": "+e.Rule)
				assert.True(t, strings.HasSuffix(e.File, "cluster.yaml"), e.Error())
			}
			require.Len(t, got, len(tc.want), strings.Join(got, "\n"))
			for i, w := range tc.want {
				assert.Contains(t, got[i], w)
			}
		})
	}
}
