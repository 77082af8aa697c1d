// Command mhcodi-workload is the guest image's test workload: it writes a
// self-checking pattern to a block device until SIGTERM (write), checks a
// region (verify) and measures sequential throughput (bench). Every line it
// prints starts with "workload: " and carries JSON, for tests that read
// the serial console.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs/blockdevice"

	"github.com/mhcodi/mhcodi/guestraid/workload"
	"github.com/mhcodi/mhcodi/internal/cliflag"
	"github.com/mhcodi/mhcodi/internal/version"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
		return
	case "-version", "--version":
		version.Print(os.Stdout, "mhcodi-workload")
		return
	case "write":
		err = write(os.Args[2:])
	case "verify":
		err = verify(os.Args[2:])
	case "bench":
		err = bench(os.Args[2:])
	case "auto":
		err = auto()
	default:
		fmt.Fprintf(os.Stderr, "mhcodi-workload: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		say("error", map[string]string{"error": err.Error()})
		os.Exit(1)
	}
}

const usage = `usage: mhcodi-workload <command> [flags]

commands:
  write    write a self-checking pattern to a region until SIGTERM (or -for)
  verify   check a region that write wrote
  bench    measure sequential throughput: bench [flags] op:device... (op: read, write, stop, idle)
  auto     run what the kernel command line's mhcodi.workload=... asks for

run "mhcodi-workload <command> -h" for its flags, "mhcodi-workload --version" for the version
`

// newFlags is a command's flag set.
func newFlags(cmd string) *flag.FlagSet {
	return flag.NewFlagSet("mhcodi-workload "+cmd, flag.ContinueOnError)
}

// parse parses a command's flags; -h prints its usage on stdout and exits
// 0, a bad flag exits 2.
func parse(fs *flag.FlagSet, args []string) {
	if code, ok := cliflag.Parse(fs, args, os.Stdout); !ok {
		os.Exit(code)
	}
}

// say prints one console line: "workload: <kind> <json>".
func say(kind string, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(os.Stdout, "workload: %s %s\n", kind, b)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M or G", s)
	}
	return n * mult, nil
}

func region(fs *flag.FlagSet, args []string) (workload.Options, error) {
	var o workload.Options
	fs.StringVar(&o.Device, "dev", "/dev/md0", "block device")
	fs.Int64Var(&o.Offset, "offset", 0, "start of the region in bytes (multiple of 4096)")
	size := fs.String("size", "16M", "length of the region (K, M, G suffixes)")
	parse(fs, args)
	n, err := parseSize(*size)
	if err != nil {
		return o, err
	}
	if o.Offset%workload.BlockSize != 0 || n%workload.BlockSize != 0 {
		return o, fmt.Errorf("offset and size must be multiples of %d", workload.BlockSize)
	}
	o.Blocks = uint64(n / workload.BlockSize)
	return o, nil
}

func write(args []string) error {
	fs := newFlags("write")
	pause := fs.Duration("pause", 0, "sleep between blocks")
	dur := fs.Duration("for", 0, "stop after this long (default: at SIGTERM)")
	every := fs.Duration("report", 2*time.Second, "progress line interval")
	o, err := region(fs, args)
	if err != nil {
		return err
	}
	o.Pause, o.ReportEvery = *pause, *every
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	if err := waitFor(ctx, o.Device, time.Minute); err != nil {
		return err
	}
	start := time.Now()
	o.Report = func(p workload.Progress) { say("progress", p) }
	o.Errorf = func(format string, a ...any) {
		say("ioerror", map[string]any{"elapsed_s": time.Since(start).Seconds(), "error": fmt.Sprintf(format, a...)})
	}
	say("start", map[string]any{"device": o.Device, "offset": o.Offset, "blocks": o.Blocks})
	p, err := workload.Run(ctx, o)
	say("stopped", p)
	if err != nil {
		return err
	}
	if p.Errors > 0 {
		return fmt.Errorf("%d write errors", p.Errors)
	}
	return nil
}

func verify(args []string) error {
	o, err := region(newFlags("verify"), args)
	if err != nil {
		return err
	}
	s, err := workload.VerifyDevice(o)
	say("verify", s)
	if err != nil {
		return err
	}
	if !s.OK() {
		return fmt.Errorf("region does not verify: %d bad blocks, %d errors", s.Bad, len(s.Errors))
	}
	return nil
}

// bench runs "op:device" measurements in order, e.g.
// read:/dev/vda read:/dev/vdb write:/dev/vdb read:/dev/md0.
func bench(args []string) error {
	fs := newFlags("bench")
	size := fs.String("size", "64M", "bytes per measurement (K, M, G suffixes)")
	req := fs.Int("req", 1<<20, "request size in bytes")
	parse(fs, args)
	n, err := parseSize(*size)
	if err != nil {
		return err
	}
	return runBench(fs.Args(), n, *req)
}

// runBench runs the measurements in order; "stop:/dev/mdN" stops an array
// (so a leg can then be written alone) and "idle:/dev/mdN" waits until
// its resync is over.
func runBench(list []string, n int64, req int) error {
	for _, m := range list {
		op, dev, ok := strings.Cut(m, ":")
		if !ok {
			return fmt.Errorf("measurement %q: want op:device", m)
		}
		switch op {
		case "stop":
			if out, err := exec.Command("/sbin/mdadm", "--stop", dev).CombinedOutput(); err != nil {
				return fmt.Errorf("mdadm --stop %s: %w: %s", dev, err, out)
			}
			continue
		case "idle":
			if err := waitIdle(dev, 10*time.Minute); err != nil {
				return err
			}
			continue
		}
		before, err := diskBytes()
		if err != nil {
			return err
		}
		t, err := workload.Sequential(dev, op, 0, n, req)
		if err != nil {
			return err
		}
		after, err := diskBytes()
		if err != nil {
			return err
		}
		say("bench", benchLine{Throughput: t, Disks: ioDelta(before, after)})
	}
	say("bench-done", map[string]int{"measurements": len(list)})
	return nil
}

// benchLine is one measurement and what it moved on each virtio disk, so
// the table can show which leg served md0's reads (a read leg that is
// not the only one serving them costs far more than md's own overhead).
type benchLine struct {
	workload.Throughput
	Disks map[string]diskIO `json:"disks"`
}

type diskIO struct {
	ReadBytes  uint64 `json:"read_bytes"`
	WriteBytes uint64 `json:"write_bytes"`
	ReadIOs    uint64 `json:"read_ios"`
	WriteIOs   uint64 `json:"write_ios"`
}

// diskBytes reads the byte counters of the guest's virtio disks.
func diskBytes() (map[string]diskIO, error) {
	fs, err := blockdevice.NewFS("/proc", "/sys")
	if err != nil {
		return nil, fmt.Errorf("disk counters: %w", err)
	}
	stats, err := fs.ProcDiskstats()
	if err != nil {
		return nil, fmt.Errorf("disk counters: %w", err)
	}
	m := map[string]diskIO{}
	for _, d := range stats {
		if strings.HasPrefix(d.DeviceName, "vd") && !strings.ContainsAny(d.DeviceName, "0123456789") {
			// diskstats counts 512-byte sectors whatever the device's block size.
			m[d.DeviceName] = diskIO{ReadBytes: d.ReadSectors * 512, WriteBytes: d.WriteSectors * 512, ReadIOs: d.ReadIOs, WriteIOs: d.WriteIOs}
		}
	}
	return m, nil
}

func ioDelta(before, after map[string]diskIO) map[string]diskIO {
	m := map[string]diskIO{}
	for k, a := range after {
		b := before[k]
		m[k] = diskIO{ReadBytes: a.ReadBytes - b.ReadBytes, WriteBytes: a.WriteBytes - b.WriteBytes, ReadIOs: a.ReadIOs - b.ReadIOs, WriteIOs: a.WriteIOs - b.WriteIOs}
	}
	return m
}

// waitFor waits until path exists (md arrays appear after assembly).
func waitFor(ctx context.Context, path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitIdle waits until dev is in sync: no sync running, no resync left
// (resync_start "none": right after creation sync_action still reads
// idle before md's thread starts the initial resync, and reads that race
// the resync wait at raid1's barrier) and nothing degraded, seen twice in
// a row.
func waitIdle(dev string, limit time.Duration) error {
	if err := waitFor(context.Background(), dev, time.Minute); err != nil {
		return err
	}
	dir := filepath.Join("/sys/block", filepath.Base(dev), "md")
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("waiting for %s to be in sync: %w", dev, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	deadline := time.Now().Add(limit)
	calm := 0
	for {
		var state []string
		for _, name := range []string{"sync_action", "resync_start", "degraded"} {
			v, err := read(name)
			if err != nil {
				return err
			}
			state = append(state, name+"="+v)
		}
		if state[0] == "sync_action=idle" && state[1] == "resync_start=none" && state[2] == "degraded=0" {
			if calm++; calm == 2 {
				return nil
			}
		} else {
			calm = 0
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not in sync after %v: %s", dev, limit, strings.Join(state, " "))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// auto does what the kernel command line asks for, so one guest image
// serves tests, the demo and the benchmark: mhcodi.workload=write (with
// mhcodi.workload.dev, .size, .pause), mhcodi.workload=bench (with
// mhcodi.workload.bench=op:dev,… and .bench_size, .bench_req), or nothing.
func auto() error {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	p := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "mhcodi.workload") {
			p[k] = v
		}
	}
	get := func(k, def string) string {
		if v, ok := p["mhcodi.workload."+k]; ok {
			return v
		}
		return def
	}
	switch mode := p["mhcodi.workload"]; mode {
	case "", "none":
		return nil
	case "write":
		return write([]string{"-dev", get("dev", "/dev/md0"), "-size", get("size", "16M"),
			"-pause", get("pause", "0s"), "-report", get("report", "2s")})
	case "bench":
		n, err := parseSize(get("bench_size", "64M"))
		if err != nil {
			return err
		}
		req, err := parseSize(get("bench_req", "1M"))
		if err != nil {
			return err
		}
		return runBench(strings.Split(get("bench", "idle:/dev/md0,read:/dev/md0"), ","), n, int(req))
	default:
		return fmt.Errorf("mhcodi.workload=%s: want write, bench or none", mode)
	}
}
