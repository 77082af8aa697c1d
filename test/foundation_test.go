package test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// repo is the repository root, seen from this package's directory.
const repo = ".."

// binary returns the path of a built mhcodi binary, failing the test with the
// step that builds it when it is missing.
func binary(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(repo, "bin", name))
	require.NoError(t, err)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not built: run `make build` (or `make test`, which builds first): %v", p, err)
	}
	return p
}

// tool finds a system tool, failing with the install step when it is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	for _, dir := range []string{"", "/usr/sbin", "/sbin"} {
		cand := name
		if dir != "" {
			cand = filepath.Join(dir, name)
		}
		if p, err := exec.LookPath(cand); err == nil {
			return p
		}
	}
	t.Fatalf("%s not found: run `make deps` (scripts/deps.sh installs it)", name)
	return ""
}

// TestDepsTools checks that scripts/deps.sh left every tool the later suites
// run: QEMU and its iSCSI driver, libiscsi's conformance and perf tools, tgt,
// md, LVM, open-iscsi, namespaces.
func TestDepsTools(t *testing.T) {
	for _, name := range []string{
		"qemu-system-x86_64", "qemu-img", "qemu-io", "iscsi-test-cu", "iscsi-perf", "iscsi-inq",
		"tgtd", "tgtadm", "mdadm", "lvm", "iscsiadm", "cpio", "ip", "depmod",
	} {
		tool(t, name)
	}
	// QEMU's iSCSI block driver ships as a module in qemu-block-extra.
	mods, _ := filepath.Glob("/usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so")
	assert.NotEmpty(t, mods, "QEMU's iSCSI driver missing: run `make deps` (package qemu-block-extra)")
}

// TestGuestKernel checks the kernel deps.sh fetched: a vmlinuz, its modules
// with a modules.dep, and the modules the guest and VM tests load.
func TestGuestKernel(t *testing.T) {
	kdir := filepath.Join(repo, ".cache", "kernel")
	ver, err := os.ReadFile(filepath.Join(kdir, "VERSION"))
	require.NoError(t, err, "no guest kernel: run `make deps`")
	kver := strings.TrimSpace(string(ver))
	require.Regexp(t, `^\d+\.\d+\.\d+-\d+-amd64$`, kver)

	vmlinuz, err := os.ReadFile(filepath.Join(kdir, "vmlinuz"))
	require.NoError(t, err)
	// A bzImage carries "HdrS" at offset 0x202 (the x86 boot protocol).
	require.Greater(t, len(vmlinuz), 0x206)
	assert.Equal(t, "HdrS", string(vmlinuz[0x202:0x206]), "vmlinuz is not an x86 bzImage")

	dep, err := os.ReadFile(filepath.Join(kdir, "lib", "modules", kver, "modules.dep"))
	require.NoError(t, err, "modules.dep missing: deps.sh runs depmod")
	for _, m := range []string{"md/raid1.ko", "md/md-mod.ko", "md/dm-mod.ko", "block/virtio_blk.ko", "scsi/iscsi_tcp.ko", "scsi/libiscsi.ko", "virtio_console.ko"} {
		assert.Contains(t, string(dep), m, "module %s missing from the guest kernel", m)
	}
}

// TestDepsIdempotent runs deps.sh again: with everything in place it
// installs nothing, fetches nothing, and says so.
func TestDepsIdempotent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("deps.sh needs root: run `make test` as root (it installs Debian packages)")
	}
	cmd := exec.Command("bash", filepath.Join(repo, "scripts", "deps.sh"))
	cmd.Env = append(os.Environ(), "MHCODI_NO_APT=1") // a second run must need no apt at all
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), "deps: installed: none (all packages present)")
	assert.Contains(t, string(out), "deps: present: guest kernel")
	assert.Contains(t, string(out), "deps: present: staticcheck")
	assert.NotContains(t, string(out), "fetching")
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary(t, "mhcodi"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	}
	t.Fatalf("run mhcodi: %v", err)
	return 0, "", ""
}

// TestConfigCheckExamples runs the built binary on every example, as a
// sysadmin would.
func TestConfigCheckExamples(t *testing.T) {
	examples, err := filepath.Glob(filepath.Join(repo, "configs", "examples", "*.yaml"))
	require.NoError(t, err)
	require.Len(t, examples, 3)
	for _, ex := range examples {
		code, out, errs := runCLI(t, "config", "check", "--config", ex)
		assert.Equal(t, 0, code, "%s: %s", ex, errs)
		assert.Contains(t, out, ex+": valid.")
		assert.Contains(t, out, "TARGET IQN")
		assert.Contains(t, out, "/dev/mhcodi/")
	}
}

// TestConfigCheckBrokenBinary: the foundation issue's broken copies of
// two-node.yaml, through the real binary: non-zero exit, file, key, rule.
func TestConfigCheckBrokenBinary(t *testing.T) {
	base, err := os.ReadFile(filepath.Join(repo, "configs", "examples", "two-node.yaml"))
	require.NoError(t, err)
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown key", "    role: storage\n", "    role: storage\n    sanaddress: 192.0.2.99\n", `nodes[0].sanaddress: unknown key "sanaddress" (did you mean "san_address"?)`},
		{"undefined node", "legs: [node-b, node-a]", "legs: [node-b, node-z]", `guests[1].disks[0].legs[1]: node "node-z" is not defined`},
		{"upper-case", "  name: prod ", "  name: Prod ", `cluster.name: "Prod" has upper-case letters`},
		{"over-long", "      - name: data\n", "      - name: " + strings.Repeat("data", 8) + "\n", `guests[0].disks[1].name: "` + strings.Repeat("data", 8) + `" is 32 characters, the limit is 31`},
		{"two legs on one node", "legs: [node-b, node-a]", "legs: [node-a, node-a]", `guests[1].disks[0].legs[1]: node "node-a" already holds legs[0] of this disk`},
		// Issue 15's broken networks and NICs.
		{"unknown network", "      - network: backup\n", "      - network: bakup\n", `guests[0].nics[1].network: network "bakup" is not defined in networks (defined: backup, svc)`},
		{"VLAN out of range", "vlan: 10}", "vlan: 4095}", `networks.svc.vlan: 4095 is outside 1–4094`},
		{"two NICs with one MAC", "      - network: backup\n", "        mac: 52:54:00:00:00:01\n      - network: backup\n        mac: 52:54:00:00:00:01\n", `guests[0].nics[1].mac: MAC 52:54:00:00:00:01 is also the MAC of guests[0].nics[0]`},
		{"SAN bridge as a service bridge", "{bridge: br-backup}", "{bridge: br-san}", `networks.backup.bridge: bridge "br-san" is node-a's SAN bridge (nodes[0].san_bridge); a service network needs a bridge of its own`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Contains(t, string(base), tc.old)
			p := filepath.Join(t.TempDir(), "cluster.yaml")
			require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(base), tc.old, tc.new, 1)), 0o644))
			code, out, errs := runCLI(t, "config", "check", "--config", p)
			assert.Equal(t, 1, code)
			assert.Empty(t, out)
			assert.Contains(t, errs, p+": "+tc.want)
		})
	}
}
