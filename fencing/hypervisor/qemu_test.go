package hypervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/initiator/drive"
	"github.com/mhcodi/mhcodi/internal/freeport"
	"github.com/mhcodi/mhcodi/test/vm"
)

// repo is the module root, seen from this package's directory.
const repo = "../.."

// nonceParam is test/vm's kernel parameter for the run's nonce (see
// test/vm/internal/guest, which is internal to test/vm): its uinit marks
// the job's start on the console with it.
const nonceParam = "mhcodi.vm.nonce"

// tlog sends the driver's log to the test's.
type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func binary(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(repo, "bin", name))
	require.NoError(t, err)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not built: run `make build`: %v", p, err)
	}
	return p
}

func freePort(t *testing.T, ip string) int {
	t.Helper()
	p, err := freeport.Port(ip)
	require.NoError(t, err)
	return p
}

// shortTempDir is a temp dir with a short path: the run directory holds
// unix sockets, whose paths must fit in 107 bytes, which t.TempDir's
// long names can exceed.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "hv-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// killQEMUs kills, by PID, every qemu whose pid file is under runDir and
// whose command line names that pid file: whatever a test left running.
func killQEMUs(t *testing.T, runDir string) {
	files, _ := filepath.Glob(filepath.Join(runDir, "*", PIDFile))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !cmdlineHasPIDFile(cl, f) {
			continue
		}
		t.Logf("cleanup: killing qemu pid %d (%s)", pid, f)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitExit(context.Background(), pid, 5*time.Second)
	}
	// The guests' leg bridges, which the test did not start itself but
	// its driver did.
	bridges, _ := filepath.Glob(filepath.Join(runDir, "*", BridgePIDFile))
	for _, f := range bridges {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 || !isBridge(pid, filepath.Base(filepath.Dir(f))) {
			continue
		}
		t.Logf("cleanup: killing leg bridge pid %d (%s)", pid, f)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitExit(context.Background(), pid, 5*time.Second)
	}
}

// testCluster writes a two-node loopback cluster into dir: node-a runs
// the guest "hv", whose disk "root" has a file leg on node-a and a leg on
// node-b, reached by iSCSI on sanB.
func testCluster(t *testing.T, dir, sanB, kernel, initramfs, cmdline string) string {
	t.Helper()
	text := fmt.Sprintf(`cluster:
  name: hvtest
  iqn_prefix: iqn.2026-11.org.mhcodi
nodes:
  - name: node-a
    san_address: 127.0.0.11
    mgmt_address: 127.0.0.11:7440
    storage: {backend: file, file: {dir: %[1]s/vol-a}}
  - name: node-b
    san_address: %[2]s
    mgmt_address: 127.0.0.12:7440
    storage: {backend: file, file: {dir: %[1]s/vol-b}}
hypervisor:
  accel: tcg
  run_dir: %[1]s/run
  io_timeout: 5s
guests:
  - name: hv
    memory: 512M
    preferred_node: node-a
    boot:
      kernel: %[3]s
      initramfs: %[4]s
      cmdline: %[5]q
    disks:
      - name: root
        size: 64M
        legs: [node-a, node-b]
`, dir, sanB, kernel, initramfs, cmdline)
	p := filepath.Join(dir, "cluster.yaml")
	require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
	return p
}

// startTargetd runs bin/mhcodi-targetd for node (its volumes created with
// bin/mhcodi volume create) and stops it by PID when the test ends.
func startTargetd(t *testing.T, cfgPath, dir, node, listen string) string {
	t.Helper()
	out, err := exec.Command(binary(t, "mhcodi"), "volume", "create", "--config", cfgPath, "--node", node).CombinedOutput()
	require.NoError(t, err, "volume create: %s", out)
	logPath := filepath.Join(dir, "targetd-"+node+".log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(binary(t, "mhcodi-targetd"), "--config", cfgPath, "--node", node,
		"--state-dir", filepath.Join(dir, "state-"+node), "--control-socket", filepath.Join(dir, "ctl-"+node+".sock"),
		"--listen", listen, "--metrics", "off")
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", listen, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return logPath
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("targetd did not listen on %s within 10s; its log:\n%s", listen, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestQEMUGuestLifecycle boots a real guest under TCG with a local file
// leg and a remote leg served by a real mhcodi-targetd over loopback, and
// takes it through status, QMP, a refused second start, a stop the guest
// ignores (test/vm's uinit has no power-button handler) and cleanup.
func TestQEMUGuestLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	k, err := vm.FindKernel("")
	require.NoError(t, err)
	start := time.Now()
	img, err := vm.Build(ctx, vm.Image{
		Name:    "hv-test",
		Go:      []vm.GoBinary{{Package: "github.com/mhcodi/mhcodi/test/vm/internal/vmcheck"}},
		Modules: vm.VirtioBlk,
		Job:     vm.Job{Argv: []string{"/bin/vmcheck", "-sleep", "1h"}},
	}, vm.Options{})
	require.NoError(t, err)
	t.Logf("image %s (cached %v) in %s", img.Path, img.Cached, time.Since(start).Round(time.Millisecond))

	var nb [8]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	dir := shortTempDir(t)
	sanB := fmt.Sprintf("127.0.0.12:%d", freePort(t, "127.0.0.12"))
	cfgPath := testCluster(t, dir, sanB, k.Vmlinuz(), img.Path, nonceParam+"="+nonce+" panic=-1")
	cfg, err := configs.Load(cfgPath)
	require.NoError(t, err)
	runDir := cfg.Hypervisor.RunDir
	t.Cleanup(func() { killQEMUs(t, runDir) })

	out, err := exec.Command(binary(t, "mhcodi"), "volume", "create", "--config", cfgPath, "--node", "node-a").CombinedOutput()
	require.NoError(t, err, "volume create: %s", out)
	targetdLog := startTargetd(t, cfgPath, dir, "node-b", sanB)

	d, err := New(cfg, "node-a", Options{
		// The guest is a CPU hog under TCG; the host's other work
		// (targetd, other tests) goes first.
		Prefix: []string{"nice", "-n", "19"},
		Bridge: binary(t, "mhcodi-bridge"),
		Logger: slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	require.NoError(t, err)
	q := d.(*QEMU)
	assert.Equal(t, "tcg", q.Accel())

	info := []byte(`{"node":"node-a","epoch":1}`)
	spec, err := SpecFor(cfg, "hv", "node-a", info)
	require.NoError(t, err)
	drives := spec.Drives("vd")
	require.Len(t, drives, 2)
	require.Equal(t, drive.DriverFile, drives[0].Driver)
	require.Equal(t, drive.DriverNBD, drives[1].Driver)

	// Leftovers of a dead run: a pid file naming a live process that is
	// not qemu (this test), and stale sockets. Start must neither take
	// the guest for running nor kill that process.
	gdir := filepath.Join(runDir, "hv")
	require.NoError(t, os.MkdirAll(gdir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(gdir, PIDFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(gdir, QMPSocket), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(gdir, ConsoleLog), []byte("previous run\n"), 0o600))
	_, err = d.Status(ctx, "hv")
	require.ErrorIs(t, err, ErrNotRunning)

	start = time.Now()
	require.NoError(t, d.Start(ctx, spec))
	t.Logf("qemu started in %s", time.Since(start).Round(time.Millisecond))

	st, err := d.Status(ctx, "hv")
	require.NoError(t, err)
	assert.Equal(t, "hv", st.Name)
	assert.Equal(t, StateRunning, st.State)
	assert.Positive(t, st.PID)
	assert.NotEqual(t, os.Getpid(), st.PID)
	assert.WithinDuration(t, time.Now(), st.Started, time.Minute)
	assert.Equal(t, filepath.Join(gdir, ConsoleLog), st.Console)
	assert.Equal(t, filepath.Join(gdir, ChannelSocket), st.Channel)
	pid := st.PID
	prev, err := os.ReadFile(filepath.Join(gdir, ConsoleLog+".1"))
	require.NoError(t, err)
	assert.Equal(t, "previous run\n", string(prev), "the previous console is kept")
	hi, err := os.ReadFile(filepath.Join(gdir, HostInfoFile))
	require.NoError(t, err)
	assert.Equal(t, info, hi)

	list, err := d.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, "hv", list[0].Name)
	assert.Equal(t, pid, list[0].PID)

	// The guest boots: its kernel, then test/vm's uinit, which marks the
	// job's start with this run's nonce.
	marker := "MHCODI-VM-START " + nonce
	waitFor(t, 3*time.Minute, "console shows "+marker, func() bool {
		b, _ := os.ReadFile(st.Console)
		return strings.Contains(string(b), marker)
	})
	con, _ := os.ReadFile(st.Console)
	assert.Contains(t, string(con), "virtio_blk")

	// Both legs are attached, with the right driver and serial.
	qmp, err := q.QMP(ctx, "hv")
	require.NoError(t, err)
	var blocks []struct {
		Device   string `json:"device"`
		QDev     string `json:"qdev"`
		Inserted struct {
			NodeName string `json:"node-name"`
			Drv      string `json:"drv"`
			File     string `json:"file"`
		} `json:"inserted"`
	}
	require.NoError(t, qmp.Execute(ctx, "query-block", nil, &blocks))
	got := map[string]string{}
	for _, b := range blocks {
		got[b.Inserted.NodeName] = b.Inserted.Drv
	}
	assert.Equal(t, map[string]string{drives[0].NodeName: "file", drives[1].NodeName: "nbd"}, got)
	for _, dr := range drives {
		var serial string
		require.NoError(t, qmp.Execute(ctx, "qom-get", map[string]any{"path": "/machine/peripheral/" + dr.Dev, "property": "serial"}, &serial))
		assert.Equal(t, dr.Leg.Serial, serial, dr.Dev)
	}
	require.NoError(t, qmp.Close())
	tl, _ := os.ReadFile(targetdLog)
	assert.Contains(t, string(tl), cfg.InitiatorIQN("node-a"), "targetd saw node-a's initiator log in")

	// The host end of the guestraid channel accepts a connection.
	ch, err := q.Channel(ctx, "hv")
	require.NoError(t, err)
	require.NoError(t, ch.Close())

	err = d.Start(ctx, spec)
	require.ErrorIs(t, err, ErrAlreadyRunning)
	assert.ErrorContains(t, err, strconv.Itoa(pid))

	// test/vm's guest has nothing listening to the power button, so a
	// stop ends with a destroy after the timeout.
	start = time.Now()
	require.NoError(t, d.Stop(ctx, "hv", 2*time.Second))
	took := time.Since(start)
	t.Logf("stop took %s", took.Round(time.Millisecond))
	assert.GreaterOrEqual(t, took, 2*time.Second)
	assert.False(t, alive(pid), "qemu pid %d is gone", pid)
	for _, f := range []string{PIDFile, QMPSocket, ChannelSocket, HostInfoFile, BridgePIDFile} {
		assert.NoFileExists(t, filepath.Join(gdir, f), "left after stop")
	}
	assert.NoDirExists(t, filepath.Join(gdir, BridgeDir))
	_, err = d.Status(ctx, "hv")
	require.ErrorIs(t, err, ErrNotRunning)
	list, err = d.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, list)
	require.ErrorIs(t, d.Destroy(ctx, "hv"), ErrNotRunning)
}

// TestQEMUStartFailureSaysWhy: when qemu cannot start the guest, Start
// says why with qemu's own words, and leaves nothing running. Here the
// remote leg's target does not listen: QEMU's iSCSI driver connects while
// the machine is set up, so a guest cannot start with a remote leg down
// (a degraded start has to leave that leg out and add it later).
func TestQEMUStartFailureSaysWhy(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	dir := shortTempDir(t)
	sanB := fmt.Sprintf("127.0.0.12:%d", freePort(t, "127.0.0.12")) // nothing listens
	kernel := filepath.Join(dir, "vmlinuz")
	require.NoError(t, os.WriteFile(kernel, []byte("not a kernel"), 0o644))
	cfgPath := testCluster(t, dir, sanB, kernel, kernel, "")
	cfg, err := configs.Load(cfgPath)
	require.NoError(t, err)
	// QEMU's own initiator fails the start when it cannot reach the
	// target (the leg bridge would start, and fail requests later).
	cfg.Hypervisor.RemoteLegs = configs.RemoteLibiscsi
	t.Cleanup(func() { killQEMUs(t, cfg.Hypervisor.RunDir) })
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "vol-a"), 0o755))
	f, err := os.Create(filepath.Join(dir, "vol-a", "mhc-hv-root"))
	require.NoError(t, err)
	require.NoError(t, f.Truncate(64<<20))
	require.NoError(t, f.Close())

	d, err := New(cfg, "node-a", Options{Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))})
	require.NoError(t, err)
	spec, err := SpecFor(cfg, "hv", "node-a", nil, WithIOTimeout(time.Second))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err = d.Start(ctx, spec)
	require.Error(t, err)
	t.Log(err)
	assert.Contains(t, err.Error(), "qemu's stderr")
	assert.Contains(t, strings.ToLower(err.Error()), "iscsi")
	_, serr := d.Status(ctx, "hv")
	assert.True(t, errors.Is(serr, ErrNotRunning))

	// A start already in progress (its lock held) is not raced.
	lock, err := os.OpenFile(filepath.Join(cfg.Hypervisor.RunDir, ".hv.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	require.NoError(t, syscall.Flock(int(lock.Fd()), syscall.LOCK_EX))
	assert.ErrorContains(t, d.Start(ctx, spec), "another start of this guest is in progress")
	require.NoError(t, lock.Close())

	// Without the remote leg, the kernel is what qemu refuses.
	spec.Disks[0].Legs = spec.Disks[0].Legs[:1]
	err = d.Start(ctx, spec)
	require.Error(t, err)
	t.Log(err)
	assert.Contains(t, err.Error(), "qemu's stderr")
}

// TestQEMUGuestSeesItsDevices boots a guest whose job checks, from the
// inside, what the driver gave it: each leg's serial on vda and vdb, the
// guestraid channel's port name and the host info in fw_cfg. The job
// then ends and test/vm's uinit powers the guest off, which must end
// qemu by itself (no -no-shutdown); a start after that keeps the dead
// run's console.
func TestQEMUGuestSeesItsDevices(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	k, err := vm.FindKernel("")
	require.NoError(t, err)

	dir := shortTempDir(t)
	// The cluster is written twice: first to learn the serials, then
	// with the image whose job checks them.
	sanB := fmt.Sprintf("127.0.0.12:%d", freePort(t, "127.0.0.12"))
	cfg0, err := configs.Load(testCluster(t, dir, sanB, k.Vmlinuz(), k.Vmlinuz(), ""))
	require.NoError(t, err)
	spec0, err := SpecFor(cfg0, "hv", "node-a", nil)
	require.NoError(t, err)
	drives := spec0.Drives("vd")
	info := `{"node":"node-a","epoch":7}`
	img, err := vm.Build(ctx, vm.Image{
		Name:    "hv-devices",
		Go:      []vm.GoBinary{{Package: "github.com/mhcodi/mhcodi/test/vm/internal/vmcheck"}},
		Modules: append(append([]string(nil), vm.VirtioBlk...), "virtio_console", "qemu_fw_cfg"),
		Job: vm.Job{Argv: []string{"/bin/vmcheck",
			"-contains", "/sys/block/vda/serial:" + drives[0].Serial,
			"-contains", "/sys/block/vdb/serial:" + drives[1].Serial,
			// virtio devices are numbered in PCI order: vda, vdb, then
			// the virtio-serial controller with the channel on port 1.
			"-contains", "/sys/class/virtio-ports/vport2p1/name:" + ChannelName,
			"-contains", "/sys/firmware/qemu_fw_cfg/by_name/" + HostInfoName + "/raw:" + info,
		}},
	}, vm.Options{})
	require.NoError(t, err)

	var nb [8]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	cfgPath := testCluster(t, dir, sanB, k.Vmlinuz(), img.Path, nonceParam+"="+nonce+" panic=-1")
	cfg, err := configs.Load(cfgPath)
	require.NoError(t, err)
	runDir := cfg.Hypervisor.RunDir
	t.Cleanup(func() { killQEMUs(t, runDir) })
	out, err := exec.Command(binary(t, "mhcodi"), "volume", "create", "--config", cfgPath, "--node", "node-a").CombinedOutput()
	require.NoError(t, err, "volume create: %s", out)
	startTargetd(t, cfgPath, dir, "node-b", sanB)

	d, err := New(cfg, "node-a", Options{Prefix: []string{"nice", "-n", "19"}, Bridge: binary(t, "mhcodi-bridge"),
		Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))})
	require.NoError(t, err)
	spec, err := SpecFor(cfg, "hv", "node-a", []byte(info))
	require.NoError(t, err)
	require.Equal(t, drives[0].Serial, spec.Drives("vd")[0].Serial)

	require.NoError(t, d.Start(ctx, spec))
	st, err := d.Status(ctx, "hv")
	require.NoError(t, err)
	pid := st.PID
	waitFor(t, 3*time.Minute, "qemu ends after the guest powers off", func() bool { return !alive(pid) })
	con, err := os.ReadFile(st.Console)
	require.NoError(t, err)
	assert.Contains(t, string(con), "MHCODI-VM-EXIT "+nonce+" 0", "the guest's checks passed; console:\n%s", con)

	_, err = d.Status(ctx, "hv")
	require.ErrorIs(t, err, ErrNotRunning)
	// qemu removed its sockets and pid file as it exited; the console
	// stays for whoever wants to know why the guest ended.
	assert.FileExists(t, st.Console)
	require.NoError(t, d.Start(ctx, spec))
	st2, err := d.Status(ctx, "hv")
	require.NoError(t, err)
	assert.NotEqual(t, pid, st2.PID)
	prev, err := os.ReadFile(st.Console + ".1")
	require.NoError(t, err)
	assert.Contains(t, string(prev), "MHCODI-VM-EXIT "+nonce+" 0", "the previous run's console is kept")
	require.NoError(t, d.Destroy(ctx, "hv"))
	assert.False(t, alive(st2.PID))
	for _, f := range []string{PIDFile, QMPSocket, ChannelSocket, HostInfoFile, BridgePIDFile} {
		assert.NoFileExists(t, filepath.Join(runDir, "hv", f), "left after destroy")
	}
	assert.NoDirExists(t, filepath.Join(runDir, "hv", BridgeDir))
	assert.FileExists(t, filepath.Join(runDir, "hv", ConsoleLog), "the console stays for the operator")
}
