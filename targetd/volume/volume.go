package volume

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Volume is one open leg: a sparse file or an LV's block device. It
// implements scsi.BlockDev (checked in volume_test.go, so neither this
// package nor the CLI links the SCSI layer). Every method is safe for
// concurrent use: reads and writes are pread/pwrite on one descriptor.
//
// The size is read when the volume is opened and again on Refresh, not on
// every I/O: the SCSI layer must see the capacity change when it is told
// (and raise CAPACITY DATA HAS CHANGED), not in the middle of a command.
// Reads and writes beyond that size fail with ErrOutOfRange, so a stray
// write can never grow a file behind the initiator's back.
type Volume struct {
	name string
	path string
	f    *os.File
	dev  device
	size atomic.Int64

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	release   func() // tells the backend the volume is closed
}

// device is what differs between a file and a block device.
type device interface {
	size(f *os.File) (int64, error)
	discard(f *os.File, off, n int64) error
	discardZeroes() bool
}

func newVolume(name, path string, f *os.File, dev device, release func()) (*Volume, error) {
	v := &Volume{name: name, path: path, f: f, dev: dev, release: release}
	if _, err := v.Refresh(); err != nil {
		return nil, err
	}
	return v, nil
}

// Name is the volume name (mhc-<guest>-<disk>).
func (v *Volume) Name() string { return v.name }

// Path is the file or block device the volume was opened from.
func (v *Volume) Path() string { return v.path }

// Size is the size in bytes as of Open or the last Refresh.
func (v *Volume) Size() int64 { return v.size.Load() }

// Refresh re-reads the size (after the volume was extended) and returns it.
func (v *Volume) Refresh() (int64, error) {
	n, err := v.dev.size(v.f)
	if err != nil {
		return 0, v.wrap("reading the size", err)
	}
	v.size.Store(n)
	return n, nil
}

// ReadAt reads len(p) bytes at off. Like io.ReaderAt it returns io.EOF when
// the read reaches past the end, with the bytes before the end in p.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	size := v.Size()
	if off < 0 || off > size {
		return 0, v.wrap(fmt.Sprintf("read at %d", off), ErrOutOfRange)
	}
	want := len(p)
	if rest := size - off; int64(want) > rest {
		p = p[:rest]
	}
	n, err := v.f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return n, v.wrap(fmt.Sprintf("read %d bytes at %d", len(p), off), err)
	}
	if n < want {
		// Past the end of the volume, or a file shorter than its cached
		// size (cut by hand): either way the caller does not get len(p).
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes len(p) bytes at off, all or an error.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > v.Size() {
		return 0, v.wrap(fmt.Sprintf("write of %d bytes at %d (size %d)", len(p), off, v.Size()), ErrOutOfRange)
	}
	n, err := v.f.WriteAt(p, off)
	if err != nil {
		return n, v.wrap(fmt.Sprintf("write %d bytes at %d", len(p), off), err)
	}
	return n, nil
}

// Sync makes every completed write durable (fdatasync).
func (v *Volume) Sync() error {
	if err := fdatasync(v.f); err != nil {
		return v.wrap("fdatasync", err)
	}
	return nil
}

// Discard deallocates [off, off+n).
func (v *Volume) Discard(off, n int64) error {
	if off < 0 || n < 0 || off+n > v.Size() {
		return v.wrap(fmt.Sprintf("discard of %d bytes at %d (size %d)", n, off, v.Size()), ErrOutOfRange)
	}
	if n == 0 {
		return nil
	}
	if err := v.dev.discard(v.f, off, n); err != nil {
		return v.wrap(fmt.Sprintf("discard %d bytes at %d", n, off), err)
	}
	return nil
}

// DiscardZeroes reports whether discarded ranges read back as zeroes.
func (v *Volume) DiscardZeroes() bool { return v.dev.discardZeroes() }

// Close closes the volume; later calls return the first call's result.
func (v *Volume) Close() error {
	v.closeOnce.Do(func() {
		v.closed.Store(true)
		v.closeErr = v.f.Close()
		if v.release != nil {
			v.release()
		}
	})
	return v.closeErr
}

func (v *Volume) wrap(what string, err error) error {
	// After Close the os package reports "file already closed" or "use of
	// closed file" depending on the call; say one thing.
	if v.closed.Load() || errors.Is(err, os.ErrClosed) {
		err = ErrClosed
	}
	return fmt.Errorf("volume %s: %s: %w", v.name, what, err)
}
