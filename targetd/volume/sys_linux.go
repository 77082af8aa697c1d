package volume

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The helpers here reach the file descriptor through SyscallConn, never a
// saved fd number: a call racing Close then fails with os.ErrClosed instead
// of hitting whatever file reuses the number.

// control runs fn on f's descriptor and returns fn's error, or the error of
// reaching the descriptor (os.ErrClosed after Close).
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// fdatasync flushes f's data (and the metadata needed to read it back).
func fdatasync(f *os.File) error {
	return control(f, func(fd int) error { return ignoringEINTR(func() error { return unix.Fdatasync(fd) }) })
}

// punchHole deallocates [off, off+n) of a file without changing its size;
// the range reads back as zeroes.
func punchHole(f *os.File, off, n int64) error {
	return control(f, func(fd int) error {
		return ignoringEINTR(func() error {
			return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
		})
	})
}

// blockDevSize is a block device's size in bytes (BLKGETSIZE64).
func blockDevSize(f *os.File) (int64, error) {
	var size uint64
	err := control(f, func(fd int) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("BLKGETSIZE64: %w", err)
	}
	return int64(size), nil
}

// blockDevDiscard discards [off, off+n) of a block device (BLKDISCARD). The
// kernel wants both aligned to the logical block size.
func blockDevDiscard(f *os.File, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	err := control(f, func(fd int) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKDISCARD, uintptr(unsafe.Pointer(&r[0])))
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("BLKDISCARD: %w", err)
	}
	return nil
}

// lockShared takes a shared flock on f without waiting. Every open Volume
// holds one, so Remove in any process (which needs the exclusive lock) sees
// that the volume is in use.
func lockShared(f *os.File) error {
	return control(f, func(fd int) error { return unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB) })
}

// lockExclusive takes an exclusive flock on f without waiting; it fails with
// EWOULDBLOCK while any other open file description holds a lock.
func lockExclusive(f *os.File) error {
	return control(f, func(fd int) error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) })
}

// isWouldBlock reports whether err is flock's "someone else holds it".
func isWouldBlock(err error) bool { return errors.Is(err, unix.EWOULDBLOCK) }

// fsyncDir makes a create, rename or unlink in dir durable.
func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func ignoringEINTR(fn func() error) error {
	for {
		err := fn()
		if err != unix.EINTR {
			return err
		}
	}
}
