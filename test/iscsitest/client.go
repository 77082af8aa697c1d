package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// clientSpec is one bounded run of a client tool.
type clientSpec struct {
	name    string
	argv    []string
	env     []string
	dir     string
	timeout time.Duration // the run is killed and reported stalled after this
}

// clientResult is what a client run left.
type clientResult struct {
	output   string // stdout and stderr, interleaved as written
	exitCode int    // -1 if killed
	stalled  bool   // killed at the deadline
	elapsed  time.Duration
}

// runClient runs a client to completion or to its deadline. A client past
// its deadline is killed by PID and reported stalled (not an error: a
// stall is a finding about the target). Cancelling ctx kills it too and
// returns ctx's error. The error is for failures to run at all.
func runClient(ctx context.Context, s clientSpec) (clientResult, error) {
	out := &syncBuffer{}
	start := time.Now()
	p, err := startProc(procSpec{name: s.name, argv: s.argv, env: s.env, dir: s.dir, out: out})
	if err != nil {
		return clientResult{}, err
	}
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	var res clientResult
	select {
	case <-p.Done():
	case <-timer.C:
		res.stalled = true
	case <-ctx.Done():
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
