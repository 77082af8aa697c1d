package md

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrNoSuperblock is returned by Examine for a leg with no md superblock
// (a blank or wiped leg).
var ErrNoSuperblock = errors.New("no md superblock")

// Mdadm runs Debian's mdadm. Stdin is /dev/null, so a question mdadm
// would ask is answered "no" instead of hanging the boot.
type Mdadm struct {
	Path    string        // default /sbin/mdadm
	Timeout time.Duration // per command; default 60s
}

// Run runs mdadm with args and returns its standard output.
func (m Mdadm) Run(ctx context.Context, args ...string) (string, error) {
	path := m.Path
	if path == "" {
		path = "/sbin/mdadm"
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), fmt.Errorf("mdadm %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// System is the real md: mdadm, sysfs under Sysfs.Root, devices under
// DevRoot ("/dev").
type System struct {
	Mdadm
	Sysfs
	DevRoot string
}

// NewSystem is the guest's md: /sbin/mdadm, /sys, /dev.
func NewSystem() *System {
	return &System{Mdadm: Mdadm{Path: "/sbin/mdadm"}, Sysfs: Sysfs{Root: "/sys"}, DevRoot: "/dev"}
}

// Dev is the device node of a block device name.
func (s *System) Dev(name string) string { return filepath.Join(s.DevRoot, name) }

// Examine reads a leg's superblock; ErrNoSuperblock if it has none.
func (s *System) Examine(ctx context.Context, dev string) (*Super, error) {
	out, err := s.Run(ctx, "--examine", s.Dev(dev))
	if err != nil {
		if strings.Contains(err.Error(), "No md superblock detected") {
			return nil, fmt.Errorf("%s: %w", dev, ErrNoSuperblock)
		}
		return nil, err
	}
	sb, err := ParseExamine(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dev, err)
	}
	return sb, nil
}

// ExamineBitmap reads the internal bitmap stored on a leg.
func (s *System) ExamineBitmap(ctx context.Context, dev string) (Bitmap, error) {
	out, err := s.Run(ctx, "--examine-bitmap", s.Dev(dev))
	if err != nil {
		return Bitmap{}, err
	}
	b, err := ParseBitmap(out)
	if err != nil {
		return b, fmt.Errorf("%s: %w", dev, err)
	}
	return b, nil
}

// CreateSpec is a new RAID1.
type CreateSpec struct {
	MD   string // md0
	Name string // <guest>-<disk>
	// Devs are the legs in slot order; "" is a missing leg.
	Devs []string
	// WriteMostly names legs created write-mostly.
	WriteMostly map[string]bool
	BitmapChunk int64 // bytes
}

// Create creates a RAID1 with metadata 1.2 and an internal bitmap. No
// --assume-clean: the legs may differ, so md resyncs them. --run answers
// mdadm's questions (e.g. about an old file system on a leg) and
// --homehost=any keeps the array's name free of this guest's host name,
// which is "(none)" in an initramfs and something else after boot.
func (s *System) Create(ctx context.Context, c CreateSpec) error {
	args := []string{"--create", s.Dev(c.MD), "--run", "--metadata=1.2", "--level=1",
		"--raid-devices=" + strconv.Itoa(len(c.Devs)), "--bitmap=internal",
		"--bitmap-chunk=" + strconv.FormatInt(c.BitmapChunk>>10, 10) + "K",
		"--homehost=any", "--name=" + c.Name}
	// --write-mostly marks every device after it (create mode has no
	// --readwrite to end it), so it goes in front of the first
	// write-mostly leg only when no plain leg follows; otherwise the
	// flags are left to sysfs right after creation.
	wmFrom := len(c.Devs)
	for i := len(c.Devs) - 1; i >= 0 && c.Devs[i] != "" && c.WriteMostly[c.Devs[i]]; i-- {
		wmFrom = i
	}
	for i, d := range c.Devs {
		switch {
		case d == "":
			args = append(args, "missing")
		case i == wmFrom:
			args = append(args, "--write-mostly", s.Dev(d))
		default:
			args = append(args, s.Dev(d))
		}
	}
	_, err := s.Run(ctx, args...)
	return err
}

// Assemble assembles md from exactly devs and starts it even if degraded
// (--run): a guest is never refused its boot for a missing leg.
func (s *System) Assemble(ctx context.Context, md string, devs []string) error {
	args := []string{"--assemble", s.Dev(md), "--run"}
	for _, d := range devs {
		args = append(args, s.Dev(d))
	}
	_, err := s.Run(ctx, args...)
	return err
}

// Add adds a blank (or wiped) leg: a full recovery.
func (s *System) Add(ctx context.Context, md, dev string) error {
	_, err := s.Run(ctx, s.Dev(md), "--add", s.Dev(dev))
	return err
}

// ReAdd re-adds a returning leg through the bitmap.
func (s *System) ReAdd(ctx context.Context, md, dev string) error {
	_, err := s.Run(ctx, s.Dev(md), "--re-add", s.Dev(dev))
	return err
}

// Remove removes a faulty (or spare) member through sysfs, which needs no
// device node of the member: a vanished disk can still be removed.
func (s *System) Remove(md, dev string) error {
	return s.SetDevState(md, dev, "remove")
}

// Stop stops an array.
func (s *System) Stop(ctx context.Context, md string) error {
	_, err := s.Run(ctx, "--stop", s.Dev(md))
	return err
}

// wipeBytes is how much of a leg Wipe zeroes: the 1.2 superblock (at
// 4 KiB), its internal bitmap behind it and the start of the data, so
// neither md nor a file system probe finds anything of the old content.
const wipeBytes = 4 << 20

// Wipe makes a leg blank: mdadm --zero-superblock, then zeroes of the
// first 4 MiB, written through and synced.
func (s *System) Wipe(ctx context.Context, dev string) error {
	if _, err := s.Run(ctx, "--zero-superblock", s.Dev(dev)); err != nil && !strings.Contains(err.Error(), "Unrecognised md component device") {
		return err
	}
	f, err := os.OpenFile(s.Dev(dev), os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return fmt.Errorf("wiping %s: %w", dev, err)
	}
	defer f.Close()
	buf := alignedBuf(1 << 20)
	for off := int64(0); off < wipeBytes; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf, off); err != nil {
			return fmt.Errorf("wiping %s: %w", dev, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wiping %s: %w", dev, err)
	}
	return f.Close()
}

// Readable says whether dev answers a 4 KiB read that bypasses the page
// cache (O_DIRECT): a leg that went away (its iSCSI path is down) fails
// it, a cached read would not.
func (s *System) Readable(dev string) bool {
	f, err := os.OpenFile(s.Dev(dev), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := alignedBuf(4096)
	n, err := f.ReadAt(buf, 0)
	return err == nil && n == len(buf)
}

// alignedBuf returns a zeroed buffer aligned to 4 KiB, as O_DIRECT needs.
func alignedBuf(size int) []byte {
	const align = 4096
	b := make([]byte, size+align)
	off := 0
	if rem := int(uintptr(unsafe.Pointer(&b[0])) & (align - 1)); rem != 0 {
		off = align - rem
	}
	return b[off : off+size]
}
