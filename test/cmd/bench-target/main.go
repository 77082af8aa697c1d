// Command bench-target measures iSCSI targets with real clients: the same
// page-cached file is exported in turn by Debian's tgt, by gotgt v0.2.2
// (embedded with iscsitest.StartGotgt, by default in a re-executed copy of
// this binary so that it can be restarted after a stall and its RSS is its
// own) and by mhcodi-targetd (when bin/mhcodi-targetd is built), and each
// is driven by libiscsi's iscsi-perf and qemu-img bench over loopback. It prints IOPS and MiB/s per target per workload, the
// ratios of targetd to each peer, and each target's peak RSS.
//
// Run it with `make bench-target`. Every process it starts is stopped by
// PID, on failure and on ^C too, and its temp dir is removed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/test/iscsitest"
)

// options are the command-line flags.
type options struct {
	duration time.Duration
	size     int64
	tmpDir   string
	targets  []string
	targetd  string
	gotgtIn  string // "inproc" or "child"
	jsonOut  string
	verbose  bool
	rows     string // comma-separated substrings of the rows to run; "" = all
}

func main() {
	// Re-executed as gotgt's host for -gotgt=child: serve and exit.
	if iscsitest.IsGotgtHelper() {
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if err := iscsitest.ServeGotgtHelper(context.Background(), log); err != nil {
			log.Error("gotgt helper", "err", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-target:", err)
		os.Exit(2)
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(o, log); err != nil {
		fmt.Fprintln(os.Stderr, "bench-target:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench-target", flag.ContinueOnError)
	var o options
	var size, targets string
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each workload runs against each target")
	fs.StringVar(&size, "size", "1GiB", "size of the exported file (K, M, G suffixes are binary)")
	fs.StringVar(&o.tmpDir, "tmpdir", "", "where the temp dir with the file goes (default $TMPDIR)")
	fs.StringVar(&targets, "targets", "tgt,gotgt,targetd", "targets to measure, in order")
	fs.StringVar(&o.targetd, "targetd", "bin/mhcodi-targetd", "the mhcodi-targetd binary (its row is n/a when missing)")
	fs.StringVar(&o.gotgtIn, "gotgt", "child", "where the embedded gotgt runs: child (this binary re-executed as its host: restartable after a stall, RSS of its own) or inproc (in this process: not restartable, RSS includes the harness)")
	fs.StringVar(&o.jsonOut, "json", "", "also write the results as JSON to this file")
	fs.BoolVar(&o.verbose, "v", false, "log every step")
	fs.StringVar(&o.rows, "rows", "", "run only the rows whose name contains one of these comma-separated strings; a trailing $ matches the end of the name (e.g. \"QD1$,QD32$,x8\")")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.rows != "" {
		selected = selectRows(o.rows)
		if len(selected) == 0 {
			return o, fmt.Errorf("-rows %q: matches no row", o.rows)
		}
	}
	sz, err := configs.ParseSize(size)
	if err != nil {
		return o, fmt.Errorf("-size: %w", err)
	}
	o.size = int64(sz)
	if o.size < 64<<20 {
		return o, fmt.Errorf("-size %s: at least 64MiB, so 1 MiB requests at QD32 have room", size)
	}
	if o.duration < time.Second {
		return o, fmt.Errorf("-duration %v: at least 1s (iscsi-perf counts whole seconds)", o.duration)
	}
	if o.gotgtIn != "inproc" && o.gotgtIn != "child" {
		return o, fmt.Errorf("-gotgt %q: inproc or child", o.gotgtIn)
	}
	for _, t := range strings.Split(targets, ",") {
		t = strings.TrimSpace(t)
		switch t {
		case "tgt", "gotgt", "targetd":
			o.targets = append(o.targets, t)
		case "":
		default:
			return o, fmt.Errorf("-targets: unknown target %q (tgt, gotgt, targetd)", t)
		}
	}
	if len(o.targets) == 0 {
		return o, errors.New("-targets: none")
	}
	if o.targetd, err = filepath.Abs(o.targetd); err != nil {
		return o, fmt.Errorf("-targetd: %w", err)
	}
	return o, nil
}

// run does the whole benchmark. Everything it starts is registered with a
// Cleanup, which also runs on SIGINT/SIGTERM before the process dies.
func run(o options, log *slog.Logger) (err error) {
	cl := iscsitest.NewCleanup(log)
	defer func() { err = errors.Join(err, cl.Close()) }()
	ctx := context.Background()

	dir, err := os.MkdirTemp(o.tmpDir, "bench-target-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	cl.Add("remove "+dir, func() error { return os.RemoveAll(dir) })

	start := time.Now()
	file := filepath.Join(dir, "disk.img")
	fmt.Fprintf(os.Stderr, "bench-target: filling %s (%s) once so every target reads from the page cache\n",
		file, iscsitest.FormatBytes(o.size))
	if err := makeFilledFile(file, o.size); err != nil {
		return err
	}

	res := results{Size: o.size, Duration: o.duration, Rows: rowNames()}
	for _, name := range o.targets {
		fmt.Fprintf(os.Stderr, "bench-target: %s\n", name)
		res.Targets = append(res.Targets, benchTarget(ctx, cl, o, log, name, dir, file))
	}
	res.Elapsed = time.Since(start)
	printTable(os.Stdout, res)
	if o.jsonOut != "" {
		if err := writeJSON(o.jsonOut, res); err != nil {
			return err
		}
	}
	return nil
}

// benchTarget starts one target, runs every row against it, records its
// peak RSS and stops it. A row that stalls leaves commands the target never
// answered, so the target is restarted before the next row: each row
// measures a target in its normal state (except an in-process gotgt, which
// cannot be started twice in a process). Failures become notes, not
// errors: the other targets still run.
func benchTarget(ctx context.Context, cl *iscsitest.Cleanup, o options, log *slog.Logger, name, dir, file string) (tr targetResult) {
	tr.Name = name
	restartable := true
	if name == "gotgt" && o.gotgtIn == "inproc" {
		tr.RSSNote = "whole bench process"
		restartable = false
	}
	var t iscsitest.Target
	note := func(format string, args ...any) {
		tr.Note = strings.TrimSpace(tr.Note + "; " + fmt.Sprintf(format, args...))
		tr.Note = strings.TrimPrefix(tr.Note, "; ")
	}
	// stop records the instance's peak RSS (read first: a stopped
	// in-process target cannot say) and stops it.
	stop := func() {
		if rss, err := t.PeakRSS(); err == nil {
			tr.PeakRSS = max(tr.PeakRSS, rss)
		} else {
			note("peak RSS: %v", err)
		}
		if err := t.Stop(); err != nil {
			note("stop: %v", err)
		}
		t = nil
	}
	defer func() {
		if t != nil {
			stop()
		}
	}()
	for i, w := range workloads() {
		if t == nil {
			nt, why, err := startTarget(ctx, o, log, name, dir, file)
			switch {
			case why != "":
				tr.Note = why
				tr.fill(rowNames(), why)
				return tr
			case err != nil:
				note("start failed before %q: %v", w.name, err)
				for range workloads()[i:] {
					tr.Runs = append(tr.Runs, cell{Status: "start failed"})
				}
				return tr
			}
			t = nt
			cl.AddTarget(t)
		}
		c := measureWorkload(ctx, t, w, o.duration, log)
		// Progress on stderr; stdout holds only the table.
		fmt.Fprintf(os.Stderr, "  %-48s %-8s %s\n", w.name, name, c.progress())
		tr.Runs = append(tr.Runs, c)
		// Each row resets the peak (VmHWM): the whole run's is the
		// largest row's.
		tr.PeakRSS = max(tr.PeakRSS, c.PeakRSS)
		if c.Status == "stalled" && i < len(workloads())-1 {
			if !restartable {
				note("not restarted after the stall of %q: later rows measure it with that session's leftovers", w.name)
				continue
			}
			tr.Restarts++
			stop()
		}
	}
	return tr
}
