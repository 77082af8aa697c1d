package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/targetd/controlapi"
	"github.com/mhcodi/mhcodi/test/iscsitest"
)

const (
	libiscsiInitiator  = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
	libiscsiInitiator2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
	demoTarget         = "iqn.2026-11.org.mhcodi:demo.node-a.demo.root"
	nodeBInitiator     = "iqn.2026-11.org.mhcodi:demo.node-b.initiator"
)

// runningTargetd is an mhcodi-targetd process a test started.
type runningTargetd struct {
	dir, config, portal, control, metrics string
	cmd                                   *exec.Cmd
	log                                   *os.File
	exited                                <-chan error // the daemon's Wait result
	done                                  bool         // exited was consumed
}

// startTargetd copies the loopback example into a temp dir (with edit
// applied), creates node-a's legs with `mhcodi volume create`, and starts
// mhcodi-targetd for node-a on a free port of 127.0.0.11. It is stopped by
// PID when the test ends, whatever happens.
func startTargetd(t *testing.T, edit func(dir, text string) string, extra ...string) *runningTargetd {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join(repo, "configs", "examples", "loopback.yaml"))
	require.NoError(t, err)
	text := string(b)
	if edit != nil {
		text = edit(dir, text)
	}
	cfg := filepath.Join(dir, "cluster.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(text), 0o644))
	code, out, errs := runCLI(t, "volume", "create", "--config", cfg, "--node", "node-a")
	require.Equal(t, 0, code, "volume create: %s %s", out, errs)

	// The ports are picked before the daemon binds them, so another
	// process can take one in between: a start that fails to bind is
	// tried again on fresh ports, any other failure is the test's.
	var lastLog string
	for attempt := 1; attempt <= 3; attempt++ {
		r, log, err := launchTargetd(t, dir, cfg, extra)
		if err == nil {
			return r
		}
		if !strings.Contains(log, "address already in use") {
			t.Fatalf("%v; its log:\n%s", err, log)
		}
		t.Logf("targetd start %d lost its port to another process, trying new ports: %v", attempt, err)
		lastLog = log
	}
	t.Fatalf("targetd could not bind free ports in 3 starts; its last log:\n%s", lastLog)
	return nil
}

// launchTargetd starts mhcodi-targetd once on fresh ports and waits until
// it listens. On failure it returns the daemon's log, the daemon stopped.
func launchTargetd(t *testing.T, dir, cfg string, extra []string) (*runningTargetd, string, error) {
	t.Helper()
	ports, err := iscsitest.FreePortals("127.0.0.11", 2)
	require.NoError(t, err)
	portal, metrics := ports[0], ports[1]
	r := &runningTargetd{dir: dir, config: cfg, portal: portal, control: filepath.Join(dir, "control.sock"), metrics: metrics}
	r.log, err = os.CreateTemp(dir, "targetd-*.log")
	require.NoError(t, err)
	args := append([]string{"--config", cfg, "--node", "node-a", "--state-dir", filepath.Join(dir, "state"),
		"--control-socket", r.control, "--listen", portal, "--metrics", metrics}, extra...)
	r.start(t, exec.Command(binary(t, "mhcodi-targetd"), args...))
	exited := r.exited
	t.Cleanup(func() { r.stop(t) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", portal, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return r, "", nil
		}
		select {
		case err := <-exited:
			r.done = true
			r.log.Close()
			return nil, r.logText(), fmt.Errorf("targetd exited before listening on %s: %v", portal, err)
		default:
		}
		if time.Now().After(deadline) {
			r.stop(t)
			return nil, r.logText(), fmt.Errorf("targetd did not listen on %s within 10s", portal)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// start runs cmd as this targetd, its output to the log.
func (r *runningTargetd) start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = r.log, r.log
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	r.cmd, r.exited, r.done = cmd, exited, false
}

// kill kills targetd like a crash would.
func (r *runningTargetd) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, r.cmd.Process.Signal(syscall.SIGKILL))
	<-r.exited
	r.done = true
}

// restart starts targetd again with the same arguments (after kill).
func (r *runningTargetd) restart(t *testing.T) {
	t.Helper()
	require.True(t, r.done, "restart of a targetd that still runs")
	r.start(t, exec.Command(r.cmd.Path, r.cmd.Args[1:]...))
}

func (r *runningTargetd) logText() string {
	b, _ := os.ReadFile(r.log.Name())
	return string(b)
}

// stop ends the daemon with SIGTERM (SIGKILL after 10 s) and checks it
// exited cleanly.
func (r *runningTargetd) stop(t *testing.T) {
	if r.done {
		return
	}
	r.done = true
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.exited:
		assert.NoError(t, err, "targetd exit; its log:\n%s", r.logText())
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-r.exited
		t.Errorf("targetd did not stop within 10s of SIGTERM; its log:\n%s", r.logText())
	}
	r.log.Close()
}

func (r *runningTargetd) url(user, secret string) string {
	u := iscsitest.LUNURL(r.portal, demoTarget, 0)
	if user != "" {
		var err error
		u, err = iscsitest.WithCHAP(u, user, secret)
		if err != nil {
			panic(err)
		}
	}
	return u
}

// conformanceAllowedSkip is a test (or a whole suite) that may skip
// itself, why that is right for targetd, and what its skip message must
// say: an entry covers that skip and no other.
type conformanceAllowedSkip struct{ why, says string }

// conformanceAllowedSkips are the skips that are not failures, keyed by
// "Suite.Test" or "Suite". Each names a feature targetd does not claim or
// a condition a leg does not meet, which the test itself detects before
// it skips: the list only accepts those skips, it cannot make a test
// skip. An entry that matches no skip in any family fails the test: it
// is stale.
var conformanceAllowedSkips = map[string]conformanceAllowedSkip{
	"WriteSame10.ZeroBlocks": {"targetd sets WSNZ=1: WRITE SAME with 0 blocks (\"to the end of the disk\") is refused, so one command cannot rewrite a whole leg", "does not support 0-blocks"},
	"WriteSame16.ZeroBlocks": {"targetd sets WSNZ=1: WRITE SAME with 0 blocks (\"to the end of the disk\") is refused, so one command cannot rewrite a whole leg", "does not support 0-blocks"},
	"ExtendedCopy":           {"no EXTENDED COPY (copy offload): legs are copied by md's resync in the guest, never target to target", "is not implemented"},
	"ReceiveCopyResults":     {"no EXTENDED COPY, so nothing to report on", "RECEIVECOPYRESULT is not implemented"},
	"ReadDefectData10":       {"a volume has no defect list: READ DEFECT DATA is not offered", "READDEFECTDATA10 is not implemented"},
	"ReadDefectData12":       {"a volume has no defect list: READ DEFECT DATA is not offered", "READDEFECTDATA12 is not implemented"},
	"WriteAtomic16":          {"no atomic writes (SBC-4 WRITE ATOMIC(16), Block Limits MAXIMUM ATOMIC TRANSFER LENGTH 0): md RAID1 cannot make a write atomic across its legs anyway", "WRITEATOMIC16 is not implemented"},
	"Sanitize":               {"no SANITIZE: a leg is erased by removing its volume (mhcodi volume remove); Sanitize.Readonly still sets and clears SWP before it skips", "is not implemented"},
	"PreventAllow":           {"a leg is a disk, not removable media (RMB=0): PREVENT ALLOW MEDIUM REMOVAL does not apply", "Logical unit is not removable"},
	"StartStopUnit.Simple":   {"not removable media (RMB=0): there is nothing to load or eject", "Media is not removable"},
	"ReadOnly.ReadOnlySBC":   {"the suite needs an LU that is write-protected when iscsi-test-cu starts, and a leg is writable; write protection is tested by ModeSense6.Control-SWP (SWP set at run time) and targetd/scsi's unit tests", "Logical unit is not write-protected"},
}

// conformanceExpectedFailures are tests that fail against targetd for a
// reason that is not targetd's, with the assertion that must fail. One
// that passes fails the test: the entry is stale.
var conformanceExpectedFailures = map[string]iscsitest.ExpectedFailure{
	"GetLBAStatus.UnmapSingle": {
		Reason: "libiscsi 1.19 (and its master) bug: after unmapping LBAs 0..i-1 its second loop asks GET LBA STATUS " +
			"for LBA i+1 and wants the first descriptor to start at i+lbppb; SBC-4 requires it to start at the " +
			"starting LBA, so the test can pass only with one logical block per physical block, and targetd reports " +
			"4 KiB physical blocks (lbppb 8). The test's first loop passes, and TestGetLBAStatusUnmapSingle in " +
			"targetd/scsi runs its steps with the SBC-4 expectation for lbppb 1 and 8.",
		Match: "lba offset in first descriptor does not",
	},
}

// TestTargetdConformance runs libiscsi's whole conformance suite against
// mhcodi-targetd: every family `iscsi-test-cu --list` prints, --dataloss
// and -S, with a second session to the same LU as the multipath path. A
// SKIPPED test is a failure unless conformanceAllowedSkips names it, a
// failure one unless conformanceExpectedFailures does, and a listed test
// that a run does not report is a failure too, so the suite cannot
// silently shrink.
func TestTargetdConformance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, err := iscsitest.ListTestCU(ctx)
	require.NoError(t, err)
	allow := make(map[string]string, len(conformanceAllowedSkips))
	for k, a := range conformanceAllowedSkips {
		allow[k] = a.why
	}
	r := startTargetd(t, nil, "--allow-initiator", libiscsiInitiator, "--allow-initiator", libiscsiInitiator2)
	used := map[string]bool{}
	for _, family := range list.Families {
		t.Run(family, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
			defer cancel()
			rep, err := iscsitest.RunTestCU(ctx, r.url("", ""), []string{family}, iscsitest.TestCUOptions{
				Allow: allow, ExpectFail: conformanceExpectedFailures,
				Initiator: libiscsiInitiator, Initiator2: libiscsiInitiator2,
				MultipathURL: r.url("", ""), AllowSanitize: true, Timeout: 5 * time.Minute,
			})
			require.NoError(t, err)
			t.Logf("%s: %d tests in %s: %d passed, %d skipped (allowed), %d failed (expected), %d problems",
				family, len(rep.Tests), rep.Elapsed.Round(100*time.Millisecond), rep.Count(iscsitest.Passed),
				rep.Count(iscsitest.AllowedSkip), rep.Count(iscsitest.ExpectedFail), len(rep.Problems()))
			assert.True(t, rep.OK(), "%s", rep.Summary())
			assert.Empty(t, rep.Missing(list.Tests[family]), "tests `iscsi-test-cu --list` names in %s that the run did not report", family)
			assert.Len(t, rep.Tests, len(list.Tests[family]), "tests reported against tests listed in %s", family)
			for _, res := range rep.Tests {
				if res.Status != iscsitest.AllowedSkip {
					continue
				}
				a, ok := conformanceAllowedSkips[res.Name()]
				if !ok {
					a = conformanceAllowedSkips[res.Suite]
				}
				assert.Contains(t, res.Detail, a.says, "%s skipped for another reason than its allow-list entry's", res.Name())
			}
			for k := range rep.Used {
				used[k] = true
			}
		})
	}
	for k := range conformanceAllowedSkips {
		assert.True(t, used[k], "allowed skip %s matched no skip in any family: remove the entry", k)
	}
	for k := range conformanceExpectedFailures {
		assert.True(t, used[k], "expected failure %s names no test that ran: remove the entry", k)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ex, err := controlapi.NewControlClient(r.control).Exports(ctx)
	require.NoError(t, err)
	require.Len(t, ex, 1)
	assert.Equal(t, demoTarget, ex[0].Target)
}

// iscsiInq runs libiscsi's iscsi-inq as initiator against url and returns
// its exit status and output.
func iscsiInq(t *testing.T, initiator, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool(t, "iscsi-inq"), "-i", initiator, url).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("iscsi-inq: %v", err)
	return 0, ""
}

const chapSecrets = `nodes:
  node-a:
    initiator: node-a-initiator-secret
    target: node-a-target-secret
  node-b:
    initiator: node-b-initiator-secret
`

// TestTargetdAccess: only the cluster's nodes' initiators get in, with
// CHAP when the cluster has secrets; a wrong secret or a stranger is
// refused; fencing shuts out everyone but the owner at once.
func TestTargetdAccess(t *testing.T) {
	r := startTargetd(t, func(dir, text string) string {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "secrets.yaml"), []byte(chapSecrets), 0o600))
		return strings.Replace(text, "timeouts:", "security:\n  chap_secrets: secrets.yaml\n\ntimeouts:", 1)
	})

	code, out := iscsiInq(t, nodeBInitiator, r.url(nodeBInitiator, "node-b-initiator-secret"))
	assert.Equal(t, 0, code, "node-b with its CHAP secret: %s", out)
	assert.Contains(t, out, "MHCODI")

	code, out = iscsiInq(t, nodeBInitiator, r.url(nodeBInitiator, "wrong-secret-of-some-length"))
	assert.NotEqual(t, 0, code, "a wrong CHAP secret must be refused: %s", out)

	code, out = iscsiInq(t, nodeBInitiator, r.url("", ""))
	assert.NotEqual(t, 0, code, "no CHAP when the cluster has secrets must be refused: %s", out)

	code, out = iscsiInq(t, "iqn.1994-05.com.redhat:stranger", r.url("iqn.1994-05.com.redhat:stranger", "node-b-initiator-secret"))
	assert.NotEqual(t, 0, code, "an initiator that is no node of the cluster must be refused: %s", out)
	assert.Contains(t, r.logText(), "login refused: initiator is not a node of this cluster")

	// Fence the leg to node-a: node-b is shut out, node-a gets in.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := controlapi.NewControlClient(r.control)
	res, err := cl.Fence(ctx, controlapi.FenceRequest{Guest: "demo", Owner: "node-a", Epoch: 3})
	require.NoError(t, err)
	assert.Equal(t, []string{demoTarget}, res.Targets)
	code, out = iscsiInq(t, nodeBInitiator, r.url(nodeBInitiator, "node-b-initiator-secret"))
	assert.NotEqual(t, 0, code, "node-b after the leg was fenced to node-a: %s", out)
	nodeA := "iqn.2026-11.org.mhcodi:demo.node-a.initiator"
	code, out = iscsiInq(t, nodeA, r.url(nodeA, "node-a-initiator-secret"))
	assert.Equal(t, 0, code, "node-a, the owner: %s", out)
	_, err = cl.Fence(ctx, controlapi.FenceRequest{Guest: "demo", Owner: "node-b", Epoch: 2})
	assert.ErrorIs(t, err, controlapi.ErrStaleEpoch, "an older epoch is refused")
}

// TestTargetdQemuClient: QEMU's own iSCSI driver writes a pattern and
// reads it back, with header digests off and on.
func TestTargetdQemuClient(t *testing.T) {
	r := startTargetd(t, nil, "--allow-initiator", libiscsiInitiator)
	for _, digest := range []string{"none", "crc32c"} {
		t.Run("header-digest="+digest, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=0,initiator-name=%s,header-digest=%s",
				r.portal, demoTarget, libiscsiInitiator, digest)
			pattern := "0x5a"
			if digest != "none" {
				pattern = "0xc3"
			}
			out, err := exec.CommandContext(ctx, tool(t, "qemu-io"), "--image-opts", opts,
				"-c", "write -P "+pattern+" 1M 3M",
				"-c", "read -P "+pattern+" 1M 3M",
				"-c", "write -P "+pattern+" 7 1", // not block aligned: QEMU reads, modifies, writes
				"-c", "read -P "+pattern+" 7 1").CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.NotContains(t, string(out), "verification failed")
			assert.Equal(t, 4, strings.Count(string(out), "ops; "), "%s", out)
		})
	}
	assert.Contains(t, r.logText(), "header_digest=true", "the crc32c run really negotiated header digests")
	// The last pattern is on the leg's file, where a guest's md would read it.
	b, err := os.ReadFile(filepath.Join(r.dir, "loopback-volumes", "node-a", "mhc-demo-root"))
	require.NoError(t, err)
	assert.Equal(t, byte(0xc3), b[1<<20])
	assert.Equal(t, byte(0xc3), b[7])

	// The writes show in the Prometheus metrics.
	resp, err := http.Get("http://" + r.metrics + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Regexp(t, `mhcodi_targetd_bytes_total\{direction="write",target="`+regexp.QuoteMeta(demoTarget)+`"\} [1-9]`, string(body))
	assert.Contains(t, string(body), `mhcodi_targetd_command_duration_seconds_bucket{kind="read"`)
	assert.Contains(t, string(body), `mhcodi_targetd_sessions{target="`+demoTarget+`"}`)
}
