package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// failures collects what a Volume reports through OnFailure.
type failures struct {
	mu   sync.Mutex
	list []Failure
}

func (f *failures) add(x Failure) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, x)
}

func (f *failures) get() []Failure {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Failure(nil), f.list...)
}

func (f *failures) latched() int {
	n := 0
	for _, x := range f.get() {
		if x.Latched {
			n++
		}
	}
	return n
}

func openTestVolume(t *testing.T, size int64) *Volume {
	t.Helper()
	ctx := context.Background()
	b, _ := newFileBackend(t)
	_, err := b.Create(ctx, "mhc-web1-root", size)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	t.Cleanup(func() { v.Close() })
	return v
}

// TestSyncFailureLatches is fsyncgate: the kernel reports a writeback
// error to one fdatasync and may drop the pages it could not write, so the
// next fdatasync succeeds with the data gone. The injected fdatasync fails
// once and then succeeds, as the kernel's does; the volume must go on
// failing every sync, refuse writes and discards, and still serve reads.
func TestSyncFailureLatches(t *testing.T) {
	v := openTestVolume(t, mib)
	var seen failures
	v.OnFailure(seen.add)
	_, err := v.WriteAt(bytes.Repeat([]byte{1}, 4096), 0)
	require.NoError(t, err)

	calls := 0
	v.fsync = func(*os.File) error {
		calls++
		if calls == 1 {
			return syscall.EIO
		}
		return nil
	}
	require.NoError(t, v.SyncErr(), "healthy before the failure")
	err = v.Sync()
	require.ErrorIs(t, err, syscall.EIO)
	assert.ErrorContains(t, err, "volume mhc-web1-root: fdatasync: input/output error")

	err = v.Sync()
	require.Error(t, err, "a later sync must not report the lost writes durable")
	assert.ErrorIs(t, err, ErrSyncFailed)
	assert.ErrorIs(t, err, syscall.EIO, "the later error carries the first one")
	assert.ErrorIs(t, v.SyncErr(), syscall.EIO)

	_, err = v.WriteAt(bytes.Repeat([]byte{2}, 4096), 8192)
	assert.ErrorIs(t, err, ErrSyncFailed, "a write the volume cannot make durable fails")
	assert.ErrorContains(t, err, "volume mhc-web1-root: write of 4096 bytes at 8192 refused")
	assert.ErrorIs(t, v.Discard(0, 4096), ErrSyncFailed)
	got := make([]byte, 4096*3)
	_, err = v.ReadAt(got, 0)
	require.NoError(t, err, "reads go on")
	assert.Equal(t, bytes.Repeat([]byte{1}, 4096), got[:4096], "the discard did nothing")
	assert.Equal(t, make([]byte, 4096), got[8192:], "the refused write wrote nothing")

	fs := seen.get()
	require.Len(t, fs, 4, "every failure is reported")
	assert.Equal(t, Failure{Op: OpSync, Err: fs[0].Err, Latched: true}, fs[0], "the first failed sync latches")
	assert.Equal(t, []Op{OpSync, OpWrite, OpDiscard}, []Op{fs[1].Op, fs[2].Op, fs[3].Op})
	assert.Equal(t, 1, seen.latched(), "the latch is reported once")
}

// TestSyncLatchReportedOnce: syncs racing each other latch once.
func TestSyncLatchReportedOnce(t *testing.T) {
	v := openTestVolume(t, mib)
	var seen failures
	v.OnFailure(seen.add)
	v.fsync = func(*os.File) error { return syscall.EIO }
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.Error(t, v.Sync())
		}()
	}
	wg.Wait()
	assert.Equal(t, 1, seen.latched())
	assert.Len(t, seen.get(), 16)
}

// TestReopenClearsLatch: the latch belongs to one open Volume; opening
// the volume again (targetd restarted after the device was fixed) serves
// writes again.
func TestReopenClearsLatch(t *testing.T) {
	ctx := context.Background()
	b, _ := newFileBackend(t)
	_, err := b.Create(ctx, "mhc-web1-root", mib)
	require.NoError(t, err)
	v, err := b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	v.fsync = func(*os.File) error { return syscall.EIO }
	require.Error(t, v.Sync())
	require.NoError(t, v.Close())
	v, err = b.Open(ctx, "mhc-web1-root")
	require.NoError(t, err)
	defer v.Close()
	assert.NoError(t, v.SyncErr())
	_, err = v.WriteAt(make([]byte, 512), 0)
	assert.NoError(t, err)
	assert.NoError(t, v.Sync())
}

// fixedSize is a device of a given size over any file: /dev/full in the
// tests below, a real device whose writes fail with ENOSPC and whose
// fdatasync fails with EINVAL.
type fixedSize int64

func (n fixedSize) size(*os.File) (int64, error)       { return int64(n), nil }
func (fixedSize) discard(*os.File, int64, int64) error { return syscall.EOPNOTSUPP }
func (fixedSize) discardZeroes() bool                  { return false }

// TestDeviceErrorsReported: errors from a real device reach OnFailure
// and the caller with their errno, so the SCSI layer can tell a full
// filesystem (ENOSPC) from a bad disk, and a real failed fdatasync
// latches.
func TestDeviceErrorsReported(t *testing.T) {
	f, err := os.OpenFile("/dev/full", os.O_RDWR, 0)
	require.NoError(t, err)
	v, err := newVolume("mhc-web1-root", "/dev/full", f, fixedSize(mib), nil)
	require.NoError(t, err)
	defer v.Close()
	var seen failures
	v.OnFailure(seen.add)

	_, err = v.WriteAt(make([]byte, 512), 0)
	require.ErrorIs(t, err, syscall.ENOSPC)
	assert.ErrorContains(t, err, "volume mhc-web1-root: write 512 bytes at 0")
	require.ErrorIs(t, v.Sync(), syscall.EINVAL)
	_, err = v.WriteAt(make([]byte, 512), 0)
	require.ErrorIs(t, err, ErrSyncFailed)

	fs := seen.get()
	require.Len(t, fs, 3)
	assert.Equal(t, OpWrite, fs[0].Op)
	assert.True(t, errors.Is(fs[0].Err, syscall.ENOSPC))
	assert.False(t, fs[0].Latched, "a failed write does not latch; the sync after it does")
	assert.Equal(t, OpSync, fs[1].Op)
	assert.True(t, fs[1].Latched)
}

// TestFailuresNotAboutTheDeviceUnreported: a request beyond the end and
// I/O racing Close say nothing about the device and do not latch.
func TestFailuresNotAboutTheDeviceUnreported(t *testing.T) {
	v := openTestVolume(t, mib)
	var seen failures
	v.OnFailure(seen.add)
	_, err := v.WriteAt(make([]byte, 512), mib)
	require.ErrorIs(t, err, ErrOutOfRange)
	require.NoError(t, v.Close())
	require.ErrorIs(t, v.Sync(), ErrClosed)
	_, err = v.WriteAt(make([]byte, 512), 0)
	require.ErrorIs(t, err, ErrClosed)
	assert.Empty(t, seen.get())
	assert.NoError(t, v.SyncErr())
}
