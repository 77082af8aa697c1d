package workload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options of a writing run.
type Options struct {
	// Device is the block device (or file) to write, e.g. /dev/md0.
	Device string
	// Offset is where the region starts, in bytes (a multiple of
	// BlockSize); Blocks is its length in blocks.
	Offset int64
	Blocks uint64
	// Report, if set, receives a progress line every ReportEvery.
	Report      func(Progress)
	ReportEvery time.Duration
	// Errorf receives every I/O error as it happens.
	Errorf func(format string, args ...any)
	// Pause between blocks, to leave the guest's CPU to md under TCG.
	Pause time.Duration
}

// Progress is the state of a writing run.
type Progress struct {
	Gen    uint64        `json:"gen"`
	Next   uint64        `json:"next"` // block to write next
	Writes uint64        `json:"writes"`
	Errors uint64        `json:"errors"`
	Since  time.Duration `json:"elapsed_ns"`
	// MaxLatency is the slowest write since the last report.
	MaxLatency time.Duration `json:"max_latency_ns"`
}

// Run writes pattern passes over the region, front to back, generation
// 1, 2, … until ctx ends, then finishes the block in flight and returns
// the final progress. Every write is O_DIRECT|O_DSYNC, so a block counted
// as written is on stable storage (for md: on every leg in the array).
// A failed write is reported, counted and retried with the next pass, not
// fatal: a guest that sees an I/O error is exactly what tests look for.
func Run(ctx context.Context, o Options) (Progress, error) {
	if o.Blocks == 0 {
		return Progress{}, errors.New("workload: empty region")
	}
	f, err := os.OpenFile(o.Device, os.O_RDWR|unix.O_DIRECT|unix.O_DSYNC, 0)
	if err != nil {
		return Progress{}, fmt.Errorf("workload: %w", err)
	}
	defer f.Close()
	buf := alignedBuffer(BlockSize)
	start := time.Now()
	p := Progress{Gen: 1}
	lastReport := start
	if o.ReportEvery == 0 {
		o.ReportEvery = time.Second
	}
	for ctx.Err() == nil {
		Fill(buf, p.Next, p.Gen)
		t0 := time.Now()
		_, err := f.WriteAt(buf, o.Offset+int64(p.Next)*BlockSize)
		lat := time.Since(t0)
		p.MaxLatency = max(p.MaxLatency, lat)
		if err != nil {
			p.Errors++
			if o.Errorf != nil {
				o.Errorf("write block %d generation %d: %v", p.Next, p.Gen, err)
			}
			// Keep the region consistent for Verify: an unwritten block
			// would break the cursor rule, so try the same block again.
			time.Sleep(100 * time.Millisecond)
			continue
		}
		p.Writes++
		p.Next++
		if p.Next == o.Blocks {
			p.Next = 0
			p.Gen++
		}
		// The first write that landed is reported at once: it is when a
		// guest that moved is writing again, which failover tests time.
		if now := time.Now(); o.Report != nil && (p.Writes == 1 || now.Sub(lastReport) >= o.ReportEvery) {
			p.Since = now.Sub(start)
			o.Report(p)
			p.MaxLatency = 0
			lastReport = now
		}
		if o.Pause > 0 {
			time.Sleep(o.Pause)
		}
	}
	p.Since = time.Since(start)
	if err := f.Sync(); err != nil {
		return p, fmt.Errorf("workload: sync: %w", err)
	}
	return p, nil
}

// VerifyDevice verifies the region of o on its device.
func VerifyDevice(o Options) (Summary, error) {
	f, err := os.OpenFile(o.Device, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return Summary{}, fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	return Verify(directReader{f}, o.Offset, o.Blocks)
}

// directReader reads through an aligned buffer, as O_DIRECT requires.
type directReader struct{ f *os.File }

func (d directReader) ReadAt(p []byte, off int64) (int, error) {
	buf := alignedBuffer(len(p))
	n, err := d.f.ReadAt(buf, off)
	copy(p, buf[:n])
	return n, err
}

// alignedBuffer returns n bytes aligned to 4 KiB, as O_DIRECT needs.
func alignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (align - 1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n : off+n]
}

// Throughput is one sequential measurement.
type Throughput struct {
	Device  string  `json:"device"`
	Op      string  `json:"op"` // read or write
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
}

// Sequential reads (or writes zeros-free pattern data to) size bytes of
// dev from offset off in requests of req bytes with O_DIRECT, and returns
// the rate. A write destroys what was there.
func Sequential(dev, op string, off, size int64, req int) (Throughput, error) {
	flags := os.O_RDONLY
	if op == "write" {
		flags = os.O_WRONLY
	} else if op != "read" {
		return Throughput{}, fmt.Errorf("sequential: op %q: want read or write", op)
	}
	f, err := os.OpenFile(dev, flags|unix.O_DIRECT, 0)
	if err != nil {
		return Throughput{}, fmt.Errorf("sequential %s: %w", op, err)
	}
	defer f.Close()
	buf := alignedBuffer(req)
	for i := 0; i+BlockSize <= req; i += BlockSize {
		Fill(buf[i:], uint64(i/BlockSize), 0)
	}
	start := time.Now()
	var done int64
	for done < size {
		n := min(int64(req), size-done)
		var err error
		if op == "read" {
			_, err = f.ReadAt(buf[:n], off+done)
		} else {
			_, err = f.WriteAt(buf[:n], off+done)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return Throughput{}, fmt.Errorf("sequential %s %s at %d: %w", op, dev, off+done, err)
		}
		done += n
	}
	if op == "write" {
		if err := f.Sync(); err != nil {
			return Throughput{}, fmt.Errorf("sequential write %s: sync: %w", dev, err)
		}
	}
	s := time.Since(start).Seconds()
	return Throughput{Device: dev, Op: op, Bytes: done, Seconds: s, MBps: float64(done) / s / 1e6}, nil
}
