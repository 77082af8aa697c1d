package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/test/vm"
)

// The SAN of the initiator test: a tap device in a network namespace of
// the test, holding both nodes' SAN addresses (targetd runs there), and
// the guest on the other end of the tap.
const (
	itNodeA = "10.202.7.1"
	itNodeB = "10.202.7.2"
	itGuest = "10.202.7.10/24"
	// itRemoteLeg is the leg node-a's guest drives I/O on.
	itRemoteLeg = "web1/root/node-b"
)

const itCluster = `cluster:
  name: itest
  iqn_prefix: iqn.2026-11.org.mhcodi
nodes:
  - name: node-a
    san_address: ` + itNodeA + `
    mgmt_address: ` + itNodeA + `:7440
    storage: {backend: file, file: {dir: volumes/node-a}}
  - name: node-b
    san_address: ` + itNodeB + `
    mgmt_address: ` + itNodeB + `:7440
    storage: {backend: file, file: {dir: volumes/node-b}}
guests:
  - name: web1
    preferred_node: node-a
    disks:
      - {name: root, size: 64M, legs: [node-a, node-b]}
      - {name: data, size: 32M, legs: [node-b, node-a]}
initiator:
  backend: open-iscsi
  link_dir: /dev/mhcodi
security:
  chap_secrets: chap-secrets.yaml
timeouts:
  replacement_timeout: 10s
  lease_ttl: 10s
`

// Mutual CHAP one way (node-b's targets prove themselves), one-way the
// other, so both paths of the node records are exercised.
const itSecrets = `nodes:
  node-a:
    initiator: node-a-initiator-secret-0
  node-b:
    initiator: node-b-initiator-secret-0
    target: node-b-target-secret-00
`

// iscsidConf is the guest's /etc/iscsi/iscsid.conf: iscsid is started by
// the job, and node records get their settings from mhcodi-initiator.
const iscsidConf = `iscsid.startup = /bin/false
node.startup = manual
`

// TestInitiatorInVM runs mhcodi-initiator with open-iscsi for real: Debian's
// kernel with iscsi_tcp in a qemu guest (node-a), targetd (node-b) in a
// network namespace of the test on the other end of a tap device. It
// checks the links and their serials, a pattern written through a link
// landing in targetd's file, I/O resuming across a targetd restart, and
// I/O failing near the replacement timeout (10 s, not open-iscsi's
// 120 s) once targetd is killed. Then node-b's guest (targetd node-a on
// the host side) must see exactly the same /dev/mhcodi paths.
func TestInitiatorInVM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and tap devices")
	}
	targetdBin := binary(t, "mhcodi-targetd")
	ipBin := tool(t, "ip")
	iscsiadm, iscsid := tool(t, "iscsiadm"), tool(t, "iscsid")

	dir := t.TempDir()
	cfg := filepath.Join(dir, "cluster.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(itCluster), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "chap-secrets.yaml"), []byte(itSecrets), 0o600))
	for _, n := range []string{"node-a", "node-b"} {
		code, out, errs := runCLI(t, "volume", "create", "--config", cfg, "--node", n)
		require.Equal(t, 0, code, "volume create %s: %s %s", n, out, errs)
	}
	loaded, err := configs.Load(cfg)
	require.NoError(t, err)

	ns := vm.NewNetns(t, "mhcit")
	tap := ns.Tap(t, "tap0", itNodeA+"/24", itNodeB+"/24")
	ns.WrapQEMU(t)

	img := vm.Image{
		Name: "initiator-open-iscsi",
		Go: []vm.GoBinary{
			{Package: "./test/initiatortest/guestjob"},
			{Package: "./cmd/mhcodi-initiator"},
			{Package: "./cmd/mhcodi"},
		},
		Files: []vm.HostFile{{Src: ipBin, Dst: "/sbin/ip"}, {Src: iscsiadm, Dst: "/sbin/iscsiadm"}, {Src: iscsid, Dst: "/sbin/iscsid"}},
		Static: []vm.StaticFile{
			{Path: "/etc/mhcodi/cluster.yaml", Data: []byte(itCluster)},
			{Path: "/etc/mhcodi/chap-secrets.yaml", Data: []byte(itSecrets), Mode: 0o600},
			{Path: "/etc/iscsi/iscsid.conf", Data: []byte(iscsidConf)},
			// iscsid admits only root's iscsiadm, checked by name.
			{Path: "/etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
			{Path: "/etc/group", Data: []byte("root:x:0:\n")},
		},
		Modules: []string{"virtio_pci", "virtio_net", "crc32c_generic", "sd_mod", "iscsi_tcp"},
		Dirs:    []string{"/etc/iscsi/nodes", "/etc/iscsi/send_targets", "/etc/iscsi/ifaces", "/var/lib/iscsi", "/run/lock/iscsi", "/dev/mhcodi"},
	}
	nic := []string{"-nic", "tap,ifname=" + tap + ",script=no,downscript=no,model=virtio-net-pci"}

	var linksA, linksB string
	t.Run("node-a", func(t *testing.T) {
		tb := startNetnsTargetd(t, ns, targetdBin, cfg, "node-b", itNodeB)
		img := img
		img.Job = vm.Job{Argv: []string{"/bin/guestjob", "--node", "node-a", "--addr", itGuest, "--mode", "full", "--leg", itRemoteLeg}}
		g := startGuest(t, img, nic)

		g.wait(t, "IT-LINKS", 150*time.Second)
		linksA = g.last("IT-LINKS")
		for _, l := range loaded.Legs() {
			assert.Contains(t, linksA, l.Guest+"/"+l.Disk+"/"+l.Node)
		}
		for _, leg := range []string{"web1/root/node-b", "web1/data/node-b"} {
			assert.Contains(t, g.text(), "IT-SERIAL "+leg, "no serial check of %s", leg)
		}

		// The pattern written through the link is in targetd's file.
		var off int64
		var sum string
		_, err := fmt.Sscanf(g.wait(t, "IT-WROTE", 30*time.Second), "IT-WROTE off=%d sha=%s", &off, &sum)
		require.NoError(t, err)
		f, err := os.Open(filepath.Join(dir, "volumes", "node-b", "mhc-web1-root"))
		require.NoError(t, err)
		buf := make([]byte, 4096)
		_, err = f.ReadAt(buf, off)
		f.Close()
		require.NoError(t, err)
		got := sha256.Sum256(buf)
		require.Equal(t, sum, hex.EncodeToString(got[:]), "the pattern written through /dev/mhcodi/%s is not in targetd's file", itRemoteLeg)
		g.send(t, "pattern-ok")

		// targetd restarts: the session comes back, I/O resumes without
		// an error.
		g.wait(t, "IT-READY restart", 30*time.Second)
		g.send(t, "stopping")
		stopAt := time.Now()
		tb.stop(t)
		tb = startNetnsTargetd(t, ns, targetdBin, cfg, "node-b", itNodeB)
		t.Logf("targetd restarted in %s", time.Since(stopAt).Round(time.Millisecond))
		line := g.wait(t, "IT-RESTART", 60*time.Second)
		var down, relogin, resumed, stall, ioErrs int64
		_, err = fmt.Sscanf(line, "IT-RESTART down_ms=%d relogin_ms=%d resumed_ms=%d max_stall_ms=%d io_errors=%d", &down, &relogin, &resumed, &stall, &ioErrs)
		require.NoError(t, err, line)
		t.Logf("FIGURE re-login after a targetd restart: session lost at +%d ms, logged in again at +%d ms, I/O resumed at +%d ms (longest I/O stall %d ms) after SIGTERM", down, relogin, resumed, stall)
		assert.Zero(t, ioErrs, "I/O failed across a restart shorter than the replacement timeout")
		assert.Less(t, time.Duration(resumed)*time.Millisecond, 10*time.Second, "I/O must resume within the replacement timeout")

		// targetd dies: I/O fails after about the replacement timeout.
		g.wait(t, "IT-READY kill", 40*time.Second)
		tb.kill(t)
		killAt := time.Now()
		g.send(t, "killed")
		line = g.wait(t, "IT-KILL", 170*time.Second)
		hostFail := g.at("IT-KILL").Sub(killAt)
		var failMS int64
		_, err = fmt.Sscanf(line, "IT-KILL fail_ms=%d", &failMS)
		require.NoError(t, err, line)
		t.Logf("FIGURE I/O failure after SIGKILL of targetd: first EIO %s after the kill (host clock), %d ms (guest clock); replacement_timeout 10s", hostFail.Round(time.Millisecond), failMS)
		assert.Greater(t, hostFail, 8*time.Second, "I/O failed sooner than the replacement timeout")
		assert.Less(t, hostFail, 40*time.Second, "I/O failed far later than the 10 s replacement timeout (open-iscsi's 120 s default?)")

		g.wait(t, "IT-STATUS-END", 40*time.Second)
		status := g.between("IT-STATUS-BEGIN", "IT-STATUS-END")
		t.Logf("mhcodi import status after the kill:\n%s", status)
		assert.Regexp(t, `web1/root/node-b\s+/dev/mhcodi/web1/root/node-b\s+/dev/sd[a-z]+\s+down\s+`, status)
		g.finish(t)
	})

	t.Run("node-b", func(t *testing.T) {
		startNetnsTargetd(t, ns, targetdBin, cfg, "node-a", itNodeA)
		img := img
		img.Job = vm.Job{Argv: []string{"/bin/guestjob", "--node", "node-b", "--addr", itGuest, "--mode", "links"}}
		g := startGuest(t, img, nic)
		g.wait(t, "IT-LINKS", 150*time.Second)
		linksB = g.last("IT-LINKS")
		g.finish(t)
	})
	require.NotEmpty(t, linksA)
	assert.Equal(t, linksA, linksB, "node-a and node-b must see the same /dev/mhcodi paths")
}

// netnsTargetd is a targetd running in the test's namespace.
type netnsTargetd struct {
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
}

func startNetnsTargetd(t *testing.T, ns *vm.Netns, bin, cfg, node, addr string) *netnsTargetd {
	t.Helper()
	dir := t.TempDir()
	cmd := ns.Command(bin, "--config", cfg, "--node", node, "--state-dir", filepath.Join(dir, "state"),
		"--control-socket", filepath.Join(dir, "control.sock"), "--metrics", "off")
	r := &netnsTargetd{cmd: cmd, log: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &lockedBuf{b: r.log}, &lockedBuf{b: r.log}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	go func() { _ = cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { r.kill(t) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := ns.Dial(net.JoinHostPort(addr, "3260"), 200*time.Millisecond); err == nil {
			c.Close()
			return r
		}
		select {
		case <-r.done:
			t.Fatalf("targetd %s exited: %s", node, r.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("targetd %s not listening on %s:3260 after 10s: %s", node, addr, r.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *netnsTargetd) stop(t *testing.T) {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Errorf("targetd did not stop within 15s of SIGTERM")
		r.kill(t)
	}
}

func (r *netnsTargetd) kill(*testing.T) {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

type lockedBuf struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// guest is a VM running guestjob: its "IT-" lines as they arrive, and the
// command port.
type guest struct {
	mu    sync.Mutex
	lines []stamped
	buf   []byte
	all   bytes.Buffer
	news  chan struct{}
	ctl   net.Conn
	res   chan error
	log   string
}

type stamped struct {
	at   time.Time
	line string
}

func (g *guest) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.all.Write(p)
	now := time.Now()
	for _, b := range p {
		if b != '\n' {
			g.buf = append(g.buf, b)
			continue
		}
		l := strings.TrimRight(string(g.buf), "\r")
		g.buf = g.buf[:0]
		if i := strings.Index(l, "IT-"); i >= 0 {
			g.lines = append(g.lines, stamped{now, l[i:]})
			select {
			case g.news <- struct{}{}:
			default:
			}
		}
	}
	return len(p), nil
}

func startGuest(t *testing.T, img vm.Image, nic []string) *guest {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "mhcit-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "ctl.sock")
	g := &guest{news: make(chan struct{}, 1), res: make(chan error, 2)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		if err := <-g.res; err != nil && !t.Failed() {
			t.Error(err)
		}
	})
	go func() {
		res, err := vm.Run(ctx, img, vm.Options{
			Network:  nic,
			QEMUArgs: []string{"-chardev", "socket,id=ctl,path=" + sock + ",server=on,wait=off", "-serial", "chardev:ctl"},
			Timeout:  4 * time.Minute,
			Console:  g,
			Logf:     t.Logf,
		})
		if err == nil && res.Status != 0 {
			err = fmt.Errorf("guest job exited %d; console %s", res.Status, res.LogFile)
		}
		if res != nil {
			g.mu.Lock()
			g.log = res.LogFile
			g.mu.Unlock()
		}
		g.res <- err
		g.res <- err // once for finish, once for cleanup
		close(g.news)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			g.ctl = c
			t.Cleanup(func() { c.Close() })
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu's command socket %s never appeared: %v", sock, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wait returns the first line starting with prefix, waiting up to d; a
// guest failure ends the wait at once.
func (g *guest) wait(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		g.mu.Lock()
		for _, l := range g.lines {
			if strings.HasPrefix(l.line, "IT-FAIL") {
				g.mu.Unlock()
				t.Fatalf("guest: %s\nconsole tail:\n%s", l.line, g.tail())
			}
			if strings.HasPrefix(l.line, prefix) {
				g.mu.Unlock()
				return l.line
			}
		}
		g.mu.Unlock()
		select {
		case _, ok := <-g.news:
			if !ok {
				t.Fatalf("guest ended before %q; console tail:\n%s", prefix, g.tail())
			}
		case <-deadline:
			t.Fatalf("no %q from the guest within %s; console tail:\n%s", prefix, d, g.tail())
		}
	}
}

func (g *guest) at(prefix string) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, l := range g.lines {
		if strings.HasPrefix(l.line, prefix) {
			return l.at
		}
	}
	return time.Time{}
}

func (g *guest) last(prefix string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := len(g.lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(g.lines[i].line, prefix) {
			return strings.TrimSpace(strings.TrimPrefix(g.lines[i].line, prefix))
		}
	}
	return ""
}

func (g *guest) text() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.all.String()
}

func (g *guest) between(from, to string) string {
	s := g.text()
	i := strings.Index(s, from)
	j := strings.Index(s, to)
	if i < 0 || j < i {
		return ""
	}
	return s[i+len(from) : j]
}

func (g *guest) tail() string {
	lines := strings.Split(g.text(), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}

func (g *guest) send(t *testing.T, cmd string) {
	t.Helper()
	_, err := io.WriteString(g.ctl, cmd+"\n")
	require.NoError(t, err)
}

// finish waits for the job's end and fails on a non-zero status.
func (g *guest) finish(t *testing.T) {
	t.Helper()
	g.wait(t, "IT-DONE", 60*time.Second)
	if err := <-g.res; err != nil {
		t.Fatal(err)
	}
}

// TestInitiatorNetlinkInVM imports node-b's legs with the netlink backend
// (u-root/iscsinl, no iscsid) in a guest: the links exist and point at
// disks with the legs' serials. No CHAP: iscsinl cannot do it (config
// validation refuses netlink with chap_secrets).
func TestInitiatorNetlinkInVM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and tap devices")
	}
	targetdBin := binary(t, "mhcodi-targetd")
	ipBin := tool(t, "ip")
	text := strings.Replace(itCluster, "backend: open-iscsi", "backend: netlink", 1)
	text = strings.Replace(text, "security:\n  chap_secrets: chap-secrets.yaml\n", "", 1)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cluster.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(text), 0o644))
	code, out, errs := runCLI(t, "volume", "create", "--config", cfg, "--node", "node-b")
	require.Equal(t, 0, code, "volume create: %s %s", out, errs)

	ns := vm.NewNetns(t, "mhcnl")
	tap := ns.Tap(t, "tap0", itNodeA+"/24", itNodeB+"/24")
	ns.WrapQEMU(t)
	startNetnsTargetd(t, ns, targetdBin, cfg, "node-b", itNodeB)
	img := vm.Image{
		Name: "initiator-netlink",
		Go: []vm.GoBinary{
			{Package: "./test/initiatortest/guestjob"},
			{Package: "./cmd/mhcodi-initiator"},
			{Package: "./cmd/mhcodi"},
		},
		Files:   []vm.HostFile{{Src: ipBin, Dst: "/sbin/ip"}},
		Static:  []vm.StaticFile{{Path: "/etc/mhcodi/cluster.yaml", Data: []byte(text)}},
		Modules: []string{"virtio_pci", "virtio_net", "crc32c_generic", "sd_mod", "iscsi_tcp"},
		Dirs:    []string{"/etc/iscsi", "/dev/mhcodi"},
		Job:     vm.Job{Argv: []string{"/bin/guestjob", "--node", "node-a", "--addr", itGuest, "--mode", "links", "--iscsid=false"}},
	}
	g := startGuest(t, img, []string{"-nic", "tap,ifname=" + tap + ",script=no,downscript=no,model=virtio-net-pci"})
	g.wait(t, "IT-LINKS", 150*time.Second)
	assert.Equal(t, "web1/data/node-a web1/data/node-b web1/root/node-a web1/root/node-b", g.last("IT-LINKS"))
	for _, leg := range []string{"web1/root/node-b", "web1/data/node-b"} {
		assert.Contains(t, g.text(), "IT-SERIAL "+leg)
	}
	g.finish(t)
}
