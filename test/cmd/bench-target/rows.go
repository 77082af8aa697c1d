package main

import (
	"context"
	"fmt"
	"log/slog"
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
}

// workloads are the rows, reads first: they run while the file holds the
// data it was filled with, before the write rows overwrite it.
func workloads() []workload {
	return []workload{
		{name: "iscsi-perf 4 KiB random read QD1", client: "iscsi-perf", bytes: 4 << 10, qd: 1, random: true},
		{name: "iscsi-perf 4 KiB random read QD32", client: "iscsi-perf", bytes: 4 << 10, qd: 32, random: true},
		{name: "iscsi-perf 1 MiB sequential read QD16", client: "iscsi-perf", bytes: 1 << 20, qd: 16},
		{name: "qemu-img bench 4 KiB write QD32", client: "qemu-img", bytes: 4 << 10, qd: 32, write: true},
		{name: "qemu-img bench 1 MiB write QD32", client: "qemu-img", bytes: 1 << 20, qd: 32, write: true},
	}
}

func rowNames() []string {
	ws := workloads()
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.name
	}
	return out
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
		return cell{IOPS: r.IOPS, MiBps: r.MiBps()}
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
		return cell{IOPS: r.IOPS(), MiBps: r.MiBps()}
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
