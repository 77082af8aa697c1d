package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/certs"
)

// Loopback addresses and ports of the real test; other tests of the
// repository use 127.0.0.1x and 127.0.0.5x.
const (
	realMgmtPort  = 17441
	realEtcdCli   = 17381
	realEtcdPeer  = 17382
	realNodeIPFmt = "127.0.0.6%d"
)

// realCluster writes a three-node cluster file (two storage nodes and a
// witness on loopback), one copy per node with its own state and run
// directories, and the cluster's certificates.
func realCluster(t *testing.T, dir string) (shared *configs.Config, perNode map[string]string) {
	t.Helper()
	body := func(node string) string {
		return fmt.Sprintf(`cluster: {name: realtest, iqn_prefix: iqn.2026-11.org.mhcodi}
nodes:
  - {name: node-a, san_address: %[1]s, mgmt_address: "%[1]s:%[4]d", storage: {backend: file, file: {dir: vol-a}}}
  - {name: node-b, san_address: %[2]s, mgmt_address: "%[2]s:%[4]d", storage: {backend: file, file: {dir: vol-b}}}
  - {name: quorum, role: witness, mgmt_address: "%[3]s:%[4]d"}
guests:
  - name: web
    preferred_node: node-a
    disks: [{name: root, size: 64M, legs: [node-a, node-b]}]
timeouts: {lease_ttl: 6s}
fencing:
  lease_margin: 2s
  monitor_interval: 1s
  state_dir: state-%[5]s
  etcd: {client_port: %[6]d, peer_port: %[7]d}
hypervisor: {run_dir: run-%[5]s}
security: {tls_dir: tls}
`, fmt.Sprintf(realNodeIPFmt, 1), fmt.Sprintf(realNodeIPFmt, 2), fmt.Sprintf(realNodeIPFmt, 3), realMgmtPort, node, realEtcdCli, realEtcdPeer)
	}
	perNode = map[string]string{}
	for _, n := range []string{"node-a", "node-b", "quorum"} {
		p := filepath.Join(dir, n+".yaml")
		require.NoError(t, os.WriteFile(p, []byte(body(n)), 0o600))
		perNode[n] = p
	}
	cfg, err := configs.Load(perNode["node-a"])
	require.NoError(t, err)
	require.NoError(t, certs.Init(cfg, cfg.Security.TLSDir))
	return cfg, perNode
}

// proc is a started mhcodi-fenced.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startFenced(t *testing.T, bin, dir, node, config string, witness bool) *proc {
	t.Helper()
	args := []string{"--config", config, "--node", node, "--socket", filepath.Join(dir, node+".sock"),
		"--targetd-socket", filepath.Join(dir, "no-targetd.sock"), "--metrics", "off", "--log-level", "debug"}
	if witness {
		args = append(args, "--witness")
	}
	logPath := filepath.Join(dir, node+".log")
	lf, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	require.NoError(t, cmd.Start())
	lf.Close()
	p := &proc{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		// By PID: SIGTERM, then SIGKILL if it does not go.
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s's log:\n%s", node, b)
		}
	})
	return p
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func TestRealClusterOverMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three fenced processes with embedded etcd")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mhcodi-fenced")
	out, err := exec.Command(goBin(), "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	cfg, files := realCluster(t, dir)

	procs := map[string]*proc{}
	for _, n := range []string{"node-a", "node-b", "quorum"} {
		procs[n] = startFenced(t, bin, dir, n, files[n], n == "quorum")
	}

	// Every node answers on its socket, with quorum once the members
	// found each other.
	ctx := context.Background()
	for n := range procs {
		c := api.NewUnixClient(n, filepath.Join(dir, n+".sock"))
		require.Eventually(t, func() bool {
			st, err := c.NodeStatus(ctx)
			return err == nil && st.Quorum
		}, 60*time.Second, 200*time.Millisecond, "%s never had quorum", n)
	}

	url := func(n string) string {
		node, _ := cfg.Node(n)
		return "https://" + node.MgmtAddress.AddrPort(configs.DefaultMgmtPort).String()
	}
	for _, caller := range []string{"node-a", "quorum", certs.Admin} {
		tlsCfg, err := certs.ClientTLS(cfg.Security.TLSDir, caller)
		require.NoError(t, err)
		st, err := api.NewHTTPClient("node-b", url("node-b"), tlsCfg).NodeStatus(ctx)
		require.NoError(t, err, "%s → node-b", caller)
		assert.Equal(t, "node-b", st.Node)
		assert.True(t, st.Quorum)
		lr, err := api.NewHTTPClient("quorum", url("quorum"), tlsCfg).Ledger(ctx)
		require.NoError(t, err, "%s → quorum", caller)
		assert.True(t, lr.Quorum)
	}

	// Someone else's cluster: same names, another CA.
	other := filepath.Join(dir, "other-tls")
	ocfg := *cfg
	ocfg.Cluster.Name = "other"
	require.NoError(t, certs.Init(&ocfg, other))
	otls, err := certs.ClientTLS(other, "node-a")
	require.NoError(t, err)
	otls.RootCAs, err = certs.Pool(cfg.Security.TLSDir)
	require.NoError(t, err)
	_, err = api.NewHTTPClient("node-b", url("node-b"), otls).NodeStatus(ctx)
	require.Error(t, err)
	assert.Zero(t, api.StatusOf(err), "refused in the handshake: %v", err)
	require.Eventually(t, func() bool {
		return strings.Contains(procs["node-b"].logText(), "TLS handshake error from 127.0.0.1:")
	}, 5*time.Second, 50*time.Millisecond, "node-b logs the refusal with the caller's address")

	// SIGTERM: fenced stops at once and cleanly.
	p := procs["node-a"]
	require.NoError(t, syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM))
	select {
	case err := <-p.done:
		p.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("exit status %d", ee.ExitCode())
		}
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("node-a did not stop within 15 s of SIGTERM")
	}
	assert.Contains(t, p.logText(), "guests left running")
}

// goBin is the go command, for building the daemon under test.
func goBin() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// TestOneFencedPerStateDir: a second fenced given a state directory that
// a running one holds (two nodes of one machine sharing a cluster file:
// issue 12, where it hung in etcd's start and ignored SIGTERM) exits at
// once, naming the directory and the holder's pid.
func TestOneFencedPerStateDir(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "mhcodi-fenced")
	out, err := exec.Command(goBin(), "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	_, files := realCluster(t, dir)
	first := startFenced(t, bin, dir, "node-a", files["node-a"], false)
	lock := filepath.Join(dir, "state-node-a", "fenced.lock")
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(lock)
		return err == nil && strings.TrimSpace(string(b)) == fmt.Sprint(first.cmd.Process.Pid)
	}, 30*time.Second, 50*time.Millisecond, "the first fenced holds its state directory")

	second := startFenced(t, bin, dir, "node-b", files["node-a"], false)
	select {
	case err := <-second.done:
		second.done <- err // for the cleanup, which waits for it too
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		assert.Equal(t, 1, exit.ExitCode())
	case <-time.After(30 * time.Second):
		t.Fatalf("the second fenced on one state directory did not exit:\n%s", second.logText())
	}
	log := second.logText()
	assert.Contains(t, log, "state-node-a is in use by another mhcodi-fenced (pid "+fmt.Sprint(first.cmd.Process.Pid)+")")
	select {
	case err := <-first.done:
		t.Fatalf("the first fenced ended: %v\n%s", err, first.logText())
	default:
	}
}
