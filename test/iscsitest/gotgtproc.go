package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"
)

// The gotgt helper runs StartGotgt in a child process. It exists because
// gotgt v0.2.2 has data races (its connection reader and writer goroutines
// share state without locks): inside a `go test -race` binary the race
// detector reports them and fails whichever test is running. A child built
// from the same test binary runs the very same embedded gotgt, and its
// race reports stay in its own log. It also gives gotgt a peak RSS of its
// own.
//
// The protocol: the parent sets GotgtHelperEnv to the backing file and
// runs the helper's argv; the helper serves gotgt, prints one line
// "iscsitest-gotgt-ready <portal> <iqn> <lun>" on stdout, and stops gotgt
// and exits when its stdin reaches EOF (the parent closed it, or died) or
// on SIGTERM.
const (
	// GotgtHelperEnv holds the backing file's path in the helper.
	GotgtHelperEnv = "ISCSITEST_GOTGT_HELPER_FILE"
	// GotgtHelperIQNEnv optionally holds the target name.
	GotgtHelperIQNEnv = "ISCSITEST_GOTGT_HELPER_IQN"
)

// IsGotgtHelper reports whether this process was started as a gotgt
// helper (GotgtHelperEnv is set).
func IsGotgtHelper() bool { return os.Getenv(GotgtHelperEnv) != "" }

// ServeGotgtHelper is the helper's body: call it from the helper entry
// point (a test function or a main) when IsGotgtHelper. It returns when
// told to stop, with gotgt stopped.
func ServeGotgtHelper(ctx context.Context, log *slog.Logger) error {
	file := os.Getenv(GotgtHelperEnv)
	if file == "" {
		return fmt.Errorf("gotgt helper: %s is not set", GotgtHelperEnv)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	g, err := StartGotgt(ctx, file, GotgtOptions{IQN: os.Getenv(GotgtHelperIQNEnv), Logger: log})
	if err != nil {
		return err
	}
	fmt.Printf("iscsitest-gotgt-ready %s %s %d\n", g.Portal(), g.IQN(), g.LUN())
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()
	select {
	case <-eof:
	case <-ctx.Done():
	}
	return g.Stop()
}

// GotgtProcess is gotgt running in a helper child process.
type GotgtProcess struct {
	proc     *Proc
	stdin    *os.File // the parent's end of the child's stdin
	out      *syncbuf.Buffer
	portal   string
	iqn      string
	lun      int
	stopOnce onceErr
}

var gotgtReadyRE = regexp.MustCompile(`(?m)^iscsitest-gotgt-ready (\S+) (\S+) (\d+)$`)

// StartGotgtProcess starts argv as a gotgt helper serving file (see
// ServeGotgtHelper) and waits for it to be ready. For a test binary argv
// is {os.Args[0], "-test.run=^TestTheHelper$"}; for a program, its own
// executable with whatever makes it call ServeGotgtHelper.
func StartGotgtProcess(ctx context.Context, argv []string, file, iqn string, log *slog.Logger) (*GotgtProcess, error) {
	if log == nil {
		log = slog.Default()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("gotgt helper: stdin pipe: %w", err)
	}
	g := &GotgtProcess{stdin: w, out: &syncbuf.Buffer{}}
	env := []string{GotgtHelperEnv + "=" + file}
	if iqn != "" {
		env = append(env, GotgtHelperIQNEnv+"="+iqn)
	}
	g.proc, err = startProc(procSpec{name: "gotgt-helper", argv: argv, env: env, out: g.out, stdin: r})
	_ = r.Close() // the child has its copy
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("gotgt helper: %w", err)
	}
	if err := g.waitReady(ctx, 30*time.Second); err != nil {
		return nil, errors.Join(fmt.Errorf("gotgt helper pid %d: %w; its output: %s", g.proc.PID(), err, tail(g.out.String(), 1500)), g.Stop())
	}
	log.Info("gotgt helper started", "pid", g.proc.PID(), "portal", g.portal, "iqn", g.iqn)
	return g, nil
}

func (g *GotgtProcess) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		if m := gotgtReadyRE.FindStringSubmatch(g.out.String()); m != nil {
			g.portal, g.iqn = m[1], m[2]
			g.lun, _ = strconv.Atoi(m[3])
			return checkLoopback(g.portal)
		}
		select {
		case <-g.proc.Done():
			return fmt.Errorf("exited before ready: %v", g.proc.WaitErr())
		case <-deadline:
			return fmt.Errorf("not ready after %v", timeout)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Name implements Target.
func (g *GotgtProcess) Name() string { return "gotgt" }

// Portal implements Target.
func (g *GotgtProcess) Portal() string { return g.portal }

// IQN implements Target.
func (g *GotgtProcess) IQN() string { return g.iqn }

// LUN implements Target.
func (g *GotgtProcess) LUN() int { return g.lun }

// URL implements Target.
func (g *GotgtProcess) URL() string { return LUNURL(g.portal, g.iqn, g.lun) }

// PID implements Target: the helper's.
func (g *GotgtProcess) PID() int { return g.proc.PID() }

// PeakRSS implements Target: the helper's VmHWM (gotgt plus the helper
// binary's own runtime).
func (g *GotgtProcess) PeakRSS() (int64, error) { return g.proc.PeakRSS() }

// Log is the helper's output so far (gotgt's log, race reports).
func (g *GotgtProcess) Log() string { return g.out.String() }

// Stop closes the helper's stdin so it stops gotgt and exits, and kills it
// by PID if it has not after 5s.
func (g *GotgtProcess) Stop() error {
	return g.stopOnce.do(func() error {
		_ = g.stdin.Close()
		select {
		case <-g.proc.Done():
			return nil
		case <-time.After(5 * time.Second):
		}
		return g.proc.Stop(0)
	})
}
