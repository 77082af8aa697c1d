package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// PerfOptions configures RunPerf.
type PerfOptions struct {
	// BlocksPerIO is iscsi-perf's -b: logical blocks per READ16 (8 blocks
	// of 512 bytes = 4 KiB).
	BlocksPerIO int
	// QueueDepth is -m, the commands kept in flight (iscsi-perf's default
	// is 32).
	QueueDepth int
	// Random reads random LBAs (-r) instead of sequential ones.
	Random bool
	// Duration is -t, rounded up to whole seconds (at least 1).
	Duration time.Duration
	// Grace is how long past Duration iscsi-perf may take to log in and
	// drain before it is declared stalled and killed (10s if zero).
	Grace time.Duration
	// Idle declares a stall as soon as iscsi-perf has read (next to)
	// nothing from the target for this long (5s if zero, negative to rely on the
	// deadline alone): a stalled run ends early, a slow one is left alone.
	Idle time.Duration
	// Initiator overrides -i (iscsi-perf's default is
	// iqn.2010-11.libiscsi:iscsi-perf).
	Initiator string
	// Logger receives progress; slog.Default() if nil.
	Logger *slog.Logger
}

// PerfResult is one iscsi-perf run. iscsi-perf only reads (READ16).
type PerfResult struct {
	IOPS       float64 // the run's average as iscsi-perf printed it
	BytesPerIO int64   // from its "FIXED transfer size" line
	Stalled    bool    // killed: read nothing for Idle, or past Duration+Grace
	// IdleFor is how long it had read nothing when killed for it.
	IdleFor time.Duration
	// PartialIOPS is the last average printed before a stall (0 if none).
	PartialIOPS float64
	Elapsed     time.Duration
	Output      string
}

// MiBps is the throughput in MiB/s.
func (r PerfResult) MiBps() float64 { return r.IOPS * float64(r.BytesPerIO) / (1 << 20) }

// RunPerf runs libiscsi's iscsi-perf against url for o.Duration and parses
// its average. iscsi-perf never exits if a command it sent is never
// answered (gotgt does this, see the research note), so the run has a
// deadline; a run killed there is Stalled, with no error.
func RunPerf(ctx context.Context, url string, o PerfOptions) (PerfResult, error) {
	bin, err := Tool("iscsi-perf")
	if err != nil {
		return PerfResult{}, err
	}
	if err := checkURL(url); err != nil {
		return PerfResult{}, err
	}
	if o.BlocksPerIO <= 0 {
		return PerfResult{}, errors.New("iscsi-perf: BlocksPerIO must be positive")
	}
	if o.QueueDepth <= 0 {
		o.QueueDepth = 32
	}
	secs := int((o.Duration + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	if o.Grace == 0 {
		o.Grace = 10 * time.Second
	}
	if o.Idle == 0 {
		o.Idle = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	argv := []string{bin, "-t", strconv.Itoa(secs), "-m", strconv.Itoa(o.QueueDepth), "-b", strconv.Itoa(o.BlocksPerIO)}
	if o.Random {
		argv = append(argv, "-r")
	}
	if o.Initiator != "" {
		argv = append(argv, "-i", o.Initiator)
	}
	argv = append(argv, url)

	o.Logger.Info("iscsi-perf", "url", url, "blocks", o.BlocksPerIO, "qd", o.QueueDepth, "random", o.Random, "seconds", secs)
	res, err := runClient(ctx, clientSpec{name: "iscsi-perf", argv: argv,
		timeout: time.Duration(secs)*time.Second + o.Grace, idle: max(o.Idle, 0)})
	if err != nil {
		return PerfResult{Output: res.output}, err
	}
	pr, perr := parsePerf(res.output)
	pr.Elapsed, pr.Output = res.elapsed, res.output
	if res.stalled {
		pr.Stalled, pr.PartialIOPS, pr.IOPS, pr.IdleFor = true, pr.IOPS, 0, res.idleFor
		o.Logger.Warn("iscsi-perf stalled: killed it", "url", url, "after", res.elapsed, "idle", res.idleFor, "partial_iops", pr.PartialIOPS)
		return pr, nil
	}
	if res.exitCode != 0 {
		return pr, fmt.Errorf("iscsi-perf %s exited %d: %s", url, res.exitCode, tail(res.output, 800))
	}
	if perr != nil {
		return pr, fmt.Errorf("iscsi-perf %s: %w; output: %s", url, perr, tail(res.output, 800))
	}
	return pr, nil
}

var (
	perfAvgRE  = regexp.MustCompile(`iops average (\d+) \(\d+ MB/s\)`)
	perfSizeRE = regexp.MustCompile(`FIXED transfer size of (\d+) blocks \((\d+) byte\)`)
)

// parsePerf reads iscsi-perf's output: a header naming the transfer size,
// progress lines rewritten with \r each second, then the whole run's
// "iops average N (M MB/s)" and "finished.".
func parsePerf(out string) (PerfResult, error) {
	var r PerfResult
	if m := perfSizeRE.FindStringSubmatch(out); m != nil {
		r.BytesPerIO, _ = strconv.ParseInt(m[2], 10, 64)
	}
	all := perfAvgRE.FindAllStringSubmatch(out, -1)
	if len(all) > 0 {
		r.IOPS, _ = strconv.ParseFloat(all[len(all)-1][1], 64)
	}
	switch {
	case r.BytesPerIO == 0:
		return r, errors.New("no transfer size line")
	case len(all) == 0:
		return r, errors.New("no iops average")
	case !strings.Contains(out, "finished."):
		return r, errors.New("no \"finished.\" line")
	}
	return r, nil
}
