package iscsiclient

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/internal/freeport"
)

// realTarget is a bin/mhcodi-targetd serving the loopback example's
// node-a on a free port of 127.0.0.11.
type realTarget struct {
	dir, config, portal, volume string
	cmd                         *exec.Cmd
	log                         *bytes.Buffer
}

func repoBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "bin", name))
	require.NoError(t, err)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not built: run `make build`: %v", p, err)
	}
	return p
}

func freePort(t *testing.T, ip string) string {
	t.Helper()
	ps, err := freeport.Portals(ip, 1)
	require.NoError(t, err)
	return ps[0]
}

// startRealTarget copies configs/examples/loopback.yaml into a temp dir
// (edit may change it), creates node-a's volumes and starts targetd.
func startRealTarget(t *testing.T, edit func(dir, text string) string) *realTarget {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "examples", "loopback.yaml"))
	require.NoError(t, err)
	text := string(b)
	if edit != nil {
		text = edit(dir, text)
	}
	r := &realTarget{dir: dir, config: filepath.Join(dir, "cluster.yaml"), log: &bytes.Buffer{}}
	require.NoError(t, os.WriteFile(r.config, []byte(text), 0o644))
	out, err := exec.Command(repoBinary(t, "mhcodi"), "volume", "create", "--config", r.config, "--node", "node-a").CombinedOutput()
	require.NoError(t, err, "volume create: %s", out)
	r.volume = filepath.Join(dir, "loopback-volumes", "node-a", "mhc-demo-root")
	r.portal = freePort(t, "127.0.0.11")
	r.start(t)
	return r
}

func (r *realTarget) start(t *testing.T) {
	t.Helper()
	r.cmd = exec.Command(repoBinary(t, "mhcodi-targetd"), "--config", r.config, "--node", "node-a",
		"--state-dir", filepath.Join(r.dir, "state"), "--control-socket", filepath.Join(r.dir, "control.sock"),
		"--listen", r.portal, "--metrics", "off")
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	require.NoError(t, r.cmd.Start())
	cmd := r.cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.portal, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		require.True(t, time.Now().Before(deadline), "targetd did not listen on %s; its log:\n%s", r.portal, r.log)
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *realTarget) kill() {
	r.cmd.Process.Signal(syscall.SIGKILL)
	r.cmd.Wait()
}

func (r *realTarget) config2(initiator string) Config {
	return Config{Portal: r.portal, TargetIQN: testTarget, InitiatorIQN: initiator, LoginTimeout: 5 * time.Second}
}

func TestRealTargetReadWrite(t *testing.T) {
	for _, digest := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "header-digest"}[digest], func(t *testing.T) {
			tg := startRealTarget(t, nil)
			ctx := context.Background()
			cfg := tg.config2(testInitiator)
			cfg.HeaderDigest = digest
			s, err := Dial(ctx, cfg)
			require.NoError(t, err)
			defer s.Close()
			assert.Equal(t, digest, s.Params().HeaderDigest)
			assert.Equal(t, uint32(512), s.BlockSize())
			assert.Equal(t, uint64(256<<20/512), s.Blocks())
			require.NoError(t, s.TestUnitReady(ctx))

			// 5 MiB: split in two commands, each with immediate data,
			// unsolicited Data-Out and R2Ts.
			w := bytes.Repeat([]byte{0xab, 0xcd, 0xef, 0x01, 0x23}, 1<<20)
			require.NoError(t, s.Write(ctx, 8, w, false))
			require.NoError(t, s.Write(ctx, 0, bytes.Repeat([]byte{0x5a}, 4096), true))
			require.NoError(t, s.SynchronizeCache(ctx))
			got := make([]byte, len(w))
			require.NoError(t, s.Read(ctx, 8, got))
			assert.True(t, bytes.Equal(w, got), "read back what was written")

			f, err := os.ReadFile(tg.volume)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(w, f[8*512:8*512+len(w)]), "the data is in targetd's backing file")
			assert.Equal(t, bytes.Repeat([]byte{0x5a}, 4096), f[:4096])

			// Concurrent small commands share the window.
			errs := make(chan error, 64)
			for i := range 64 {
				go func() {
					b := make([]byte, 4096)
					errs <- s.Read(ctx, uint64(i*8), b)
				}()
			}
			for range 64 {
				require.NoError(t, <-errs)
			}

			// Beyond the end: CHECK CONDITION, ILLEGAL REQUEST, LBA out of range.
			err = s.Read(ctx, s.Blocks(), make([]byte, 512))
			var se *SCSIError
			require.ErrorAs(t, err, &se)
			assert.Equal(t, byte(SenseIllegalRequest), se.SenseKey)
			assert.Equal(t, byte(0x21), se.ASC)

			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			require.NoError(t, s.Logout(lctx))
			assert.ErrorIs(t, s.TestUnitReady(ctx), ErrConnectionLost)
		})
	}
}

func TestRealTargetRefusesUnknownInitiator(t *testing.T) {
	tg := startRealTarget(t, nil)
	_, err := Dial(context.Background(), tg.config2("iqn.2026-11.org.mhcodi:other.node-z.initiator"))
	var le *LoginError
	require.ErrorAs(t, err, &le)
	assert.True(t, le.Refused())
	assert.Contains(t, err.Error(), "authorization failure")
}

func TestRealTargetCHAP(t *testing.T) {
	tg := startRealTarget(t, func(dir, text string) string {
		secrets := filepath.Join(dir, "chap.yaml")
		require.NoError(t, os.WriteFile(secrets, []byte("nodes:\n  node-a:\n    initiator: node-a-secret-123\n  node-b:\n    initiator: node-b-secret-456\n"), 0o600))
		return text + "\nsecurity:\n  chap_secrets: " + secrets + "\n"
	})
	ctx := context.Background()
	cfg := tg.config2(testInitiator)
	cfg.CHAP = &CHAP{User: testInitiator, Secret: "node-b-secret-456"}
	s, err := Dial(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, s.TestUnitReady(ctx))
	s.Close()

	cfg.CHAP.Secret = "node-a-secret-123"
	_, err = Dial(ctx, cfg)
	var le *LoginError
	require.ErrorAs(t, err, &le)
	assert.True(t, le.Refused())
	assert.Contains(t, err.Error(), "authentication failure")

	cfg.CHAP = nil
	_, err = Dial(ctx, cfg)
	require.ErrorAs(t, err, &le)
	assert.True(t, le.Refused())
}

// Mutual CHAP against targetd itself: it answers our challenge with its
// node's target secret; a secret of ours that differs is caught by us.
func TestRealTargetMutualCHAP(t *testing.T) {
	tg := startRealTarget(t, func(dir, text string) string {
		secrets := filepath.Join(dir, "chap.yaml")
		require.NoError(t, os.WriteFile(secrets, []byte("nodes:\n  node-a:\n    initiator: node-a-secret-123\n    target: node-a-target-789\n  node-b:\n    initiator: node-b-secret-456\n"), 0o600))
		return text + "\nsecurity:\n  chap_secrets: " + secrets + "\n"
	})
	ctx := context.Background()
	cfg := tg.config2(testInitiator)
	cfg.CHAP = &CHAP{User: testInitiator, Secret: "node-b-secret-456"}
	cfg.MutualCHAP = &CHAP{User: cfg.TargetIQN, Secret: "node-a-target-789"}
	s, err := Dial(ctx, cfg)
	require.NoError(t, err)
	require.NoError(t, s.TestUnitReady(ctx))
	s.Close()

	cfg.MutualCHAP.Secret = "an-impostors-secret"
	_, err = Dial(ctx, cfg)
	var te *TargetAuthError
	require.ErrorAs(t, err, &te)
	assert.True(t, te.Refused())
	assert.Contains(t, err.Error(), "wrong CHAP_R")
}

func TestRealTargetKilled(t *testing.T) {
	tg := startRealTarget(t, nil)
	ctx := context.Background()
	s, err := Dial(ctx, tg.config2(testInitiator))
	require.NoError(t, err)
	defer s.Close()
	tg.kill()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not notice the target died")
	}
	assert.ErrorIs(t, s.Err(), ErrConnectionLost)
	err = s.Read(ctx, 0, make([]byte, 512))
	assert.ErrorIs(t, err, ErrConnectionLost)
	_, err = Dial(ctx, tg.config2(testInitiator))
	assert.Error(t, err)
	assert.False(t, strings.Contains(err.Error(), "refused with status"), "a dead target is no refusal: %v", err)
}

// A target that stops answering (SIGSTOP) is found dead by the pings.
func TestRealTargetPingTimeout(t *testing.T) {
	tg := startRealTarget(t, nil)
	ctx := context.Background()
	cfg := tg.config2(testInitiator)
	cfg.PingInterval, cfg.PingTimeout = 200*time.Millisecond, 300*time.Millisecond
	s, err := Dial(ctx, cfg)
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, tg.cmd.Process.Signal(syscall.SIGSTOP))
	defer tg.cmd.Process.Signal(syscall.SIGCONT)
	// The signal is delivered asynchronously: a read issued before the
	// target actually stops may still be served.
	waitStopped(t, tg.cmd.Process.Pid)
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- s.Read(ctx, 0, make([]byte, 4096)) }()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, ErrConnectionLost)
		assert.Less(t, time.Since(start), 2*time.Second)
	case <-time.After(5 * time.Second):
		t.Fatal("a command to a stopped target did not fail")
	}
}

// waitStopped waits until pid is in the stopped state (T in /proc/pid/stat).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		require.NoError(t, err)
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && len(b) > i+2 && b[i+2] == 'T' {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d did not stop", pid)
}
