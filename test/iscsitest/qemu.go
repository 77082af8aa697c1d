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

// QemuLUN says how QEMU's iSCSI block driver (libiscsi inside qemu-img and
// qemu-io) reaches a LUN.
type QemuLUN struct {
	// URL is the LUN's iscsi:// URL (Target.URL()).
	URL string
	// HeaderDigest is the driver's header-digest option: "" leaves QEMU's
	// default (none-crc32c: offer both, prefer none), "none", "crc32c",
	// "crc32c-none" or "none-crc32c". QEMU has no data digest option.
	HeaderDigest string
	// Initiator is the initiator-name option; QEMU logs in as
	// iqn.2008-11.org.linux-kvm (QemuInitiatorName) without it.
	Initiator string
}

// args renders the LUN as qemu-img/qemu-io image arguments: the plain URL
// with -f raw when no driver option is needed, else --image-opts with the
// URL split into the iscsi driver's portal, target and lun options
// (--image-opts excludes -f).
func (l QemuLUN) args() ([]string, error) {
	if err := checkURL(l.URL); err != nil {
		return nil, err
	}
	if l.HeaderDigest == "" && l.Initiator == "" {
		return []string{"-f", "raw", l.URL}, nil
	}
	rest := strings.TrimPrefix(l.URL, "iscsi://")
	if strings.Contains(rest, "@") {
		return nil, fmt.Errorf("qemu: %s: CHAP with driver options: pass user and password options instead", l.URL)
	}
	portal, path, _ := strings.Cut(rest, "/")
	iqn, lun, _ := strings.Cut(path, "/")
	opts := []string{"driver=iscsi", "transport=tcp", "portal=" + portal, "target=" + iqn, "lun=" + lun}
	if l.HeaderDigest != "" {
		opts = append(opts, "header-digest="+l.HeaderDigest)
	}
	if l.Initiator != "" {
		opts = append(opts, "initiator-name="+l.Initiator)
	}
	for _, o := range opts {
		if strings.Contains(o, ",") {
			return nil, fmt.Errorf("qemu: option %q holds a comma, which --image-opts cannot take", o)
		}
	}
	return []string{"--image-opts", strings.Join(opts, ",")}, nil
}

// QemuBenchOptions configures RunQemuImgBench.
type QemuBenchOptions struct {
	Write      bool  // -w: write instead of read
	BlockSize  int64 // -s: bytes per request
	QueueDepth int   // -d: requests in flight
	// Count is -c, the number of requests. If zero, Duration is used: a
	// short probe run measures the rate and Count is set to last about
	// Duration (qemu-img bench has no time limit of its own).
	Count    int
	Duration time.Duration
	// Timeout kills a run that has not finished; the default is
	// 3×Duration+30s, or 2 minutes for a fixed Count.
	Timeout time.Duration
	// Idle declares a stall as soon as qemu-img has read next to nothing
	// (under 1 KiB: its 5-second NOP pings still get answers) for this
	// long (5s if zero, negative to rely on Timeout
	// alone). qemu-img prints nothing until it is done, so this is what
	// tells a stalled target from a slow one.
	Idle   time.Duration
	Logger *slog.Logger
}

// QemuBenchResult is one qemu-img bench run.
type QemuBenchResult struct {
	Requests  int
	BlockSize int64
	// Elapsed is qemu-img's own "Run completed in" time (I/O only, no
	// login); Wall is the whole process, login and open included.
	Elapsed, Wall time.Duration
	Stalled       bool
	IdleFor       time.Duration // when Stalled for Idle: how long it had read nothing
	Output        string
}

// IOPS is requests per second of qemu-img's own run time.
func (r QemuBenchResult) IOPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// MiBps is the throughput in MiB/s.
func (r QemuBenchResult) MiBps() float64 { return r.IOPS() * float64(r.BlockSize) / (1 << 20) }

// RunQemuImgBench runs `qemu-img bench -t none -n [-w] -d QD -s BS -c N`
// on the LUN: sequential requests from offset 0, wrapping at the end of
// the image, through QEMU's iSCSI driver. -t none -n ask for O_DIRECT and
// native AIO, which the iscsi driver ignores (it speaks to the network);
// they are passed so the same line benchmarks a local file identically.
func RunQemuImgBench(ctx context.Context, lun QemuLUN, o QemuBenchOptions) (QemuBenchResult, error) {
	if o.BlockSize <= 0 || o.QueueDepth <= 0 {
		return QemuBenchResult{}, errors.New("qemu-img bench: BlockSize and QueueDepth must be positive")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Idle == 0 {
		o.Idle = 5 * time.Second
	}
	if o.Count > 0 {
		if o.Timeout == 0 {
			o.Timeout = 2 * time.Minute
		}
		return qemuImgBench(ctx, lun, o)
	}
	if o.Duration <= 0 {
		return QemuBenchResult{}, errors.New("qemu-img bench: set Count or Duration")
	}
	if o.Timeout == 0 {
		o.Timeout = 3*o.Duration + 30*time.Second
	}
	count, probe, err := calibrateQemuBench(ctx, lun, o)
	if err != nil || probe.Stalled {
		return probe, err
	}
	o.Count = count
	return qemuImgBench(ctx, lun, o)
}

// calibrateQemuBench runs growing probes until one lasts 300ms, and
// returns the count that should last o.Duration at that rate.
func calibrateQemuBench(ctx context.Context, lun QemuLUN, o QemuBenchOptions) (int, QemuBenchResult, error) {
	p := o
	p.Count = 8 * o.QueueDepth
	for {
		r, err := qemuImgBench(ctx, lun, p)
		if err != nil || r.Stalled {
			return 0, r, err
		}
		if r.Elapsed >= 300*time.Millisecond || p.Count >= 1<<24 {
			n := int(r.IOPS() * o.Duration.Seconds())
			return max(n, o.QueueDepth), r, nil
		}
		// Aim for 400ms next time, growing at least 2× and at most 16×.
		grow := 2.0
		if r.Elapsed > 0 {
			grow = min(max(0.4/r.Elapsed.Seconds(), 2), 16)
		}
		p.Count = int(float64(p.Count) * grow)
	}
}

var qemuBenchDoneRE = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

func qemuImgBench(ctx context.Context, lun QemuLUN, o QemuBenchOptions) (QemuBenchResult, error) {
	bin, err := Tool("qemu-img")
	if err != nil {
		return QemuBenchResult{}, err
	}
	if err := CheckQemuISCSI(); err != nil {
		return QemuBenchResult{}, err
	}
	img, err := lun.args()
	if err != nil {
		return QemuBenchResult{}, err
	}
	argv := []string{bin, "bench", "-t", "none", "-n", "-d", strconv.Itoa(o.QueueDepth),
		"-s", strconv.FormatInt(o.BlockSize, 10), "-c", strconv.Itoa(o.Count)}
	if o.Write {
		argv = append(argv, "-w")
	}
	argv = append(argv, img...)
	o.Logger.Debug("qemu-img bench", "argv", argv)
	res, err := runClient(ctx, clientSpec{name: "qemu-img", argv: argv, timeout: o.Timeout, idle: max(o.Idle, 0)})
	r := QemuBenchResult{Requests: o.Count, BlockSize: o.BlockSize, Wall: res.elapsed,
		Stalled: res.stalled, IdleFor: res.idleFor, Output: res.output}
	if err != nil {
		return r, err
	}
	if res.stalled {
		o.Logger.Warn("qemu-img bench stalled: killed it", "url", lun.URL, "after", res.elapsed, "idle", res.idleFor)
		return r, nil
	}
	m := qemuBenchDoneRE.FindStringSubmatch(res.output)
	if res.exitCode != 0 || m == nil {
		return r, fmt.Errorf("qemu-img bench %s exited %d: %s", lun.URL, res.exitCode, tail(res.output, 800))
	}
	secs, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return r, fmt.Errorf("qemu-img bench: run time %q: %w", m[1], err)
	}
	r.Elapsed = time.Duration(secs * float64(time.Second))
	return r, nil
}

// QemuIOOptions configures RunQemuIOPattern.
type QemuIOOptions struct {
	Offset, Length int64 // the region written then read; 0 and 1 MiB if zero
	Pattern        byte  // the byte written (-P); 0xab if zero
	Timeout        time.Duration
	Logger         *slog.Logger
}

// RunQemuIOPattern writes a byte pattern through QEMU's iSCSI driver and
// reads it back with verification, in one qemu-io session:
// `qemu-io -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'`. It returns the
// qemu-io output and an error if the login, the write or the
// verification failed.
func RunQemuIOPattern(ctx context.Context, lun QemuLUN, o QemuIOOptions) (string, error) {
	return runQemuIO(ctx, lun, o, true)
}

// RunQemuIOVerify only reads the region back and verifies the pattern
// (`qemu-io -c 'read -P 0xab 0 1M'`): to check data another client wrote,
// or that a mismatch is caught.
func RunQemuIOVerify(ctx context.Context, lun QemuLUN, o QemuIOOptions) (string, error) {
	return runQemuIO(ctx, lun, o, false)
}

func runQemuIO(ctx context.Context, lun QemuLUN, o QemuIOOptions, write bool) (string, error) {
	bin, err := Tool("qemu-io")
	if err != nil {
		return "", err
	}
	if err := CheckQemuISCSI(); err != nil {
		return "", err
	}
	img, err := lun.args()
	if err != nil {
		return "", err
	}
	if o.Length == 0 {
		o.Length = 1 << 20
	}
	if o.Pattern == 0 {
		o.Pattern = 0xab
	}
	if o.Timeout == 0 {
		o.Timeout = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	region := fmt.Sprintf("%d %d", o.Offset, o.Length)
	pat := fmt.Sprintf("0x%02x", o.Pattern)
	argv := []string{bin}
	if write {
		argv = append(argv, "-c", "write -P "+pat+" "+region)
	}
	argv = append(argv, "-c", "read -P "+pat+" "+region)
	argv = append(argv, img...)
	o.Logger.Info("qemu-io", "url", lun.URL, "header_digest", lun.HeaderDigest, "write", write, "pattern", pat, "region", region)
	res, err := runClient(ctx, clientSpec{name: "qemu-io", argv: argv, timeout: o.Timeout})
	if err != nil {
		return res.output, err
	}
	wrote := fmt.Sprintf("wrote %d/%d bytes at offset %d", o.Length, o.Length, o.Offset)
	read := fmt.Sprintf("read %d/%d bytes at offset %d", o.Length, o.Length, o.Offset)
	switch {
	case res.stalled:
		return res.output, fmt.Errorf("qemu-io %s stalled after %v", lun.URL, res.elapsed)
	case strings.Contains(res.output, "Pattern verification failed"):
		return res.output, fmt.Errorf("qemu-io %s: read back differs from pattern %s: %s", lun.URL, pat, tail(res.output, 800))
	case res.exitCode != 0:
		return res.output, fmt.Errorf("qemu-io %s exited %d: %s", lun.URL, res.exitCode, tail(res.output, 800))
	case write && !strings.Contains(res.output, wrote), !strings.Contains(res.output, read):
		// qemu-io reports a failed command and still exits 0 in some
		// versions: demand the success lines.
		return res.output, fmt.Errorf("qemu-io %s: write or read did not complete: %s", lun.URL, tail(res.output, 800))
	}
	return res.output, nil
}
