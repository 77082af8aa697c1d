package iscsitest

import (
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Cleanup runs stop functions in reverse order of registration, once:
// when Close is called, or when this process gets SIGINT or SIGTERM. In the
// signal case it then re-raises the signal with the default action, so the
// process still dies of it (and `go test` still reports the interrupt), but
// only after its daemons are stopped and its temp files are gone.
//
// Without it a ^C during `go test` kills the test binary before any
// t.Cleanup runs: the children still die (PR_SET_PDEATHSIG) but their temp
// directories stay. Create one per test or per program, not several at
// once: the first to finish its signal handling ends the process.
type Cleanup struct {
	log *slog.Logger

	mu     sync.Mutex
	fns    []namedFn
	closed bool

	sigs chan os.Signal
	quit chan struct{}
}

type namedFn struct {
	name string
	fn   func() error
}

// NewCleanup starts watching for SIGINT and SIGTERM. Close it.
func NewCleanup(log *slog.Logger) *Cleanup {
	if log == nil {
		log = slog.Default()
	}
	c := &Cleanup{log: log, sigs: make(chan os.Signal, 1), quit: make(chan struct{})}
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		// A signal ignored when the process started (SIGINT in a shell's
		// background job, under nohup) keeps being ignored: catching it
		// would make the process die of something its parent had asked
		// it to survive.
		if !signal.Ignored(sig) {
			signal.Notify(c.sigs, sig)
		}
	}
	go c.watch()
	return c
}

// Add registers fn, to run before every function added earlier.
func (c *Cleanup) Add(name string, fn func() error) {
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.fns = append(c.fns, namedFn{name, fn})
	}
	c.mu.Unlock()
	if closed {
		// Too late to defer: run it now rather than leak what it cleans.
		_ = c.run(namedFn{name, fn})
	}
}

// AddTarget registers t.Stop.
func (c *Cleanup) AddTarget(t Target) { c.Add("stop "+t.Name(), t.Stop) }

// Close runs every registered function, newest first, and stops watching
// for signals. It returns all their errors joined.
func (c *Cleanup) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()

	signal.Stop(c.sigs)
	close(c.quit)
	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		errs = append(errs, c.run(fns[i]))
	}
	return errors.Join(errs...)
}

func (c *Cleanup) run(f namedFn) error {
	err := f.fn()
	if err != nil {
		c.log.Warn("cleanup failed", "step", f.name, "err", err)
	}
	return err
}

func (c *Cleanup) watch() {
	select {
	case <-c.quit:
	case sig := <-c.sigs:
		c.log.Warn("signal: stopping what this run started", "signal", sig)
		_ = c.Close()
		// Die of the signal as if nobody had caught it; should the default
		// action not end the process, exit with the shell's code for it.
		signal.Reset(sig)
		if s, ok := sig.(syscall.Signal); ok {
			_ = syscall.Kill(os.Getpid(), s)
			time.Sleep(time.Second)
			os.Exit(128 + int(s))
		}
		os.Exit(1)
	}
}
