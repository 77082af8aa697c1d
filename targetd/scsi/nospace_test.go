package scsi

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
)

// failingDev is a MemDev whose writes and syncs fail with the errors set,
// wrapped the way volume.Volume wraps an *os.PathError.
type failingDev struct {
	*MemDev
	mu                sync.Mutex
	writeErr, syncErr error
}

func (d *failingDev) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	err := d.writeErr
	d.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("volume mhc-web1-root: write %d bytes at %d: %w", len(p), off, &os.PathError{Op: "write", Path: "/srv/mhc-web1-root", Err: err})
	}
	return d.MemDev.WriteAt(p, off)
}

func (d *failingDev) Sync() error {
	d.mu.Lock()
	err := d.syncErr
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("volume mhc-web1-root: fdatasync: %w", err)
	}
	return d.MemDev.Sync()
}

func (d *failingDev) set(write, sync error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writeErr, d.syncErr = write, sync
}

func newFailingFixture(t *testing.T, mods ...func(*LUConfig)) (*fixture, *failingDev) {
	t.Helper()
	dev := &failingDev{MemDev: NewMemDev(testBlocks*512, true)}
	f := newFixture(t, append([]func(*LUConfig){func(c *LUConfig) { c.Dev = dev }}, mods...)...)
	return f, dev
}

// writeCommands are the Data-Out commands that write the medium, with
// their Data-Out.
func writeCommands() []struct {
	name string
	cdb  []byte
	data []byte
} {
	return []struct {
		name string
		cdb  []byte
		data []byte
	}{
		{"WRITE(6)", rw6(opWrite6, 8, 1), fill(512, 1)},
		{"WRITE(10)", rw10c(opWrite10, 0, 8, 1), fill(512, 1)},
		{"WRITE(16) FUA", rw16c(opWrite16, 0x08, 8, 1), fill(512, 1)},
		{"WRITE AND VERIFY(10)", rw10c(opWriteVerify10, 0, 8, 1), fill(512, 1)},
		{"COMPARE AND WRITE", cawCDB(8, 1), append(make([]byte, 512), fill(512, 1)...)},
		{"ORWRITE(16)", rw16c(opOrWrite16, 0, 8, 1), fill(512, 1)},
		{"WRITE SAME(16)", rw16c(opWriteSame16, 0, 8, 4), fill(512, 1)},
	}
}

// TestNoSpaceOnThinLU: a thin-provisioned LU whose device is out of space
// answers SPACE ALLOCATION FAILED WRITE PROTECT (07/27/07), as SBC-4 asks
// of thin provisioning, not MEDIUM ERROR: "the disk is bad" would send an
// operator to replace a disk that only needs space.
func TestNoSpaceOnThinLU(t *testing.T) {
	for _, cause := range []error{syscall.ENOSPC, syscall.EDQUOT} {
		f, dev := newFailingFixture(t, thin)
		dev.set(cause, nil)
		for _, c := range writeCommands() {
			t.Run(fmt.Sprintf("%v/%s", cause, c.name), func(t *testing.T) {
				requireSense(t, f.do(nexusA, c.cdb, c.data), SenseDataProtect, ascSpaceAllocFailedWP)
			})
		}
		// Out of space when the page cache is written back: the flush of
		// SYNCHRONIZE CACHE and of a write with the cache off.
		dev.set(nil, cause)
		requireSense(t, f.do(nexusA, rw10c(opSyncCache10, 0, 0, 0), nil), SenseDataProtect, ascSpaceAllocFailedWP)
		requireSense(t, f.do(nexusA, rw16c(opSyncCache16, 0, 0, 0), nil), SenseDataProtect, ascSpaceAllocFailedWP)
		requireSense(t, f.do(nexusA, rw10c(opWrite10, 0x08, 8, 1), fill(512, 2)), SenseDataProtect, ascSpaceAllocFailedWP)
	}
}

// TestWriteFailuresStayMediumErrors: other device errors, and running out
// of space on a fully provisioned LU (which never promised to allocate),
// remain MEDIUM ERROR, WRITE ERROR.
func TestWriteFailuresStayMediumErrors(t *testing.T) {
	f, dev := newFailingFixture(t, thin)
	dev.set(syscall.EIO, nil)
	for _, c := range writeCommands() {
		requireSense(t, f.do(nexusA, c.cdb, c.data), SenseMediumError, ascWriteError)
	}
	dev.set(nil, errors.New("an earlier fdatasync failed"))
	requireSense(t, f.do(nexusA, rw10c(opSyncCache10, 0, 0, 0), nil), SenseMediumError, ascWriteError)

	f, dev = newFailingFixture(t)
	dev.set(syscall.ENOSPC, syscall.ENOSPC)
	for _, c := range writeCommands() {
		requireSense(t, f.do(nexusA, c.cdb, c.data), SenseMediumError, ascWriteError)
	}
	requireSense(t, f.do(nexusA, rw10c(opSyncCache10, 0, 0, 0), nil), SenseMediumError, ascWriteError)
}

// TestNoSpaceOnStopFlush: the flush of START STOP UNIT (stop, no
// NO_FLUSH) that runs out of space answers like SYNCHRONIZE CACHE does on
// a thin LU, not MEDIUM ERROR.
func TestNoSpaceOnStopFlush(t *testing.T) {
	f, dev := newFailingFixture(t, thin)
	dev.set(nil, syscall.ENOSPC)
	stop := []byte{opStartStopUnit, 0, 0, 0, 0x00, 0}
	requireSense(t, f.do(nexusA, stop, nil), SenseDataProtect, ascSpaceAllocFailedWP)
	dev.set(nil, syscall.EIO)
	requireSense(t, f.do(nexusA, stop, nil), SenseMediumError, ascWriteError)
	dev.set(nil, nil)
	requireGood(t, f.do(nexusA, stop, nil))
}
