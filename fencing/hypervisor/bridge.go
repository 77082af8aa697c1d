package hypervisor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/initiator/drive"
)

// Files of the leg bridge in a guest's run directory.
const (
	BridgeDir     = "legs"       // its sockets, one per remote leg
	BridgePIDFile = "bridge.pid" // its process
	BridgeLog     = "bridge.log" // its log (slog text)
	BridgeBinary  = "mhcodi-bridge"
)

// bridgeWait is how long Start waits for the bridge's sockets.
const bridgeWait = 15 * time.Second

// BridgeDirOf is where the leg bridge of a guest with run directory
// runDir serves its sockets.
func BridgeDirOf(runDir string) string { return filepath.Join(runDir, BridgeDir) }

// nbdLegs are the legs of spec that go through the leg bridge.
func nbdLegs(spec GuestSpec) []drive.Spec {
	var out []drive.Spec
	for _, d := range spec.Disks {
		for _, l := range d.Legs {
			if l.Driver == drive.DriverNBD {
				out = append(out, l)
			}
		}
	}
	return out
}

// staleNodes are the nodes of the stale legs among legs, sorted, once.
func staleNodes(legs []drive.Spec) []string {
	var out []string
	for _, l := range legs {
		if l.Stale && !slices.Contains(out, l.Leg.Node) {
			out = append(out, l.Leg.Node)
		}
	}
	slices.Sort(out)
	return out
}

// bridgeBinary finds mhcodi-bridge: Options.Bridge, else beside this
// program (bin/ of a checkout, /usr/sbin of a package), else in PATH.
func (q *QEMU) bridgeBinary() (string, error) {
	if q.opts.Bridge != "" {
		return q.opts.Bridge, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), BridgeBinary)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(BridgeBinary)
	if err != nil {
		return "", fmt.Errorf("%s not found beside this program nor in PATH (make build puts it in bin/)", BridgeBinary)
	}
	return p, nil
}

// startBridge runs the guest's leg bridge (a userspace iSCSI initiator
// that serves the remote legs to qemu as NBD over unix sockets) and waits
// until every socket listens. It outlives the caller, like qemu: its own
// session, its pid in bridge.pid.
func (q *QEMU) startBridge(ctx context.Context, spec GuestSpec) error {
	// A bridge left by a guest that powered off by itself (it ends on
	// its own within a second, but may not have yet).
	q.stopBridge(spec.Name)
	legs := nbdLegs(spec)
	if len(legs) == 0 {
		return nil
	}
	bin, err := q.bridgeBinary()
	if err != nil {
		return err
	}
	cfgPath, err := filepath.Abs(q.cfg.Path)
	if err != nil {
		return err
	}
	sockDir := BridgeDirOf(spec.RunDir)
	if err := os.RemoveAll(sockDir); err != nil {
		return err
	}
	if err := os.MkdirAll(sockDir, 0o700); err != nil {
		return err
	}
	timeout := q.cfg.Hypervisor.IOTimeout
	if legs[0].TimeoutSec > 0 {
		timeout = time.Duration(legs[0].TimeoutSec) * time.Second
	}
	argv := append(slices.Clone(q.opts.Prefix), bin,
		"--config", cfgPath, "--node", q.node, "--guest", spec.Name,
		"--socket-dir", sockDir, "--io-timeout", timeout.String(),
		// A guest that powers off by itself takes its bridge with it.
		"--guest-pidfile", filepath.Join(spec.RunDir, PIDFile))
	if stale := staleNodes(legs); len(stale) > 0 {
		// qemu reads each disk's first sector before it daemonizes; a
		// stale leg on a host that is down would hold the start for the
		// whole I/O timeout.
		argv = append(argv, "--stale-nodes", strings.Join(stale, ","))
	}
	logf, err := os.OpenFile(filepath.Join(spec.RunDir, BridgeLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	q.log.Info("starting the leg bridge", "guest", spec.Name, "argv", strings.Join(argv, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("leg bridge: %w", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }() // reaps it if it dies while we live
	if err := os.WriteFile(filepath.Join(spec.RunDir, BridgePIDFile), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	deadline := time.Now().Add(bridgeWait)
	for {
		ready := true
		for _, l := range legs {
			if st, err := os.Stat(l.Socket); err != nil || st.Mode()&os.ModeSocket == 0 {
				ready = false
			}
		}
		if ready {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("leg bridge exited before it served its sockets%s", logTail(filepath.Join(spec.RunDir, BridgeLog)))
		case <-ctx.Done():
			q.stopBridge(spec.Name)
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			q.stopBridge(spec.Name)
			return fmt.Errorf("leg bridge: sockets not there after %v%s", bridgeWait, logTail(filepath.Join(spec.RunDir, BridgeLog)))
		}
	}
}

// stopBridge ends the guest's leg bridge, if its pid file names one that
// still runs (checked against /proc/<pid>/cmdline).
func (q *QEMU) stopBridge(name string) {
	pf := filepath.Join(q.dir(name), BridgePIDFile)
	b, err := os.ReadFile(pf)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !isBridge(pid, name) {
		_ = os.Remove(pf)
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !waitExit(context.Background(), pid, 3*time.Second) && isBridge(pid, name) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		waitExit(context.Background(), pid, killWait)
	}
	_ = os.Remove(pf)
	q.log.Info("leg bridge stopped", "guest", name, "pid", pid)
}

// isBridge reports whether pid is a leg bridge of guest name.
func isBridge(pid int, name string) bool {
	if !alive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) == 0 || filepath.Base(args[0]) != BridgeBinary {
		return false
	}
	return slices.Contains(args, "--guest") && args[slices.Index(args, "--guest")+1] == name
}

func logTail(path string) string { return fileTail(path, 15, "its log") }
