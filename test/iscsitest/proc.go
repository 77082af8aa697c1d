package iscsitest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Proc is a child process this package started. It is stopped by its PID
// only, and it dies with this process: PR_SET_PDEATHSIG is SIGKILL and the
// goroutine that forked it keeps its OS thread until the child is reaped,
// because Linux sends the death signal when the forking *thread* exits,
// not the process.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  io.Writer // where stdout and stderr go

	done    chan struct{} // closed once the child is reaped
	waitErr error         // set before done is closed
	stopMu  sync.Mutex    // serialises Stop
}

// procSpec describes a child to start.
type procSpec struct {
	name string   // for messages, e.g. "tgtd"
	argv []string // argv[0] is the program path
	env  []string // added to this process's environment
	dir  string   // working directory; "" for the current one
	out  io.Writer
	// stdin is the child's standard input; nil for /dev/null.
	stdin *os.File
}

// startProc starts a child in its own process group (so a terminal's ^C
// reaches this process, which then stops the child in order) that dies
// with this process.
func startProc(s procSpec) (*Proc, error) {
	if len(s.argv) == 0 {
		return nil, errors.New("start: empty command line")
	}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Dir = s.dir
	if s.stdin != nil {
		cmd.Stdin = s.stdin // an *os.File is passed as is: no copying goroutine
	}
	cmd.Stdout = s.out
	cmd.Stderr = s.out
	// Wait returns this long after the child exits even if something still
	// holds its output pipe, so a stray grandchild cannot hang a caller.
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	p := &Proc{name: s.name, cmd: cmd, out: s.out, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", s.name, s.argv[0], err)
	}
	return p, nil
}

// PID is the child's process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// WaitErr is the child's exit error (nil for status 0); only meaningful
// once Done is closed.
func (p *Proc) WaitErr() error { return p.waitErr }

// Stop sends SIGTERM to the child's PID, waits up to grace, then sends
// SIGKILL and waits for it to be reaped. A zero grace kills at once. It is
// idempotent and safe to call after the child exited on its own.
func (p *Proc) Stop(grace time.Duration) error {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.Exited() {
		return nil
	}
	if grace > 0 {
		// Only this child's PID: never its group or anything by name.
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return nil
		case <-time.After(grace):
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s pid %d: %w", p.name, p.PID(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s pid %d did not exit 10s after SIGKILL", p.name, p.PID())
	}
}

// PeakRSS is the child's peak resident set in bytes: VmHWM from
// /proc/<pid>/status while it runs, the kernel's ru_maxrss once reaped.
func (p *Proc) PeakRSS() (int64, error) {
	if p.Exited() {
		if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			return ru.Maxrss * 1024, nil // ru_maxrss is in KiB on Linux
		}
		return 0, fmt.Errorf("%s pid %d: no rusage after exit", p.name, p.PID())
	}
	rss, err := vmHWM(p.PID())
	if err != nil && p.Exited() { // it exited between the two checks
		return p.PeakRSS()
	}
	return rss, err
}

// tail returns the last n bytes of s, for error messages.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
