package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"
)

// clientSpec is one bounded run of a client tool.
type clientSpec struct {
	name    string
	argv    []string
	env     []string
	dir     string
	timeout time.Duration // the run is killed and reported stalled after this
	// idle, if set, also reports a stall when the client has read less
	// than idleBytes (through any read(2): socket replies included) for
	// this long. That tells a stalled target from a slow one, which a
	// plain deadline cannot for a tool that prints nothing until it is
	// done (qemu-img bench).
	idle time.Duration
}

// clientResult is what a client run left.
type clientResult struct {
	output   string // stdout and stderr, interleaved as written
	exitCode int    // -1 if killed
	stalled  bool   // killed at the deadline
	elapsed  time.Duration
	idleFor  time.Duration // how long it had read nothing when declared stalled by idle
}

// idleBytes is what a client must read per idle period to count as making
// progress. It is above the trickle a stalled session still gets: QEMU's
// iSCSI driver sends a NOP-Out every 5s and reads a 48-byte NOP-In back,
// while any real I/O returns at least a 48-byte response per command.
const idleBytes = 1024

// runClient runs a client to completion or to its deadline. A client past
// its deadline is killed by PID and reported stalled (not an error: a
// stall is a finding about the target). Cancelling ctx kills it too and
// returns ctx's error. The error is for failures to run at all.
func runClient(ctx context.Context, s clientSpec) (clientResult, error) {
	out := &syncbuf.Buffer{}
	start := time.Now()
	p, err := startProc(procSpec{name: s.name, argv: s.argv, env: s.env, dir: s.dir, out: out})
	if err != nil {
		return clientResult{}, err
	}
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	var tick <-chan time.Time
	if s.idle > 0 {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		tick = t.C
	}
	var res clientResult
	mark, markTime := int64(-1), time.Now() // rchar when progress was last seen
wait:
	for {
		select {
		case <-p.Done():
			break wait
		case <-timer.C:
			res.stalled = true
			break wait
		case <-ctx.Done():
			break wait
		case now := <-tick:
			n, err := readChars(p.PID())
			if err != nil {
				continue // exiting: Done comes next
			}
			if mark < 0 || n-mark >= idleBytes {
				mark, markTime = n, now
			} else if now.Sub(markTime) >= s.idle {
				res.stalled, res.idleFor = true, now.Sub(markTime)
				break wait
			}
		}
	}
	// A client has nothing to flush: give it a moment to exit on SIGTERM
	// and then kill it.
	stopErr := p.Stop(500 * time.Millisecond)
	res.elapsed = time.Since(start)
	res.output = out.String()
	res.exitCode = exitCode(p.WaitErr())
	if stopErr != nil {
		return res, stopErr
	}
	if !res.stalled && ctx.Err() != nil {
		return res, fmt.Errorf("%s: %w", s.name, ctx.Err())
	}
	return res, nil
}

// readChars is rchar from /proc/<pid>/io: the bytes the process has read
// through read(2) and friends, sockets included.
func readChars(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/io: no rchar", pid)
}

// exitCode maps a Wait error to the exit status, -1 for death by signal.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// checkURL refuses anything but an iscsi:// URL to a loopback portal. It
// parses by hand: libiscsi's "user%password@" is not valid URL escaping.
func checkURL(u string) error {
	rest, ok := strings.CutPrefix(u, "iscsi://")
	if !ok {
		return fmt.Errorf("iscsi url %q: scheme must be iscsi://", u)
	}
	rest, _, _ = strings.Cut(rest, "?")
	host, path, ok := strings.Cut(rest, "/")
	if !ok {
		return fmt.Errorf("iscsi url %q: no /<iqn>/<lun>", u)
	}
	if i := strings.LastIndex(host, "@"); i >= 0 {
		host = host[i+1:]
	}
	if err := checkLoopback(host); err != nil {
		return err
	}
	if parts := strings.Split(strings.Trim(path, "/"), "/"); len(parts) != 2 {
		return fmt.Errorf("iscsi url %q: path must be /<iqn>/<lun>", u)
	}
	return nil
}
