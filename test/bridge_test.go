package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
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
)

// bridgeIOTimeout is the --io-timeout of the bridges these tests run.
const bridgeIOTimeout = 3 * time.Second

// runningBridge is an mhcodi-bridge process a test started.
type runningBridge struct {
	cmd    *exec.Cmd
	dir    string
	socket string // the demo/root leg on node-a
	mu     sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
}

func (b *runningBridge) logText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

// bridgeConfig writes a copy of targetd's cluster file in which node-a's
// SAN address carries the port targetd really listens on (the bridge
// takes the portal from the cluster file; targetd was given --listen).
func bridgeConfig(t *testing.T, td *runningTargetd, edit func(string) string) string {
	t.Helper()
	b, err := os.ReadFile(td.config)
	require.NoError(t, err)
	text := strings.Replace(string(b), "san_address: 127.0.0.11\n", "san_address: "+td.portal+"\n", 1)
	require.Contains(t, text, td.portal)
	if edit != nil {
		text = edit(text)
	}
	path := filepath.Join(t.TempDir(), "bridge-cluster.yaml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))
	return path
}

// startBridge runs mhcodi-bridge as node-b for guest demo, so it serves
// demo/root's leg on node-a, and waits for its ready line.
func startBridge(t *testing.T, config string, extra ...string) *runningBridge {
	t.Helper()
	dir, err := os.MkdirTemp("", "mhcb")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	rb := &runningBridge{dir: dir, socket: filepath.Join(dir, "root-node-a.sock"), exited: make(chan struct{})}
	args := append([]string{"--config", config, "--node", "node-b", "--guest", "demo", "--socket-dir", dir,
		"--io-timeout", bridgeIOTimeout.String()}, extra...)
	rb.cmd = exec.Command(binary(t, "mhcodi-bridge"), args...)
	stderr, err := rb.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, rb.cmd.Start())
	ready := make(chan struct{})
	go func() {
		defer close(rb.exited)
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			rb.mu.Lock()
			rb.log.WriteString(sc.Text() + "\n")
			rb.mu.Unlock()
			if sc.Text() == "mhcodi-bridge: ready" {
				once.Do(func() { close(ready) })
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() { rb.stop(t) })
	select {
	case <-ready:
	case <-rb.exited:
		t.Fatalf("mhcodi-bridge exited before it was ready:\n%s", rb.logText())
	case <-time.After(10 * time.Second):
		t.Fatalf("mhcodi-bridge not ready within 10s:\n%s", rb.logText())
	}
	_, err = os.Stat(rb.socket)
	require.NoError(t, err, "the socket exists once the bridge says ready")
	return rb
}

// stop ends the bridge with SIGTERM (SIGKILL after 10 s).
func (b *runningBridge) stop(t *testing.T) {
	if b.cmd.ProcessState != nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		t.Errorf("mhcodi-bridge did not stop within 10s of SIGTERM:\n%s", b.logText())
	}
	err := b.cmd.Wait()
	assert.NoError(t, err, "bridge exit; its log:\n%s", b.logText())
}

// legState reads bridge.json: the first leg's state and last error.
func (b *runningBridge) legState(t *testing.T) (state, lastErr string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(b.dir, "bridge.json"))
	require.NoError(t, err)
	var st struct {
		Legs []struct {
			Leg       string `json:"leg"`
			State     string `json:"state"`
			LastError string `json:"last_error"`
			Socket    string `json:"socket"`
		} `json:"legs"`
	}
	require.NoError(t, json.Unmarshal(data, &st), "%s", data)
	require.Len(t, st.Legs, 1)
	require.Equal(t, "root-node-a", st.Legs[0].Leg)
	require.Equal(t, b.socket, st.Legs[0].Socket)
	return st.Legs[0].State, st.Legs[0].LastError
}

// waitState polls bridge.json until the leg reaches want; it returns how
// long that took.
func (b *runningBridge) waitState(t *testing.T, want string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		st, _ := b.legState(t)
		if st == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("leg not %s within %v (it is %s); bridge log:\n%s", want, within, st, b.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// qemuIONBD runs qemu-io on the bridge's socket with QEMU's NBD client
// and returns its output, whether a command failed, and how long it ran.
// Read-only, qemu-io does not flush when it closes the image: with the
// target down that flush would wait for the I/O timeout once more and
// double the time measured for a read.
func qemuIONBD(t *testing.T, sock string, readOnly bool, cmds ...string) (string, bool, time.Duration) {
	t.Helper()
	args := []string{"--image-opts", "driver=nbd,server.type=unix,server.path=" + sock}
	if readOnly {
		args = append(args, "-r")
	}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	start := time.Now()
	out, err := exec.Command(tool(t, "qemu-io"), args...).CombinedOutput()
	d := time.Since(start)
	o := string(out)
	return o, err != nil || strings.Contains(o, "failed") || strings.Contains(o, "error"), d
}

func TestBridgeQemuIO(t *testing.T) {
	td := startTargetd(t, nil)
	rb := startBridge(t, bridgeConfig(t, td, nil))
	rb.waitState(t, "up", 10*time.Second)

	out, failed, _ := qemuIONBD(t, rb.socket, false, "write -P 0xab 0 1M", "read -P 0xab 0 1M", "write -f -P 0xcd 1M 64k", "flush")
	require.False(t, failed, out)
	f, err := os.ReadFile(filepath.Join(td.dir, "loopback-volumes", "node-a", "mhc-demo-root"))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(bytes.Repeat([]byte{0xab}, 1<<20), f[:1<<20]), "the pattern is in targetd's backing file")
	assert.True(t, bytes.Equal(bytes.Repeat([]byte{0xcd}, 64<<10), f[1<<20:1<<20+64<<10]))

	// targetd dies: a read waits for a session up to the I/O timeout,
	// then fails with EIO; the guest is not frozen for longer.
	td.kill(t)
	out, failed, took := qemuIONBD(t, rb.socket, true, "read -P 0xab 0 1M")
	t.Logf("read after the kill failed after %v (io-timeout %v)", took.Round(time.Millisecond), bridgeIOTimeout)
	require.True(t, failed, "a read with the target dead must fail: %s", out)
	assert.Contains(t, out, "Input/output error")
	assert.Less(t, took, bridgeIOTimeout+3*time.Second)
	assert.GreaterOrEqual(t, took, bridgeIOTimeout-500*time.Millisecond, "the read waited for a session first")
	st, lastErr := rb.legState(t)
	assert.Equal(t, "down", st)
	assert.NotEmpty(t, lastErr)

	// targetd comes back: the bridge logs in again by itself.
	td.restart(t)
	relogin := rb.waitState(t, "up", 15*time.Second)
	t.Logf("leg up again %v after targetd restarted", relogin.Round(time.Millisecond))
	out, failed, took = qemuIONBD(t, rb.socket, true, "read -P 0xab 0 1M")
	require.False(t, failed, out)
	t.Logf("read after the restart took %v", took.Round(time.Millisecond))

	// A read issued while the target is down succeeds if the target is
	// back within the I/O timeout.
	td.kill(t)
	type result struct {
		out    string
		failed bool
		took   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		o, f, d := qemuIONBD(t, rb.socket, true, "read -P 0xcd 1M 64k")
		done <- result{o, f, d}
	}()
	time.Sleep(time.Second)
	td.restart(t)
	r := <-done
	require.False(t, r.failed, "a read pending across a target restart within the I/O timeout succeeds: %s\nbridge log:\n%s", r.out, rb.logText())
	t.Logf("read pending across a restart took %v", r.took.Round(time.Millisecond))

	// SIGTERM: the sockets go, the session logs out, the status says so.
	rb.stop(t)
	_, err = os.Stat(rb.socket)
	assert.ErrorIs(t, err, os.ErrNotExist)
	st, _ = rb.legState(t)
	assert.Equal(t, "stopped", st)
	assert.Contains(t, td.logText(), "session ended")
}

// A target that refuses the bridge's initiator (wrong CHAP secret): the
// bridge reports the refusal with its reason, once, and requests fail
// with EIO after the I/O timeout instead of hanging.
func TestBridgeRefused(t *testing.T) {
	td := startTargetd(t, func(dir, text string) string {
		secrets := filepath.Join(dir, "chap.yaml")
		require.NoError(t, os.WriteFile(secrets, []byte("nodes:\n  node-a:\n    initiator: node-a-secret-123\n    target: node-a-target-789\n  node-b:\n    initiator: node-b-secret-456\n"), 0o600))
		return text + "\nsecurity:\n  chap_secrets: " + secrets + "\n"
	})
	wrong := filepath.Join(t.TempDir(), "chap.yaml")
	require.NoError(t, os.WriteFile(wrong, []byte("nodes:\n  node-a:\n    initiator: node-a-secret-123\n    target: node-a-target-789\n  node-b:\n    initiator: not-node-b-secret\n"), 0o600))
	cfg := bridgeConfig(t, td, func(text string) string {
		i := strings.Index(text, "chap_secrets: ")
		require.GreaterOrEqual(t, i, 0)
		return text[:i] + "chap_secrets: " + wrong + "\n"
	})
	rb := startBridge(t, cfg, "--refused-backoff", "300ms")
	rb.waitState(t, "refused", 10*time.Second)
	_, lastErr := rb.legState(t)
	assert.Contains(t, lastErr, "authentication failure")

	out, failed, took := qemuIONBD(t, rb.socket, true, "read 0 4k")
	require.True(t, failed, out)
	assert.Contains(t, out, "Input/output error")
	assert.Less(t, took, bridgeIOTimeout+3*time.Second)
	// Several logins were refused by now (the bridge retries every
	// 300 ms, targetd throttles each failed source): one report on each
	// side; targetd sums up the rest (issue 12: one WARN per guess).
	assert.Equal(t, 1, strings.Count(td.logText(), "does not verify"), "targetd log:\n%s", td.logText())
	assert.Equal(t, 1, strings.Count(rb.logText(), "refuses this initiator"), "bridge log:\n%s", rb.logText())

	// With the right secret, the same bridge setup comes up (after the
	// throttle's wait, up to 4 s), and it checked the target back
	// (mutual CHAP: node-a has a target secret). Its success closes the
	// throttle's window: the failures since the first are summed up.
	rb.stop(t)
	good := bridgeConfig(t, td, nil)
	rb = startBridge(t, good)
	rb.waitState(t, "up", 20*time.Second)
	assert.Contains(t, td.logText(), "mutual_chap=true", "targetd log:\n%s", td.logText())
	assert.Contains(t, td.logText(), "more logins failed to authenticate from this address", "targetd log:\n%s", td.logText())

	// A bridge that knows another secret for node-a's targets (an
	// impostor on the portal would not know the real one) refuses the
	// target: nothing of the guest's is written there.
	rb.stop(t)
	impostor := filepath.Join(t.TempDir(), "chap.yaml")
	require.NoError(t, os.WriteFile(impostor, []byte("nodes:\n  node-a:\n    initiator: node-a-secret-123\n    target: not-node-a-target\n  node-b:\n    initiator: node-b-secret-456\n"), 0o600))
	cfg = bridgeConfig(t, td, func(text string) string {
		i := strings.Index(text, "chap_secrets: ")
		require.GreaterOrEqual(t, i, 0)
		return text[:i] + "chap_secrets: " + impostor + "\n"
	})
	rb = startBridge(t, cfg, "--refused-backoff", "300ms")
	rb.waitState(t, "refused", 10*time.Second)
	_, lastErr = rb.legState(t)
	assert.Contains(t, lastErr, "failed mutual CHAP")
	out, failed, _ = qemuIONBD(t, rb.socket, true, "write -P 0x66 0 4k")
	require.True(t, failed, out)
}
