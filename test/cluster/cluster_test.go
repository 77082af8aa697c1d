package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
)

// iscsiLs lists node to's targets from inside node from with libiscsi's
// iscsi-ls, a real iSCSI client (login, SendTargets, REPORT LUNS), as
// from's initiator. A frozen target accepts the TCP connection but never
// answers the login, so it is bounded by timeout.
func iscsiLs(from, to *Host, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := from.Exec(ctx, "iscsi-ls", "-i", from.InitiatorIQN(), "iscsi://"+to.Addr.String()+"/").CombinedOutput()
	if err != nil {
		return string(out), errors.Join(err, ctx.Err())
	}
	return string(out), nil
}

// echoServer accepts on l and writes "hi" to every connection.
func echoServer(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("hi"))
		c.Close()
	}
}

// readHi dials addr from h (nil: the root namespace) and reads the server's greeting.
func readHi(h *Host, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var c net.Conn
	var err error
	if h == nil { // from the root namespace
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	} else {
		c, err = h.DialTCP(ctx, addr)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "hi" {
		return errors.New("unexpected greeting " + string(b))
	}
	return nil
}

func TestCluster(t *testing.T) {
	c := NewT(t, Options{Nodes: 2, Witness: true})
	a, b, w := c.Host("node-a"), c.Host("node-b"), c.Host("witness")
	require.NotNil(t, a)
	require.NotNil(t, b)
	require.NotNil(t, w)
	ctx := context.Background()

	t.Run("namespaces", func(t *testing.T) {
		for _, h := range c.Hosts() {
			assert.True(t, netnsExists(h.Netns), "netns %s", h.Netns)
			assert.True(t, strings.HasPrefix(h.Netns, c.Prefix()+"-"), h.Netns)
		}
		assert.True(t, netnsExists(c.BridgeNetns()))
		assert.Equal(t, configs.RoleWitness, w.Role)
	})

	t.Run("config", func(t *testing.T) {
		cfg, err := configs.Load(c.ConfigPath)
		require.NoError(t, err)
		require.Len(t, cfg.Nodes, 3)
		for _, h := range c.Hosts() {
			n, ok := cfg.Node(h.Name)
			require.True(t, ok, h.Name)
			assert.Equal(t, h.Role, n.Role)
			assert.Equal(t, h.MgmtAddr, n.MgmtAddress.AddrPort(configs.DefaultMgmtPort))
			if h.Role == configs.RoleStorage {
				assert.Equal(t, h.SANAddr, n.SANAddress.AddrPort(configs.DefaultSANPort))
				assert.Equal(t, h.VolumeDir(), cfg.StorageFor(h.Name).File.Dir)
			}
		}
		g, ok := cfg.Guest("demo")
		require.True(t, ok)
		assert.Equal(t, "node-a", g.PreferredNode)
		assert.Equal(t, []string{"node-a", "node-b"}, g.Disks[0].Legs)
		assert.Equal(t, configs.AccelTCG, cfg.Hypervisor.Accel)
	})

	t.Run("network", func(t *testing.T) {
		// A server in every host; every other host reaches it.
		for _, h := range c.Hosts() {
			l, err := h.Listen(ctx, netip4(h, 9000))
			require.NoError(t, err)
			t.Cleanup(func() { l.Close() })
			go echoServer(l)
		}
		for _, from := range c.Hosts() {
			for _, to := range c.Hosts() {
				assert.NoError(t, readHi(from, netip4(to, 9000)), "%s -> %s", from.Name, to.Name)
			}
		}
		// Nothing of the root namespace: not its loopback (a server
		// listening there is not the host's loopback), not its addresses
		// (no route: the dial fails before a packet leaves).
		root, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer root.Close()
		go echoServer(root)
		require.NoError(t, readHi(nil, root.Addr().String()), "the root's own server works from the root")
		assert.Error(t, readHi(a, root.Addr().String()), "node-a reached the root namespace's loopback")
		addrs, err := net.InterfaceAddrs()
		require.NoError(t, err)
		for _, ad := range addrs {
			ipn, ok := ad.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil || ipn.IP.IsLoopback() || c.Subnet().Contains(addrOf(ipn.IP)) {
				continue
			}
			err := a.CanDial(net.JoinHostPort(ipn.IP.String(), "22"), time.Second)
			assert.ErrorIs(t, err, syscall.ENETUNREACH, "node-a -> root address %s", ipn.IP)
		}
		out, err := exec.Command("ip", "-n", a.Netns, "route", "show").CombinedOutput()
		require.NoError(t, err)
		assert.NotContains(t, string(out), "default", "node-a has a default route")
	})

	var tproc *Proc
	t.Run("targetd", func(t *testing.T) {
		var err error
		tproc, err = b.StartTargetd(ctx)
		require.NoError(t, err)
		out, err := iscsiLs(a, b, 10*time.Second)
		require.NoError(t, err, out)
		assert.Contains(t, out, "Target:iqn.2026-11.org.mhcodi:test.node-b.demo.root Portal:"+b.SANAddr.String())
		_, err = os.Stat(filepath.Join(b.VolumeDir()))
		assert.NoError(t, err)
		_, err = w.StartTargetd(ctx)
		assert.Error(t, err, "a witness runs no targetd")
	})
	require.NotNil(t, tproc, "targetd did not start")

	t.Run("cut-heal", func(t *testing.T) {
		require.NoError(t, b.Cut())
		assert.Error(t, a.CanDial(b.SANAddr.String(), time.Second), "node-a reached node-b through a cut link")
		assert.Error(t, w.CanDial(b.SANAddr.String(), time.Second), "the witness reached node-b through a cut link")
		require.NoError(t, b.Heal())
		out, err := iscsiLs(a, b, 10*time.Second)
		assert.NoError(t, err, "after Heal: %s", out)
	})

	t.Run("freeze-thaw", func(t *testing.T) {
		require.NoError(t, b.Freeze())
		out, err := iscsiLs(a, b, 2*time.Second)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "a frozen targetd answered: %s", out)
		require.NoError(t, b.Thaw())
		out, err = iscsiLs(a, b, 10*time.Second)
		assert.NoError(t, err, "after Thaw: %s", out)
	})

	t.Run("kill-revive", func(t *testing.T) {
		require.NoError(t, b.Kill())
		assert.True(t, tproc.Exited())
		assert.Empty(t, b.Procs())
		err := a.CanDial(b.SANAddr.String(), time.Second)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens on a killed host")
		require.NoError(t, b.Revive(ctx))
		out, err := iscsiLs(a, b, 10*time.Second)
		assert.NoError(t, err, "after Revive: %s", out)
		p := b.Proc("targetd")
		require.NotNil(t, p)
		assert.NotEqual(t, tproc.PID, p.PID)
		tproc = p
	})

	t.Run("track", func(t *testing.T) {
		// A process started by someone else in the host, as a hypervisor
		// driver's daemonized qemu would be.
		cmd := a.Exec(ctx, "sleep", "300")
		require.NoError(t, cmd.Start())
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		p, err := a.Track("sleeper", cmd.Process.Pid)
		require.NoError(t, err)
		require.NoError(t, a.Kill())
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Kill did not kill the tracked process")
		}
		assert.True(t, p.Exited())
		require.NoError(t, a.Revive(ctx), "nothing to revive: tracked processes are not restarted")
		assert.Empty(t, a.Procs())
	})

	t.Run("teardown", func(t *testing.T) {
		st, err := ReadState(c.Dir())
		require.NoError(t, err)
		require.True(t, st.OwnerAlive())
		require.NoError(t, c.Close())
		assertGone(t, st)
		assert.NoError(t, c.Close(), "Close again")
		_, err = b.Start("late", "sleep", "1")
		assert.Error(t, err, "Start after Close")
	})
}

// netip4 is host h's address with port.
func netip4(h *Host, port int) string {
	return net.JoinHostPort(h.Addr.String(), strconv.Itoa(port))
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip.To4())
	return a
}

// assertGone checks that nothing of the cluster recorded in st is left:
// no namespace with its prefix, no process, no registry entry, no dir.
func assertGone(t *testing.T, st *State) {
	t.Helper()
	ents, err := os.ReadDir(netnsDir)
	if err == nil {
		for _, e := range ents {
			assert.False(t, strings.HasPrefix(e.Name(), st.Prefix+"-"), "netns %s left", e.Name())
		}
	}
	for _, h := range st.Hosts {
		for _, p := range h.Procs {
			assert.False(t, sameProcess(p.PID, p.Start), "%s pid %d of %s left", p.Name, p.PID, h.Name)
		}
	}
	_, err = os.Stat(registryPath(st.Prefix))
	assert.ErrorIs(t, err, os.ErrNotExist, "registry entry left")
	if st.RemoveDir {
		_, err = os.Stat(st.Dir)
		assert.ErrorIs(t, err, os.ErrNotExist, "dir left")
	}
}

// Helper modes: the test binary run again as a test that builds a cluster,
// starts targetd, copies the cluster's state to
// $MHCODI_CLUSTER_HELPER_OUT and then fails, or waits to be signalled.
const (
	helperEnv    = "MHCODI_CLUSTER_HELPER"
	helperOutEnv = "MHCODI_CLUSTER_HELPER_OUT"
)

func TestHelperCluster(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper for TestTeardownOn*; runs only in a child")
	}
	c := NewT(t, Options{Nodes: 2})
	_, err := c.Host("node-b").StartTargetd(context.Background())
	require.NoError(t, err)
	// A copy, not the path: the directory goes with the cluster.
	st, err := os.ReadFile(filepath.Join(c.Dir(), StateFile))
	require.NoError(t, err)
	out := os.Getenv(helperOutEnv)
	require.NoError(t, os.WriteFile(out+".tmp", st, 0o644))
	require.NoError(t, os.Rename(out+".tmp", out))
	switch mode {
	case "fail":
		t.Fatal("simulated failure")
	case "wait":
		time.Sleep(time.Minute)
		t.Fatal("was not signalled")
	}
}

// helper runs this test binary as TestHelperCluster in mode; it returns
// the command, started, and a func that waits for the cluster's state.
func helper(t *testing.T, mode string) (*exec.Cmd, *syncbuf.Buffer, func() *State) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "state-path")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCluster$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperOutEnv+"="+out)
	log := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, log, func() *State {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(out); err == nil {
				st, err := ReadState(out)
				require.NoError(t, err)
				return st
			}
			require.True(t, time.Now().Before(deadline), "the helper wrote no state; its output:\n%s", log.String())
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestTeardownOnFailure: a test that fails after starting daemons still
// leaves nothing behind.
func TestTeardownOnFailure(t *testing.T) {
	cmd, log, state := helper(t, "fail")
	st := state()
	require.Len(t, st.Hosts[1].Procs, 1, "targetd of node-b")
	err := cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "the helper must fail; its output:\n%s", log)
	assert.Contains(t, log.String(), "simulated failure")
	assertGone(t, st)
}

// TestTeardownOnInterrupt: SIGINT and SIGTERM tear down, and the process
// still dies of the signal.
func TestTeardownOnInterrupt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd, log, state := helper(t, "wait")
			st := state()
			require.NoError(t, cmd.Process.Signal(sig))
			err := cmd.Wait()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "its output:\n%s", log)
			ws := ee.Sys().(syscall.WaitStatus)
			assert.True(t, ws.Signaled() && ws.Signal() == sig, "the helper must die of %v, got %v; its output:\n%s", sig, ws, log)
			assert.Contains(t, log.String(), "tearing the cluster down")
			assertGone(t, st)
		})
	}
}

// TestSweepAfterSIGKILL: a run killed outright cannot tear down: its
// daemons die with it (death signal), and the namespaces it left are
// swept by the next run (SweepStale) or `cluster down` (Sweep).
func TestSweepAfterSIGKILL(t *testing.T) {
	cmd, log, state := helper(t, "wait")
	st := state()
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	for _, h := range st.Hosts {
		for _, p := range h.Procs {
			assert.NoError(t, (&Proc{Name: p.Name, PID: p.PID, start: p.Start}).Wait(5*time.Second), "death signal")
		}
	}
	assert.True(t, netnsExists(st.Hosts[0].Netns), "a SIGKILLed run leaves its namespaces; output:\n%s", log)
	assert.False(t, st.OwnerAlive())
	// Another run's NewT may sweep it first (it is stale to every run):
	// what matters is that it is gone afterwards.
	swept, err := SweepStale(context.Background())
	require.NoError(t, err)
	t.Logf("swept %v", swept)
	assertGone(t, st)
	assert.NoError(t, Sweep(context.Background(), st, false), "sweeping twice is harmless")
}

// TestMissingBinaries names the build step.
func TestMissingBinaries(t *testing.T) {
	_, err := New(context.Background(), Options{BinDir: t.TempDir()})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "make build")
}

// TestStateJSON: the state file is what the CLI and Sweep read.
func TestStateJSON(t *testing.T) {
	c := NewT(t, Options{Nodes: 1})
	b, err := os.ReadFile(filepath.Join(c.Dir(), StateFile))
	require.NoError(t, err)
	var st State
	require.NoError(t, json.Unmarshal(b, &st))
	assert.Equal(t, c.Prefix(), st.Prefix)
	assert.True(t, st.Up)
	reg, err := ReadState(c.Prefix())
	require.NoError(t, err)
	assert.Equal(t, st.Dir, reg.Dir)
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	assert.True(t, sc.Scan())
}
