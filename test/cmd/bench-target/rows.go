package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/test/iscsitest"
)

// workload is one row of the table.
type workload struct {
	name   string
	client string // "iscsi-perf" or "qemu-img"
	bytes  int64  // per request
	qd     int
	random bool // iscsi-perf only
	write  bool // qemu-img only; iscsi-perf only reads
	// sessions runs this many iscsi-perf processes at once, each its own
	// session (its own initiator name); IOPS is their sum.
	sessions int
}

// workloads are the rows, reads first: they run while the file holds the
// data it was filled with, before the write rows overwrite it.
func allWorkloads() []workload {
	return []workload{
		{name: "iscsi-perf 4 KiB random read QD1", client: "iscsi-perf", bytes: 4 << 10, qd: 1, random: true},
		{name: "iscsi-perf 4 KiB random read QD32", client: "iscsi-perf", bytes: 4 << 10, qd: 32, random: true},
		{name: "iscsi-perf 4 KiB random read QD32 x4 sessions", client: "iscsi-perf", bytes: 4 << 10, qd: 32, random: true, sessions: 4},
		{name: "iscsi-perf 4 KiB random read QD32 x8 sessions", client: "iscsi-perf", bytes: 4 << 10, qd: 32, random: true, sessions: 8},
		{name: "iscsi-perf 1 MiB sequential read QD16", client: "iscsi-perf", bytes: 1 << 20, qd: 16},
		{name: "iscsi-perf 1 MiB random read QD32 x16 sessions", client: "iscsi-perf", bytes: 1 << 20, qd: 32, random: true, sessions: 16},
		{name: "qemu-img bench 4 KiB write QD32", client: "qemu-img", bytes: 4 << 10, qd: 32, write: true},
		{name: "qemu-img bench 1 MiB write QD32", client: "qemu-img", bytes: 1 << 20, qd: 32, write: true},
	}
}

// selected are the rows -rows picked; nil means all.
var selected []workload

// selectRows returns the rows whose name contains one of the
// comma-separated strings of spec ("QD1$": whose name ends in QD1).
func selectRows(spec string) []workload {
	var out []workload
	for _, w := range allWorkloads() {
		for _, f := range strings.Split(spec, ",") {
			suffix, end := strings.CutSuffix(f, "$")
			if f != "" && (!end && strings.Contains(w.name, f) || end && strings.HasSuffix(w.name, suffix)) {
				out = append(out, w)
				break
			}
		}
	}
	return out
}

// workloads are the rows this run measures.
func workloads() []workload {
	if selected != nil {
		return selected
	}
	return allWorkloads()
}

func rowNames() []string {
	ws := workloads()
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.name
	}
	return out
}

// maxSessions is the most parallel sessions a row uses; targetd admits
// that many perf initiator names.
const maxSessions = 16

// perfInitiator is the initiator name of parallel session i (from 1).
func perfInitiator(i int) string { return fmt.Sprintf("%s-%d", iscsitest.PerfInitiator, i) }

// measureWorkload runs one row and adds what the target process used
// meanwhile (CPU time, context switches) when it runs in a process of its own.
func measureWorkload(ctx context.Context, t iscsitest.Target, w workload, d time.Duration, log *slog.Logger) cell {
	pid := t.PID()
	var u0 iscsitest.ProcUsage
	var err error
	rssReset := false
	if pid > 0 {
		rssReset = iscsitest.ResetPeakRSS(pid) == nil
		u0, err = iscsitest.ReadProcUsage(pid)
	}
	c := runWorkload(ctx, t, w, d, log)
	if rssReset {
		c.PeakRSS, _ = iscsitest.PeakRSSOf(pid)
	}
	if pid <= 0 || err != nil || !c.ok() {
		return c
	}
	u1, err := iscsitest.ReadProcUsage(pid)
	if err != nil {
		return c
	}
	u := u1.Sub(u0)
	c.CPUSeconds = u.CPU.Seconds()
	c.Switches = u.Switches()
	return c
}

// runWorkload runs one row against t. A client that reads nothing from the
// target for 5s is declared stalled and killed at once (the library's
// default), so a target that stalls every row still fits the run in
// minutes, and a slow one is not mistaken for a stalled one.
func runWorkload(ctx context.Context, t iscsitest.Target, w workload, d time.Duration, log *slog.Logger) cell {
	capy, err := iscsitest.ReadCapacity(ctx, t.URL())
	if err != nil {
		return cell{Status: "error", Err: err.Error()}
	}
	if w.bytes%capy.BlockSize != 0 {
		return cell{Status: "error", Err: fmt.Sprintf("%d-byte requests on %d-byte blocks", w.bytes, capy.BlockSize)}
	}
	switch w.client {
	case "iscsi-perf":
		if w.sessions > 1 {
			return runParallelPerf(ctx, t, w, capy.BlockSize, d, log)
		}
		r, err := iscsitest.RunPerf(ctx, t.URL(), iscsitest.PerfOptions{
			BlocksPerIO: int(w.bytes / capy.BlockSize), QueueDepth: w.qd, Random: w.random,
			Duration: d, Grace: 5 * time.Second, Logger: log,
		})
		switch {
		case err != nil:
			return cell{Status: "error", Err: err.Error()}
		case r.Stalled:
			return cell{Status: "stalled", Err: fmt.Sprintf("iscsi-perf %s; %.0f IOPS on average before the stall",
				stallWhy(r.IdleFor, r.Elapsed), r.PartialIOPS)}
		}
		return cell{IOPS: r.IOPS, MiBps: r.MiBps(), IOs: r.IOPS * float64(perfSeconds(d))}
	case "qemu-img":
		r, err := iscsitest.RunQemuImgBench(ctx, iscsitest.QemuLUN{URL: t.URL()}, iscsitest.QemuBenchOptions{
			Write: w.write, BlockSize: w.bytes, QueueDepth: w.qd, Duration: d, Logger: log,
		})
		switch {
		case err != nil:
			return cell{Status: "error", Err: err.Error()}
		case r.Stalled:
			return cell{Status: "stalled", Err: fmt.Sprintf("qemu-img bench of %d requests %s", r.Requests, stallWhy(r.IdleFor, r.Wall))}
		}
		return cell{IOPS: r.IOPS(), MiBps: r.MiBps(), IOs: float64(r.Requests)}
	}
	return cell{Status: "error", Err: "unknown client " + w.client}
}

// stallWhy says why a client was declared stalled.
func stallWhy(idle, after time.Duration) string {
	if idle > 0 {
		return fmt.Sprintf("read under 1 KiB for %v and was killed %v after it started",
			idle.Round(100*time.Millisecond), after.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("had not finished when killed at its deadline, %v after it started", after.Round(100*time.Millisecond))
}

// perfSeconds is the whole seconds iscsi-perf runs for d.
func perfSeconds(d time.Duration) int { return max(int((d+time.Second-1)/time.Second), 1) }

// runParallelPerf runs w.sessions iscsi-perf processes at once, each with
// its own initiator name, and sums their IOPS. One stalled session stalls
// the row.
func runParallelPerf(ctx context.Context, t iscsitest.Target, w workload, blockSize int64, d time.Duration, log *slog.Logger) cell {
	type out struct {
		r   iscsitest.PerfResult
		err error
	}
	res := make([]out, w.sessions)
	var wg sync.WaitGroup
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i].r, res[i].err = iscsitest.RunPerf(ctx, t.URL(), iscsitest.PerfOptions{
				BlocksPerIO: int(w.bytes / blockSize), QueueDepth: w.qd, Random: w.random,
				Duration: d, Grace: 5 * time.Second, Logger: log, Initiator: perfInitiator(i + 1),
			})
		}()
	}
	wg.Wait()
	var c cell
	for i, o := range res {
		switch {
		case o.err != nil:
			return cell{Status: "error", Err: fmt.Sprintf("session %d: %v", i+1, o.err)}
		case o.r.Stalled:
			return cell{Status: "stalled", Err: fmt.Sprintf("session %d: iscsi-perf %s; %.0f IOPS on average before the stall",
				i+1, stallWhy(o.r.IdleFor, o.r.Elapsed), o.r.PartialIOPS)}
		}
		c.IOPS += o.r.IOPS
		c.MiBps += o.r.MiBps()
	}
	c.IOs = c.IOPS * float64(perfSeconds(d))
	return c
}
