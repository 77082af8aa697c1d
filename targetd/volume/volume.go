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
//
// A failed fdatasync is remembered (see Sync): from then on every Sync,
// WriteAt and Discard of this Volume fails, and only a fresh Open (after the
// device is fixed, and the leg resynced from its mirror) serves writes
// again.
type Volume struct {
	name  string
	path  string
	f     *os.File
	dev   device
	size  atomic.Int64
	fsync func(*os.File) error // fdatasync; tests inject failures

	// syncErr is the first failed fdatasync's error, once there was one.
	syncErr atomic.Pointer[error]
	// onFailure, when set, hears of every failed operation (OnFailure).
	onFailure atomic.Pointer[func(Failure)]

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	release   func() // tells the backend the volume is closed
}

// Op names a Volume operation in a Failure.
type Op string

// Operations a Failure can name.
const (
	OpRead    Op = "read"
	OpWrite   Op = "write"
	OpSync    Op = "sync"
	OpDiscard Op = "discard"
)

// Failure describes one failed operation of a Volume, for its owner's log
// and metrics (OnFailure). Failures that say nothing about the device are
// not reported: a request beyond the end (ErrOutOfRange) and an operation
// racing Close (ErrClosed).
type Failure struct {
	Op  Op
	Err error
	// Latched marks the failure that latched the volume: its first failed
	// fdatasync. It is reported exactly once per Volume.
	Latched bool
}

// device is what differs between a file and a block device.
type device interface {
	size(f *os.File) (int64, error)
	discard(f *os.File, off, n int64) error
	discardZeroes() bool
}

func newVolume(name, path string, f *os.File, dev device, release func()) (*Volume, error) {
	v := &Volume{name: name, path: path, f: f, dev: dev, fsync: fdatasync, release: release}
	if _, err := v.Refresh(); err != nil {
		return nil, err
	}
	return v, nil
}

// OnFailure makes fn hear of every failed read, write, sync and discard
// from now on (fn replaces an earlier one; nil stops the reports). fn runs
// on the failing call's goroutine, before the call returns, so it must be
// quick and must not call back into the Volume's I/O methods.
func (v *Volume) OnFailure(fn func(Failure)) {
	if fn == nil {
		v.onFailure.Store(nil)
		return
	}
	v.onFailure.Store(&fn)
}

// report tells the OnFailure function about a failed operation and
// returns err.
func (v *Volume) report(op Op, err error, latched bool) error {
	if errors.Is(err, ErrOutOfRange) || errors.Is(err, ErrClosed) {
		return err
	}
	if fn := v.onFailure.Load(); fn != nil {
		(*fn)(Failure{Op: op, Err: err, Latched: latched})
	}
	return err
}

// SyncErr is the error of the fdatasync that latched the volume, or nil
// while every fdatasync has succeeded.
func (v *Volume) SyncErr() error {
	if p := v.syncErr.Load(); p != nil {
		return *p
	}
	return nil
}

// latched returns the error a write, discard or sync of a latched volume
// fails with (wrapping ErrSyncFailed and the first fdatasync's error), or
// nil while the volume is healthy.
func (v *Volume) latched(what string) error {
	first := v.SyncErr()
	if first == nil {
		return nil
	}
	return fmt.Errorf("volume %s: %s refused: %w (%w)", v.name, what, ErrSyncFailed, first)
}

// Name is the volume name (mhc-<guest>-<disk>).
func (v *Volume) Name() string { return v.name }

// Path is the file or block device the volume was opened from.
func (v *Volume) Path() string { return v.path }

// Size is the size in bytes as of Open or the last Refresh.
func (v *Volume) Size() int64 { return v.size.Load() }

// Refresh re-reads the size (after the volume was extended) and returns it.
func (v *Volume) Refresh() (int64, error) {
	n, err := v.ReadSize()
	if err != nil {
		return 0, err
	}
	v.size.Store(n)
	return n, nil
}

// ReadSize reads the device's size now without changing the size the
// Volume serves (that takes Refresh): to check a volume before deciding to
// go on serving it.
func (v *Volume) ReadSize() (int64, error) {
	n, err := v.dev.size(v.f)
	if err != nil {
		return 0, v.wrap("reading the size", err)
	}
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
		return n, v.report(OpRead, v.wrap(fmt.Sprintf("read %d bytes at %d", len(p), off), err), false)
	}
	if n < want {
		// Past the end of the volume, or a file shorter than its cached
		// size (cut by hand): either way the caller does not get len(p).
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes len(p) bytes at off, all or an error. A latched volume
// (see Sync) writes nothing and fails.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > v.Size() {
		return 0, v.wrap(fmt.Sprintf("write of %d bytes at %d (size %d)", len(p), off, v.Size()), ErrOutOfRange)
	}
	if err := v.latched(fmt.Sprintf("write of %d bytes at %d", len(p), off)); err != nil {
		return 0, v.report(OpWrite, err, false)
	}
	n, err := v.f.WriteAt(p, off)
	if err != nil {
		return n, v.report(OpWrite, v.wrap(fmt.Sprintf("write %d bytes at %d", len(p), off), err), false)
	}
	return n, nil
}

// Sync makes every completed write durable (fdatasync).
//
// A failed fdatasync latches the volume: this Sync and every later one
// fail, and so do WriteAt and Discard. The kernel reports a writeback
// error to one fdatasync only and may have dropped the dirty pages it
// could not write, so a second fdatasync succeeds although the writes
// acknowledged before it are lost (PostgreSQL's "fsyncgate", 2018); taking
// its word would let SYNCHRONIZE CACHE answer GOOD for data that is gone.
// Later writes fail too, rather than being acknowledged into a cache that
// can no longer be made durable: the guest's md then fails this leg at its
// first write, not at its next flush, and serves from the other leg.
// Reads go on (the operator may want what is left); only a fresh Open
// clears the latch.
func (v *Volume) Sync() error {
	if err := v.latched("fdatasync"); err != nil {
		return v.report(OpSync, err, false)
	}
	err := v.fsync(v.f)
	if err == nil {
		return nil
	}
	werr := v.wrap("fdatasync", err)
	if errors.Is(werr, ErrClosed) {
		return werr // a close racing the sync, not a device failure
	}
	first := v.syncErr.CompareAndSwap(nil, &werr)
	return v.report(OpSync, werr, first)
}

// Discard deallocates [off, off+n).
func (v *Volume) Discard(off, n int64) error {
	if off < 0 || n < 0 || off+n > v.Size() {
		return v.wrap(fmt.Sprintf("discard of %d bytes at %d (size %d)", n, off, v.Size()), ErrOutOfRange)
	}
	if n == 0 {
		return nil
	}
	if err := v.latched(fmt.Sprintf("discard of %d bytes at %d", n, off)); err != nil {
		return v.report(OpDiscard, err, false)
	}
	if err := v.dev.discard(v.f, off, n); err != nil {
		return v.report(OpDiscard, v.wrap(fmt.Sprintf("discard %d bytes at %d", n, off), err), false)
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
