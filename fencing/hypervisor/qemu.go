package hypervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/naming"
)

// QEMU runs each guest as one daemonized qemu process, with its files in
// <run_dir>/<guest>/: the QMP socket, the guestraid channel socket, the
// console log, the pid file and the host info.
type QEMU struct {
	cfg    *configs.Config
	node   string
	binary string
	runDir string
	opts   Options
	log    *slog.Logger
}

var _ Driver = (*QEMU)(nil)
var _ Channeler = (*QEMU)(nil)

// How long the steps of a destroy wait before escalating.
const (
	killWait = 5 * time.Second // after SIGKILL, before giving up
	qmpWait  = 3 * time.Second // for one QMP exchange
)

// NewQEMU returns the qemu driver for node.
func NewQEMU(cfg *configs.Config, node string, o Options) (*QEMU, error) {
	bin := cfg.Hypervisor.QEMU
	if o.QEMU != "" {
		bin = o.QEMU
	}
	if bin == "" {
		bin = configs.DefaultQEMU
	}
	runDir := cfg.Hypervisor.RunDir
	if o.RunDir != "" {
		runDir = o.RunDir
	}
	if runDir == "" {
		return nil, errors.New("hypervisor: qemu: no hypervisor.run_dir")
	}
	return &QEMU{cfg: cfg, node: node, binary: bin, runDir: runDir, opts: o,
		log: o.logger().With("driver", "qemu", "node", node)}, nil
}

func (q *QEMU) dir(name string) string { return filepath.Join(q.runDir, name) }

// Accel is the accelerator guests get on this host (ChooseAccel with this
// host's /proc/cpuinfo and /dev/kvm).
func (q *QEMU) Accel() string {
	setting := q.cfg.Hypervisor.Accel
	if setting != configs.AccelAuto && setting != "" {
		return setting
	}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	kvm := false
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		f.Close()
		kvm = true
	}
	return ChooseAccel(setting, cpuinfo, kvm)
}

// Start boots spec's guest. It returns once qemu runs (the guest's kernel
// is then still booting); on failure the error holds the end of qemu's
// standard error.
func (q *QEMU) Start(ctx context.Context, spec GuestSpec) error {
	if err := naming.ValidLabel(spec.Name); err != nil {
		return fmt.Errorf("qemu: start guest: name %w", err)
	}
	dir := q.dir(spec.Name)
	if spec.RunDir == "" {
		spec.RunDir = dir
	}
	if filepath.Clean(spec.RunDir) != dir {
		return fmt.Errorf("qemu: start %s: the spec's run directory %s is not this driver's %s", spec.Name, spec.RunDir, dir)
	}
	if err := checkSocketPaths(dir); err != nil {
		return fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}
	unlock, err := q.lockStart(spec.Name)
	if err != nil {
		return fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}
	defer unlock()
	if st, err := q.Status(ctx, spec.Name); err == nil {
		return fmt.Errorf("qemu: start %s: %w (pid %d, since %s); stop or destroy it first",
			spec.Name, ErrAlreadyRunning, st.PID, st.Started.Format(time.RFC3339))
	} else if !errors.Is(err, ErrNotRunning) {
		return fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}
	hn := q.opts.hostNet()
	if err := CheckBridges(hn, spec); err != nil {
		return fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}
	if err := q.prepare(spec); err != nil {
		return fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}
	// The taps exist before qemu opens them, and go again if it does not
	// end up running the guest.
	if err := setupTaps(hn, spec); err != nil {
		return fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}
	running := false
	defer func() {
		if !running {
			for _, err := range removeRecordedTaps(hn, dir) {
				q.log.Warn("cannot remove a tap after a failed start", "guest", spec.Name, "err", err)
			}
		}
	}()
	// The secrets are read by qemu while it sets up; afterwards the only
	// copies are qemu's memory and the cluster's secrets file.
	defer q.removeSecrets(spec)
	if err := q.startBridge(ctx, spec); err != nil {
		return fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}

	accel := q.Accel()
	args := QEMUArgs(spec, accel, q.opts.Network, q.opts.ExtraArgs)
	argv := append(slices.Clone(q.opts.Prefix), q.binary)
	argv = append(argv, args...)
	stderrPath := filepath.Join(dir, StderrLog)
	stderr, err := os.OpenFile(stderrPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("qemu: start %s: %w", spec.Name, err)
	}
	defer stderr.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.WaitDelay = time.Second
	q.log.Info("starting guest", "guest", spec.Name, "accel", accel, "argv", strings.Join(argv, " "))
	runErr := cmd.Run()
	if runErr != nil {
		// qemu may have daemonized before the context ended; leave
		// nothing behind.
		if pid, ok := q.ownedPID(spec.Name); ok {
			_ = q.kill(spec.Name, pid)
		}
		q.stopBridge(spec.Name)
		return fmt.Errorf("qemu: start %s: %s: %w%s", spec.Name, argv[0], runErr, stderrTail(stderrPath))
	}
	pid, ok := q.ownedPID(spec.Name)
	if !ok {
		q.stopBridge(spec.Name)
		return fmt.Errorf("qemu: start %s: qemu exited with success but no qemu runs with pid file %s%s",
			spec.Name, filepath.Join(dir, PIDFile), stderrTail(stderrPath))
	}
	qctx, cancel := context.WithTimeout(ctx, qmpWait)
	defer cancel()
	st, err := q.queryStatus(qctx, spec.Name)
	if err != nil {
		_ = q.kill(spec.Name, pid)
		q.stopBridge(spec.Name)
		return fmt.Errorf("qemu: start %s: qemu (pid %d) does not answer on QMP: %w%s", spec.Name, pid, err, stderrTail(stderrPath))
	}
	running = true
	q.log.Info("guest started", "guest", spec.Name, "pid", pid, "state", st)
	return nil
}

// lockStart serialises starts of one guest on this host. Without it, two
// starts could both find the guest not running, and the second would
// remove the first's pid file before its qemu took the lock on it: two
// runners of one guest. The lock is a file beside the guest's directory,
// which Destroy removes.
func (q *QEMU) lockStart(name string) (func(), error) {
	if err := os.MkdirAll(q.runDir, 0o700); err != nil {
		return nil, err
	}
	p := filepath.Join(q.runDir, "."+name+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another start of this guest is in progress (%s is locked)", p)
		}
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

// prepare makes the guest's run directory ready: stale files of a dead
// previous run removed (the previous console kept as console.log.1), the
// host info and the CHAP secrets written.
func (q *QEMU) prepare(spec GuestSpec) error {
	dir := spec.RunDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []string{QMPSocket, ChannelSocket, ConsoleSocket, PIDFile, HostInfoFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing a stale file: %w", err)
		}
	}
	if err := os.Rename(filepath.Join(dir, ConsoleLog), filepath.Join(dir, ConsoleLog+".1")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keeping the previous console: %w", err)
	}
	if spec.HostInfo != nil {
		if err := os.WriteFile(filepath.Join(dir, HostInfoFile), spec.HostInfo, 0o600); err != nil {
			return fmt.Errorf("writing the host info: %w", err)
		}
	}
	for _, s := range spec.Secrets() {
		if filepath.Dir(s.File) != dir {
			return fmt.Errorf("secret %s: file %s is outside the run directory %s", s.ID, s.File, dir)
		}
		_ = os.Remove(s.File)
		f, err := os.OpenFile(s.File, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("writing secret %s: %w", s.ID, err)
		}
		_, err = f.Write(s.Data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing secret %s: %w", s.ID, err)
		}
	}
	return nil
}

func (q *QEMU) removeSecrets(spec GuestSpec) {
	for _, s := range spec.Secrets() {
		if err := os.Remove(s.File); err != nil && !errors.Is(err, fs.ErrNotExist) {
			q.log.Warn("cannot remove a CHAP secret file", "file", s.File, "err", err)
		}
	}
}

// stderrTail is the end of qemu's standard error, for an error message.
func stderrTail(path string) string { return fileTail(path, 20, "qemu's stderr") }

// fileTail is the last n lines of a log file as "; <what>:\n<lines>", or
// "" when the file is missing or blank, to end an error message with.
func fileTail(path string, n int, what string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "; " + what + ":\n" + strings.Join(lines, "\n")
}

// Stop presses the power button and waits up to timeout for the guest to
// power off; a guest that does not is destroyed.
func (q *QEMU) Stop(ctx context.Context, name string, timeout time.Duration) error {
	pid, ok := q.ownedPID(name)
	if !ok {
		q.cleanup(name)
		return fmt.Errorf("qemu: stop %s: %w", name, ErrNotRunning)
	}
	qctx, cancel := context.WithTimeout(ctx, qmpWait)
	err := q.execute(qctx, name, "system_powerdown", nil, nil)
	cancel()
	if err != nil {
		q.log.Warn("power button not pressed; destroying", "guest", name, "err", err)
		return q.Destroy(ctx, name)
	}
	q.log.Info("power button pressed", "guest", name, "pid", pid, "timeout", timeout)
	if waitExit(ctx, pid, timeout) {
		q.cleanup(name)
		q.log.Info("guest powered off", "guest", name)
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("qemu: stop %s: %w", name, context.Cause(ctx))
	}
	q.log.Warn("guest did not power off in time; destroying", "guest", name, "timeout", timeout)
	return q.Destroy(ctx, name)
}

// Destroy pulls the plug: SIGKILL to the guest's qemu (after checking the
// pid is still this guest's qemu), then the run directory is cleaned. No
// QMP quit first: qemu drains in-flight I/O before it quits, and a guest
// with requests pending on a dead remote leg would keep running for the
// whole I/O timeout — a self-fence must not wait for that.
func (q *QEMU) Destroy(ctx context.Context, name string) error {
	pid, ok := q.ownedPID(name)
	if !ok {
		q.cleanup(name)
		return fmt.Errorf("qemu: destroy %s: %w", name, ErrNotRunning)
	}
	if err := q.kill(name, pid); err != nil {
		return fmt.Errorf("qemu: destroy %s: %w", name, err)
	}
	q.cleanup(name)
	q.log.Info("guest destroyed", "guest", name, "pid", pid)
	return nil
}

// kill sends SIGKILL to pid if it is still name's qemu, and waits for it.
func (q *QEMU) kill(name string, pid int) error {
	if !q.owns(name, pid) {
		return nil // gone, or the pid was reused: not ours to kill
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill qemu pid %d: %w", pid, err)
	}
	if !waitExit(context.Background(), pid, killWait) {
		return fmt.Errorf("qemu pid %d still alive %s after SIGKILL", pid, killWait)
	}
	return nil
}

// cleanup ends the guest's leg bridge and removes what its run directory
// holds for a running guest (sockets, pid files, host info) once its qemu
// is gone. The logs (console, qemu's stderr, the bridge's) stay for the
// operator; the next start keeps one previous console.
func (q *QEMU) cleanup(name string) {
	if _, ok := q.ownedPID(name); ok {
		return
	}
	q.stopBridge(name)
	dir := q.dir(name)
	for _, err := range removeRecordedTaps(q.opts.hostNet(), dir) {
		q.log.Warn("cannot remove a tap", "guest", name, "err", err)
	}
	for _, f := range []string{QMPSocket, ChannelSocket, ConsoleSocket, PIDFile, HostInfoFile, BridgeDir} {
		if err := os.RemoveAll(filepath.Join(dir, f)); err != nil {
			q.log.Warn("cannot clean the run directory", "file", filepath.Join(dir, f), "err", err)
		}
	}
}

// reapTaps removes the taps of a guest whose qemu ended by itself (the
// guest powered off): nothing else would until its next start. A start
// in progress holds the start lock, and its taps are left alone.
func (q *QEMU) reapTaps(name string) {
	if _, err := os.Stat(filepath.Join(q.dir(name), TapsFile)); err != nil {
		return
	}
	unlock, err := q.lockStart(name)
	if err != nil {
		return
	}
	defer unlock()
	if _, ok := q.ownedPID(name); ok {
		return
	}
	for _, err := range removeRecordedTaps(q.opts.hostNet(), q.dir(name)) {
		q.log.Warn("cannot remove the tap of a guest that ended", "guest", name, "err", err)
	}
}

// List returns the guests whose qemu runs, from the run directory.
func (q *QEMU) List(ctx context.Context) ([]Status, error) {
	ents, err := os.ReadDir(q.runDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("qemu: list: %w", err)
	}
	var out []Status
	for _, e := range ents {
		if !e.IsDir() || naming.ValidLabel(e.Name()) != nil {
			continue
		}
		st, err := q.Status(ctx, e.Name())
		if errors.Is(err, ErrNotRunning) {
			q.reapTaps(e.Name())
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("qemu: list: %w", err)
		}
		out = append(out, st)
	}
	return out, nil
}

// Status reads a guest's pid file and asks its qemu for the run state.
// A qemu that is alive but does not answer QMP is StateUnknown, not an
// error: it still runs the guest.
func (q *QEMU) Status(ctx context.Context, name string) (Status, error) {
	if err := naming.ValidLabel(name); err != nil {
		return Status{}, fmt.Errorf("qemu: status: guest name %w", err)
	}
	pid, ok := q.ownedPID(name)
	if !ok {
		return Status{}, fmt.Errorf("qemu: %s: %w", name, ErrNotRunning)
	}
	dir := q.dir(name)
	st := Status{Name: name, PID: pid, State: StateUnknown,
		Console: filepath.Join(dir, ConsoleLog), Channel: filepath.Join(dir, ChannelSocket),
		ConsoleSocket: filepath.Join(dir, ConsoleSocket)}
	if fi, err := os.Stat(filepath.Join(dir, PIDFile)); err == nil {
		st.Started = fi.ModTime()
	}
	qctx, cancel := context.WithTimeout(ctx, qmpWait)
	defer cancel()
	if s, err := q.queryStatus(qctx, name); err == nil {
		st.State = s
	} else {
		q.log.Debug("qmp query-status failed", "guest", name, "err", err)
	}
	return st, nil
}

func (q *QEMU) queryStatus(ctx context.Context, name string) (State, error) {
	var r struct {
		Status string `json:"status"`
	}
	if err := q.execute(ctx, name, "query-status", nil, &r); err != nil {
		return "", err
	}
	switch r.Status {
	case "guest-panicked":
		return StateCrashed, nil
	case "":
		return StateUnknown, nil
	}
	return State(r.Status), nil
}

// QMP connects to a running guest's QMP socket. The caller closes it
// soon: qemu serves one QMP client at a time.
func (q *QEMU) QMP(ctx context.Context, name string) (*QMP, error) {
	return DialQMP(ctx, filepath.Join(q.dir(name), QMPSocket))
}

// execute runs one QMP command on a fresh connection. A quit's reply may
// be lost as qemu closes the socket; that is success.
func (q *QEMU) execute(ctx context.Context, name, cmd string, args, out any) error {
	c, err := q.QMP(ctx, name)
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.Execute(ctx, cmd, args, out)
	for _, ev := range c.Events() {
		q.log.Debug("qmp event", "guest", name, "event", ev.Event, "data", string(ev.Data))
	}
	return err
}

// Channel connects to the host end of a running guest's guestraid
// channel.
func (q *QEMU) Channel(ctx context.Context, name string) (net.Conn, error) {
	if _, err := q.Status(ctx, name); err != nil {
		return nil, fmt.Errorf("qemu: channel: %w", err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(q.dir(name), ChannelSocket))
	if err != nil {
		return nil, fmt.Errorf("qemu: channel of %s: %w", name, err)
	}
	return c, nil
}

// ownedPID reads name's pid file and returns the pid if that process is
// alive and is the qemu that wrote it.
func (q *QEMU) ownedPID(name string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(q.dir(name), PIDFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, q.owns(name, pid)
}

// owns reports whether pid is alive and is a qemu started with name's pid
// file: a pid file can outlive its qemu and the pid be reused, and
// killing that process would be killing a stranger.
func (q *QEMU) owns(name string, pid int) bool {
	if !alive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return cmdlineHasPIDFile(b, filepath.Join(q.dir(name), PIDFile))
}

// cmdlineHasPIDFile reports whether a /proc/<pid>/cmdline is a qemu's
// with "-pidfile pidfile".
func cmdlineHasPIDFile(cmdline []byte, pidfile string) bool {
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "qemu") {
		return false
	}
	for i := 1; i+1 < len(args); i++ {
		if args[i] == "-pidfile" && args[i+1] == pidfile {
			return true
		}
	}
	return false
}

// alive reports whether pid exists and is not a zombie (a daemonized qemu
// is re-parented to init, and where init does not reap, a dead qemu stays
// a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and
	// may itself hold spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] != 'Z' && b[i+2] != 'X'
}

// waitExit polls until pid is gone, timeout passes or ctx ends; it
// reports whether pid is gone.
func waitExit(ctx context.Context, pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !alive(pid) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
