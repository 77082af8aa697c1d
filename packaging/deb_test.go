package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// run runs a command and returns its combined output, failing the test
// with it when the command fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: scripts/deps.sh installs it (make test runs it first)", tool)
		}
	}
}

// TestDeb builds both packages as make deb does and checks them the way
// Debian would: what they hold and declare, an install into a scratch
// root with dpkg --root, the units (systemd-analyze verify), every manual
// page (man -l, with groff's warnings), the completions, that every
// binary runs and tells its version, and lintian, which must report no
// error.
func TestDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the packages (-short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg --root needs root")
	}
	need(t, "dpkg", "dpkg-deb", "lintian", "man", "systemd-analyze")
	tmp := t.TempDir()
	dist := filepath.Join(tmp, "dist")
	const version = "1.2.3-4-gdeadbeef"
	start := time.Now()
	out := run(t, repo, []string{"DIST=" + dist, "VERSION=" + version}, "bash", "packaging/deb.sh")
	t.Logf("packaging/deb.sh: %.1f s\n%s", time.Since(start).Seconds(), out)

	debs := map[string]string{}
	for _, p := range []string{"mhcodi", "mhcodi-guest"} {
		path := filepath.Join(dist, p+"_1.2.3+git4.gdeadbeef-1_amd64.deb")
		fi, err := os.Stat(path)
		require.NoError(t, err, "make deb names its packages <name>_<version>_amd64.deb")
		t.Logf("%s: %d KiB", filepath.Base(path), fi.Size()/1024)
		debs[p] = path
	}

	// What the packages declare.
	field := func(deb, name string) string {
		return strings.TrimSpace(run(t, "", nil, "dpkg-deb", "-f", deb, name))
	}
	assert.Equal(t, "1.2.3+git4.gdeadbeef-1", field(debs["mhcodi"], "Version"))
	for _, dep := range []string{"qemu-system-x86", "mdadm", "lvm2", "iproute2"} {
		assert.Contains(t, field(debs["mhcodi"], "Depends"), dep)
	}
	assert.Contains(t, field(debs["mhcodi"], "Recommends"), "open-iscsi")
	assert.Contains(t, field(debs["mhcodi-guest"], "Depends"), "initramfs-tools")
	ctrl := filepath.Join(tmp, "control")
	run(t, "", nil, "dpkg-deb", "-e", debs["mhcodi"], ctrl)
	conffiles, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	require.NoError(t, err)
	assert.Equal(t, "/etc/mhcodi/cluster.yaml\n", string(conffiles))
	for _, script := range []string{"preinst", "postinst", "prerm", "postrm"} {
		_, err := os.Stat(filepath.Join(ctrl, script))
		assert.True(t, os.IsNotExist(err), "mhcodi has a %s: installing must start and enable nothing", script)
	}
	gctrl := filepath.Join(tmp, "guest-control")
	run(t, "", nil, "dpkg-deb", "-e", debs["mhcodi-guest"], gctrl)
	triggers, err := os.ReadFile(filepath.Join(gctrl, "triggers"))
	require.NoError(t, err)
	assert.Contains(t, string(triggers), "activate-noawait update-initramfs")

	// Install both into a scratch root.
	root := filepath.Join(tmp, "root")
	admin := filepath.Join(root, "var/lib/dpkg")
	for _, d := range []string{"info", "updates", "triggers"} {
		require.NoError(t, os.MkdirAll(filepath.Join(admin, d), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(admin, "status"), nil, 0o644))
	out = run(t, "", nil, "dpkg", "--root="+root, "--admindir="+admin, "--force-depends",
		"--log=/dev/null", "-i", debs["mhcodi"], debs["mhcodi-guest"])
	t.Logf("dpkg --root -i:\n%s", out)
	status, err := os.ReadFile(filepath.Join(admin, "status"))
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(status), "Status: install ok installed"), "%s", status)

	for _, f := range []string{
		"usr/bin/mhcodi", "usr/sbin/mhcodi-targetd", "usr/sbin/mhcodi-fenced", "usr/sbin/mhcodi-initiator",
		"usr/sbin/mhcodi-bridge", "usr/sbin/guestraid",
		"usr/lib/mhcodi/guestraid", "usr/lib/mhcodi/mhcodi-workload", "usr/lib/mhcodi/uroot-init",
		"lib/systemd/system/mhcodi-targetd@.service", "lib/systemd/system/mhcodi-fenced@.service",
		"lib/systemd/system/mhcodi-initiator@.service", "lib/systemd/system/guestraid-watch.service",
		"etc/mhcodi/cluster.yaml", "usr/share/doc/mhcodi/copyright", "usr/share/doc/mhcodi/examples/three-node.yaml",
		"usr/share/initramfs-tools/hooks/guestraid", "usr/share/initramfs-tools/scripts/local-block/guestraid",
		"usr/share/bash-completion/completions/mhcodi", "usr/share/zsh/vendor-completions/_mhcodi",
		"usr/share/man/man1/mhcodi.1.gz", "usr/share/man/man1/mhcodi-guest-start.1.gz",
		"usr/share/man/man5/mhcodi.yaml.5.gz", "usr/share/man/man8/mhcodi-targetd.8.gz",
		"usr/share/man/man8/guestraid.8.gz",
	} {
		_, err := os.Stat(filepath.Join(root, f))
		assert.NoError(t, err, "/%s is not installed", f)
	}
	// Nothing enabled: no wants links anywhere.
	links, _ := filepath.Glob(filepath.Join(root, "etc/systemd/system/*.wants/*"))
	assert.Empty(t, links)

	// Every binary runs and tells its version; the example config loads.
	for _, b := range []string{"usr/bin/mhcodi", "usr/sbin/mhcodi-targetd", "usr/sbin/mhcodi-fenced",
		"usr/sbin/mhcodi-initiator", "usr/sbin/mhcodi-bridge", "usr/sbin/guestraid",
		"usr/lib/mhcodi/guestraid", "usr/lib/mhcodi/mhcodi-workload"} {
		out := run(t, "", nil, filepath.Join(root, b), "--version")
		assert.Equal(t, filepath.Base(b)+" "+version+" ("+runtime.Version()+")\n", out)
	}
	run(t, "", nil, filepath.Join(root, "usr/bin/mhcodi"), "config", "check", "--config",
		filepath.Join(root, "etc/mhcodi/cluster.yaml"))

	// The guide's image step, from the package's programs.
	if kernel, err := filepath.Abs(filepath.Join(repo, ".cache/kernel")); err == nil {
		if _, err := os.Stat(filepath.Join(kernel, "VERSION")); err == nil {
			out := run(t, "", nil, filepath.Join(root, "usr/bin/mhcodi"), "image", "build",
				"--out", filepath.Join(tmp, "image"), "--kernel-dir", kernel, "--bin-dir", filepath.Join(root, "usr/lib/mhcodi"))
			assert.Contains(t, out, "built")
		} else {
			t.Logf("no guest kernel in %s (scripts/deps.sh fetches it): mhcodi image build not tried", kernel)
		}
	}

	// The units, in the scratch root (its /usr/sbin binaries), one
	// instance each.
	units := filepath.Join(tmp, "units")
	require.NoError(t, os.MkdirAll(units, 0o755))
	var verify []string
	for _, u := range []string{"mhcodi-targetd@", "mhcodi-fenced@", "mhcodi-initiator@", "guestraid-watch"} {
		data, err := os.ReadFile(filepath.Join(root, "lib/systemd/system", u+".service"))
		require.NoError(t, err)
		// ExecStart names /usr/sbin/...: point it into the scratch root.
		data = bytes.ReplaceAll(data, []byte("=/usr/sbin/"), []byte("="+root+"/usr/sbin/"))
		name := u + ".service"
		if strings.HasSuffix(u, "@") {
			name = u + "node-a.service"
		}
		require.NoError(t, os.WriteFile(filepath.Join(units, name), data, 0o644))
		verify = append(verify, filepath.Join(units, name))
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, verify...)...)
	vout, err := cmd.CombinedOutput()
	assert.NoError(t, err, "systemd-analyze verify:\n%s", vout)
	for _, line := range strings.Split(strings.TrimSpace(string(vout)), "\n") {
		// Units the hosts' other packages bring (iscsid, lvm2-monitor)
		// are not on this machine, nor is the scratch root's.
		if line == "" || strings.Contains(line, "not found") || strings.Contains(line, "Unit is bound to inactive unit") {
			continue
		}
		if strings.Contains(line, filepath.Base(units)) || strings.Contains(line, "mhcodi") || strings.Contains(line, "guestraid") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}

	// Every manual page renders without a groff warning.
	pages, _ := filepath.Glob(filepath.Join(root, "usr/share/man/man*/*.gz"))
	assert.Greater(t, len(pages), 25)
	for _, p := range pages {
		cmd := exec.Command("man", "--warnings", "-l", p)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=0", "LC_ALL=C.UTF-8")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		assert.NoError(t, err, "man -l %s: %s", p, stderr.String())
		assert.Empty(t, stderr.String(), "man --warnings -l %s", p)
		assert.Greater(t, stdout.Len(), 200, p)
	}
	page := run(t, "", []string{"MANWIDTH=200"}, "man", "-l", filepath.Join(root, "usr/share/man/man5/mhcodi.yaml.5.gz"))
	assert.Contains(t, page, "timeouts.lease_ttl")
	assert.Contains(t, page, "MHCODI_TIMEOUTS_LEASE_TTL")

	// Completions.
	run(t, "", nil, "bash", "-n", filepath.Join(root, "usr/share/bash-completion/completions/mhcodi"))
	zsh, err := os.ReadFile(filepath.Join(root, "usr/share/zsh/vendor-completions/_mhcodi"))
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(zsh), "#compdef mhcodi"), "%.40s", zsh)

	// lintian: no errors; the rest is logged.
	start = time.Now()
	cmd = exec.Command("lintian", "--display-info", debs["mhcodi"], debs["mhcodi-guest"])
	lout, _ := cmd.CombinedOutput() // exit status 1 on warnings too (--fail-on differs by version)
	t.Logf("lintian (%.1f s):\n%s", time.Since(start).Seconds(), lout)
	for _, line := range strings.Split(string(lout), "\n") {
		if strings.HasPrefix(line, "E: ") {
			t.Errorf("lintian: %s", line)
		}
	}
}
