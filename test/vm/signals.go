package vm

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// While an image is built or a VM runs, SIGINT and SIGTERM (a ^C during
// go test) first run the registered clean-ups (kill qemu by its PID,
// remove temp files), then kill the process with the same signal, so go
// test still reports the interrupt. Outside of runs the signals are not
// caught at all, so other packages' handlers (test/iscsitest.Cleanup) are
// not raced. qemu also dies with this process in any case (PDEATHSIG).
var sigs struct {
	mu   sync.Mutex
	fns  map[int]func()
	next int
	ch   chan os.Signal
}

// guardSignals registers fn until the returned release is called.
func guardSignals(fn func()) (release func()) {
	sigs.mu.Lock()
	defer sigs.mu.Unlock()
	if sigs.ch == nil {
		sigs.ch = make(chan os.Signal, 1)
		go watchSignals(sigs.ch)
	}
	if len(sigs.fns) == 0 {
		sigs.fns = map[int]func(){}
		for _, s := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
			// A signal ignored at start (nohup, a background job) stays so.
			if !signal.Ignored(s) {
				signal.Notify(sigs.ch, s)
			}
		}
	}
	id := sigs.next
	sigs.next++
	sigs.fns[id] = fn
	var once sync.Once
	return func() {
		once.Do(func() {
			sigs.mu.Lock()
			defer sigs.mu.Unlock()
			delete(sigs.fns, id)
			if len(sigs.fns) == 0 {
				signal.Stop(sigs.ch)
			}
		})
	}
}

func watchSignals(ch chan os.Signal) {
	for sig := range ch {
		sigs.mu.Lock()
		fns := make([]func(), 0, len(sigs.fns))
		for _, fn := range sigs.fns {
			fns = append(fns, fn)
		}
		sigs.mu.Unlock()
		// Even with nothing registered (the signal came just as the last
		// run ended) the process dies of it: a ^C is never swallowed.
		for _, fn := range fns {
			fn()
		}
		signal.Reset(sig)
		if s, ok := sig.(syscall.Signal); ok {
			_ = syscall.Kill(os.Getpid(), s)
			time.Sleep(time.Second)
			os.Exit(128 + int(s))
		}
		os.Exit(1)
	}
}
