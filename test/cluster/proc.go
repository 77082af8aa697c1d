package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a process running in a host: one the cluster started (a child of
// this process) or one it was told to track (started by someone else, e.g.
// a qemu that daemonized). It is signalled by PID only, and only while the
// PID still names the same process: children through their pidfd (os.Process),
// tracked ones after comparing the start time in /proc/<pid>/stat with the
// one read when tracking began, so a recycled PID is never hit.
type Proc struct {
	// Name says what it is ("targetd", "qemu-demo"); Log is the file its
	// stdout and stderr go to ("" for tracked processes).
	Name string
	PID  int
	Log  string

	host  *Host
	start uint64   // starttime of /proc/<pid>/stat, in clock ticks since boot
	argv  []string // as run inside the host (without the ip netns exec prefix)

	cmd     *exec.Cmd     // nil when tracked
	done    chan struct{} // closed once a child is reaped; nil when tracked
	waitErr error         // set before done is closed
	stopMu  sync.Mutex
}

// Host is the host the process runs in.
func (p *Proc) Host() *Host { return p.host }

// procStart reads the start time of pid from /proc/<pid>/stat, and whether
// the process is a zombie (exited, not yet reaped: as good as gone).
func procStart(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, err
	}
	// comm (field 2) may hold spaces and parentheses; what follows the
	// last ')' is fixed: state is field 3, starttime field 22.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("/proc/%d/stat: no ')' in %q", pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false, fmt.Errorf("/proc/%d/stat: %d fields after comm", pid, len(f))
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("/proc/%d/stat: starttime %q: %w", pid, f[19], err)
	}
	return start, f[0] == "Z", nil
}

// sameProcess reports whether pid is still the live process that had start
// time start.
func sameProcess(pid int, start uint64) bool {
	s, zombie, err := procStart(pid)
	return err == nil && !zombie && s == start
}

// spawnSpec is a process to start.
type spawnSpec struct {
	argv   []string // full command line, prefix included
	log    *os.File // stdout and stderr
	detach bool     // survive this process: own session, no death signal
}

// spawn starts a child. Unless detached it dies with this process: the
// death signal is SIGKILL, and the goroutine that forks keeps its OS thread
// locked until the child is reaped, because Linux sends PR_SET_PDEATHSIG
// when the forking *thread* exits, not the process. It gets its own process
// group either way, so a terminal's ^C reaches only this process, which
// then tears down in order.
func spawn(s spawnSpec, p *Proc) error {
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	// An *os.File is handed to the child as is: no copying goroutine that
	// would end with this process.
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if s.detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	started := make(chan error, 1)
	go func() {
		if !s.detach {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(s.argv, " "), err)
	}
	p.PID = cmd.Process.Pid
	return nil
}

// Exited reports whether the process is gone (exited, or its PID now names
// another process).
func (p *Proc) Exited() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	return !sameProcess(p.PID, p.start)
}

// Done is closed once a child the cluster started has exited and been
// reaped; nil for tracked processes.
func (p *Proc) Done() <-chan struct{} { return p.done }

// WaitErr is a child's exit error, once Done is closed.
func (p *Proc) WaitErr() error {
	if p.done == nil {
		return nil
	}
	select {
	case <-p.done:
		return p.waitErr
	default:
		return nil
	}
}

// Signal sends sig to the process if it is still the one started or
// tracked; a process that is gone is not an error.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.cmd != nil {
		err := p.cmd.Process.Signal(sig)
		if err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signal %v to %s pid %d: %w", sig, p.Name, p.PID, err)
		}
		return nil
	}
	if !sameProcess(p.PID, p.start) {
		return nil
	}
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to %s pid %d: %w", sig, p.Name, p.PID, err)
	}
	return nil
}

// Wait waits up to timeout for the process to be gone.
func (p *Proc) Wait(timeout time.Duration) error {
	if p.done != nil {
		select {
		case <-p.done:
			return nil
		case <-time.After(timeout):
			return fmt.Errorf("%s pid %d still runs after %v", p.Name, p.PID, timeout)
		}
	}
	deadline := time.Now().Add(timeout)
	for !p.Exited() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s pid %d still runs after %v", p.Name, p.PID, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// Stop ends the process: SIGCONT (a frozen process would sit on SIGTERM),
// SIGTERM, up to grace to exit, then SIGKILL. A zero grace kills at once.
// Safe to call again and after the process exited on its own.
func (p *Proc) Stop(grace time.Duration) error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.Exited() {
		return nil
	}
	if grace > 0 {
		_ = p.Signal(syscall.SIGCONT)
		if err := p.Signal(syscall.SIGTERM); err != nil {
			return err
		}
		if p.Wait(grace) == nil {
			return nil
		}
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	return p.Wait(10 * time.Second)
}

// LogTail is the last n bytes of the process's log, for error messages.
func (p *Proc) LogTail(n int) string {
	if p.Log == "" {
		return ""
	}
	return fileTail(p.Log, n)
}

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if len(b) > n {
		return "…" + string(b[len(b)-n:])
	}
	return string(b)
}

// procRecord is a process as the state file keeps it.
type procRecord struct {
	Name  string   `json:"name"`
	PID   int      `json:"pid"`
	Start uint64   `json:"start"`
	Argv  []string `json:"argv,omitempty"`
	Log   string   `json:"log,omitempty"`
}

func (p *Proc) record() procRecord {
	return procRecord{Name: p.Name, PID: p.PID, Start: p.start, Argv: p.argv, Log: p.Log}
}
