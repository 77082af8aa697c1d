package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/test/vm/internal/guest"
	"golang.org/x/sys/unix"
)

// ErrTimeout is wrapped by Run's error when the guest did not finish in
// Options.Timeout (qemu is then killed).
var ErrTimeout = errors.New("timed out")

// Options says how to boot an image. The zero value is usable.
type Options struct {
	// CacheDir holds built images (vm/images) and console logs
	// (vm/logs); default CacheDir().
	CacheDir string
	// KernelDir holds vmlinuz, VERSION and lib/modules; default
	// <CacheDir>/kernel, where scripts/deps.sh puts Debian's kernel.
	KernelDir string
	// MemoryMiB is the guest's memory; default 1024. The initramfs lives
	// in it.
	MemoryMiB int
	// CPUs is the number of virtual CPUs; default 1.
	CPUs int
	// Disks are attached as virtio-blk disks, vda, vdb… in order (the
	// image needs the virtio_pci and virtio_blk modules: VirtioBlk).
	Disks []Disk
	// Network holds qemu's arguments for the guest's network, e.g.
	// "-nic", "user,model=virtio-net-pci" (with the virtio_net module);
	// nil means no network at all ("-nic none").
	Network []string
	// QEMUArgs are appended to qemu's command line.
	QEMUArgs []string
	// Append holds extra kernel parameters.
	Append []string
	// Timeout bounds the boot and the job; default 5 minutes. qemu is
	// killed when it expires.
	Timeout time.Duration
	// LogFile receives the console; default <CacheDir>/vm/logs/<name>.log,
	// overwritten by each run of the image and kept for reading after a
	// failure.
	LogFile string
	// Console, if set, receives a copy of the console as it arrives.
	Console io.Writer
	// Logf, if set, receives progress messages.
	Logf func(format string, args ...any)
}

// VirtioBlk are the modules a guest needs to see Options.Disks.
var VirtioBlk = []string{"virtio_pci", "virtio_blk"}

// Disk is a file attached to the guest as a raw virtio-blk disk.
type Disk struct {
	Path     string
	Serial   string // virtio serial (at most 20 bytes), in /sys/block/vdX/serial
	ReadOnly bool
}

func (o *Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

func (o *Options) cacheDir() (string, error) {
	if o.CacheDir != "" {
		return filepath.Abs(o.CacheDir)
	}
	return CacheDir()
}

// Result is a finished run. Run returns one even with an error when qemu
// was started, for its console.
type Result struct {
	// Status is the guest job's exit status: 128+n if a signal n killed
	// it, 127 if it could not start, -1 if the guest never ran it.
	Status int
	// Console is everything the serial console printed.
	Console string
	// LogFile is where the console was written.
	LogFile string
	// Image is the initramfs booted; ImageCached says it was not rebuilt.
	Image       string
	ImageCached bool
	// PID is qemu's process ID (it has been reaped when Run returns).
	PID int
	// Build is the time Build took, Boot the time from starting qemu to
	// the job's start (kernel, init, module loading), Job the job's run
	// time, Total everything.
	Build, Boot, Job, Total time.Duration
}

// Run builds img (or takes it from the cache) and boots it. It returns the
// job's exit status in Result.Status; the error is for everything else: a
// build failure, qemu failing, the guest not reaching or not finishing
// the job (ErrTimeout). A non-zero job status is not an error.
func Run(ctx context.Context, img Image, o Options) (*Result, error) {
	start := time.Now()
	built, err := Build(ctx, img, o)
	if err != nil {
		return nil, err
	}
	o.logf("vm %s: image %s (%s, %s)", img.Name, built.Path, map[bool]string{true: "cached", false: "built"}[built.Cached], built.Elapsed.Round(time.Millisecond))
	res, err := Boot(ctx, img.Name, built.Path, o)
	if res != nil {
		res.ImageCached = built.Cached
		res.Build = built.Elapsed
		res.Total = time.Since(start)
	}
	return res, err
}

// Boot boots an initramfs built by Build; name names the console log.
func Boot(ctx context.Context, name, initramfs string, o Options) (*Result, error) {
	start := time.Now()
	qemu, err := QEMU()
	if err != nil {
		return nil, err
	}
	k, err := FindKernel(o.KernelDir)
	if err != nil {
		return nil, err
	}
	cache, err := o.cacheDir()
	if err != nil {
		return nil, err
	}
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("vm name %q: want %s", name, nameRE)
	}
	logFile := o.LogFile
	if logFile == "" {
		logFile = filepath.Join(cache, "vm", "logs", name+".log")
	}
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	var nb [8]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])

	args, err := qemuArgs(k, initramfs, nonce, o)
	if err != nil {
		return nil, err
	}
	con := &console{nonce: nonce, file: logf, tee: o.Console, exit: make(chan struct{})}
	var stderr bytes.Buffer
	cmd := exec.Command(qemu, args...)
	cmd.Stdout = con
	cmd.Stderr = &lockedWriter{w: io.MultiWriter(&stderr, logf), mu: &con.mu}
	// qemu gets no terminal signals (^C reaches this process, which kills
	// qemu by PID) and dies with this process: PDEATHSIG fires when the
	// forking thread exits, so that thread stays locked until qemu is
	// reaped.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second

	started := make(chan error, 1)
	done := make(chan struct{})
	var waitErr error
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waitErr = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("vm %s: starting qemu: %w", name, err)
	}
	pid := cmd.Process.Pid
	background(pid)
	kill := func() {
		_ = cmd.Process.Signal(syscall.SIGKILL) // this PID only
		<-done
	}
	release := guardSignals(kill)
	defer release()
	o.logf("vm %s: qemu pid %d, console %s", name, pid, logFile)

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var failure error
	select {
	case <-done:
	case <-con.exit:
		// The guest synced and powers off; qemu exits by itself in
		// a moment.
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			kill()
		}
	case <-timer.C:
		kill()
		failure = fmt.Errorf("%w after %s (qemu killed)", ErrTimeout, timeout)
	case <-ctx.Done():
		kill()
		failure = fmt.Errorf("%w (qemu killed)", context.Cause(ctx))
	}

	res := &Result{Status: -1, LogFile: logFile, Image: initramfs, PID: pid, Total: time.Since(start)}
	con.mu.Lock()
	res.Console = con.buf.String()
	startAt, exitAt, setupErr, statusText, exited := con.startAt, con.exitAt, con.setupErr, con.status, con.exited
	con.mu.Unlock()
	if !startAt.IsZero() {
		res.Boot = startAt.Sub(start)
		if !exitAt.IsZero() {
			res.Job = exitAt.Sub(startAt)
		}
	}
	if exited {
		st, err := guest.ParseStatus(statusText)
		if err != nil && failure == nil {
			failure = err
		}
		res.Status = st
	}
	switch {
	case failure != nil:
	case setupErr != "":
		failure = fmt.Errorf("guest setup failed: %s", setupErr)
	case !exited:
		failure = fmt.Errorf("%w (qemu: %v)", errNoMarker, exitText(waitErr))
	}
	if failure != nil {
		if s := strings.TrimSpace(stderr.String()); s != "" {
			failure = fmt.Errorf("%w; qemu stderr: %s", failure, s)
		}
		return res, fmt.Errorf("vm %s: %w\nconsole (%s), last lines:\n%s", name, failure, logFile, tailLines(res.Console, 40))
	}
	return res, nil
}

// background lowers a child's CPU priority to the least (nice 19): a VM
// under TCG keeps a CPU busy, and tests of timing-sensitive protocol code
// running beside it (other packages of go test ./...) must not lose their
// CPU to it. Children the process forks later inherit it.
func background(pid int) {
	_ = unix.Setpriority(unix.PRIO_PROCESS, pid, 19)
}

func exitText(err error) string {
	if err == nil {
		return "exited with status 0"
	}
	return err.Error()
}

// qemuArgs is qemu's command line: TCG only (KVM hangs on the build
// machine), the serial console on stdout, no reboot.
func qemuArgs(k Kernel, initramfs, nonce string, o Options) ([]string, error) {
	mem := o.MemoryMiB
	if mem <= 0 {
		mem = 1024
	}
	cpus := o.CPUs
	if cpus <= 0 {
		cpus = 1
	}
	for _, a := range append(append([]string(nil), o.QEMUArgs...), o.Network...) {
		if strings.Contains(a, "kvm") {
			return nil, fmt.Errorf("qemu argument %q: test/vm runs TCG only (KVM hangs on the build machine)", a)
		}
	}
	kargs := append([]string{
		"console=ttyS0", "panic=-1", guest.NonceParam + "=" + nonce,
	}, o.Append...)
	args := []string{
		"-accel", "tcg", "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio", "-vga", "none",
		"-kernel", k.Vmlinuz(), "-initrd", initramfs,
		"-append", strings.Join(kargs, " "),
	}
	if o.Network == nil {
		args = append(args, "-nic", "none")
	} else {
		args = append(args, o.Network...)
	}
	for i, d := range o.Disks {
		if d.Path == "" {
			return nil, fmt.Errorf("disk %d: no path", i)
		}
		if len(d.Serial) > 20 || strings.ContainsAny(d.Serial, ", ") {
			return nil, fmt.Errorf("disk %d: serial %q: at most 20 bytes, no commas or spaces", i, d.Serial)
		}
		p, err := filepath.Abs(d.Path)
		if err != nil {
			return nil, err
		}
		// A comma in an option value is written twice.
		id := fmt.Sprintf("disk%d", i)
		drive := "if=none,id=" + id + ",file=" + strings.ReplaceAll(p, ",", ",,") + ",format=raw,cache=unsafe"
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		dev := "virtio-blk-pci,drive=" + id
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		args = append(args, "-drive", drive, "-device", dev)
	}
	return append(args, o.QEMUArgs...), nil
}

// console takes qemu's stdout (the serial console): it keeps it, writes
// it to the log file and the tee, and watches each line for the run's
// markers.
type console struct {
	nonce string
	file  io.Writer
	tee   io.Writer

	mu       sync.Mutex
	buf      bytes.Buffer
	line     []byte
	startAt  time.Time
	exitAt   time.Time
	setupErr string
	status   string
	exited   bool
	exit     chan struct{} // closed at the exit marker
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	_, _ = c.file.Write(p)
	if c.tee != nil {
		_, _ = c.tee.Write(p)
	}
	for _, b := range p {
		if b != '\n' {
			c.line = append(c.line, b)
			continue
		}
		c.scan(strings.TrimRight(string(c.line), "\r"))
		c.line = c.line[:0]
	}
	return len(p), nil
}

func (c *console) scan(line string) {
	kind, rest, ok := guest.ParseMarker(line, c.nonce)
	if !ok {
		return
	}
	now := time.Now()
	switch kind {
	case guest.Start:
		c.startAt = now
	case guest.SetupFailed:
		c.setupErr = rest
	case guest.Exit:
		if !c.exited {
			c.exited, c.status, c.exitAt = true, rest, now
			close(c.exit)
		}
	}
}

// lockedWriter serialises qemu's stderr with the console in the log file.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(s, "\r", ""), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
