package targetd

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/internal/syncbuf"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/targetd/scsi"
	"github.com/mhcodi/mhcodi/targetd/volume"
)

func TestLogLimit(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	l := logLimit{every: 30 * time.Second}
	ok, n := l.allow(t0)
	assert.True(t, ok, "the first line goes through")
	assert.Zero(t, n)
	for i := range 5 {
		ok, _ = l.allow(t0.Add(time.Duration(i+1) * time.Second))
		assert.False(t, ok, "held back within the interval")
	}
	ok, n = l.allow(t0.Add(30 * time.Second))
	assert.True(t, ok, "one line per interval")
	assert.Equal(t, 5, n, "saying how many were held back")
	ok, n = l.allow(t0.Add(90 * time.Second))
	assert.True(t, ok)
	assert.Zero(t, n)
	ok, _ = l.allow(t0.Add(89 * time.Second))
	assert.False(t, ok, "a clock stepping back does not open the gate")
}

// faultyVolume is a real volume whose device fails on demand: writes with
// writeErr, fdatasync with syncErr. It keeps volume.Volume's contract (a
// failed sync latches; failures go to the OnFailure function, the latch
// once), which the volume package tests on the real type; here it lets the
// daemon's handling of failures be tested without a broken disk.
type faultyVolume struct {
	*volume.Volume
	mu       sync.Mutex
	onFail   func(volume.Failure)
	writeErr error
	syncErr  error
	latched  error
}

func (v *faultyVolume) OnFailure(fn func(volume.Failure)) {
	v.mu.Lock()
	v.onFail = fn
	v.mu.Unlock()
	v.Volume.OnFailure(fn)
}

func (v *faultyVolume) fail(write, sync error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.writeErr, v.syncErr = write, sync
}

func (v *faultyVolume) WriteAt(p []byte, off int64) (int, error) {
	v.mu.Lock()
	err, latched, fn := v.writeErr, v.latched, v.onFail
	v.mu.Unlock()
	switch {
	case latched != nil:
		err = fmt.Errorf("volume %s: write refused: %w (%w)", v.Name(), volume.ErrSyncFailed, latched)
	case err != nil:
		err = fmt.Errorf("volume %s: write %d bytes at %d: %w", v.Name(), len(p), off, err)
	default:
		return v.Volume.WriteAt(p, off)
	}
	fn(volume.Failure{Op: volume.OpWrite, Err: err})
	return 0, err
}

func (v *faultyVolume) Sync() error {
	v.mu.Lock()
	f := volume.Failure{Op: volume.OpSync}
	switch {
	case v.latched != nil:
		f.Err = fmt.Errorf("volume %s: fdatasync refused: %w (%w)", v.Name(), volume.ErrSyncFailed, v.latched)
	case v.syncErr != nil:
		v.latched = fmt.Errorf("volume %s: fdatasync: %w", v.Name(), v.syncErr)
		f.Err, f.Latched = v.latched, true
	}
	fn := v.onFail
	v.mu.Unlock()
	if f.Err == nil {
		return v.Volume.Sync()
	}
	fn(f)
	return f.Err
}

func (v *faultyVolume) SyncErr() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.latched
}

// faultyDaemon is a daemon on the loopback config whose export serves a
// faultyVolume, logging into the returned buffer, with a clock the test
// moves.
func faultyDaemon(t *testing.T) (*Daemon, *faultyVolume, *syncbuf.Buffer, func(time.Duration)) {
	t.Helper()
	var logs syncbuf.Buffer
	var fv *faultyVolume
	var mu sync.Mutex
	now := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	d, err := New(Options{
		Config: loopback(t, nil), Node: "node-a", StateDir: t.TempDir(), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		openVolume: func(ctx context.Context, b volume.Backend, name string) (exportVolume, error) {
			v, err := b.Open(ctx, name)
			if err != nil {
				return nil, err
			}
			fv = &faultyVolume{Volume: v}
			return fv, nil
		},
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	})
	require.NoError(t, err)
	t.Cleanup(func() { d.Shutdown(context.Background()) })
	require.NotNil(t, fv)
	return d, fv, &logs, func(dt time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(dt) }
}

// scsiCmd runs one command on the export's LU 0, as its iSCSI session would.
func scsiCmd(t *testing.T, d *Daemon, cdb, data []byte) scsi.Result {
	t.Helper()
	d.mu.RLock()
	e := d.exports[demoIQN]
	d.mu.RUnlock()
	require.NotNil(t, e)
	res, err := e.target.Execute(context.Background(), &scsi.Command{
		Nexus: scsi.Nexus{InitiatorName: "iqn.2026-11.org.mhcodi:demo.node-b.initiator", ISID: "0x400001370000", TargetName: demoIQN, TPGT: 1, RelativePortID: 1},
		Attr:  scsi.Simple, CDB: cdb, Data: data, ExpectedLen: uint32(len(data)), Write: len(data) > 0,
	})
	require.NoError(t, err)
	return res
}

func write10(lba uint32) []byte {
	return []byte{0x2a, 0, byte(lba >> 24), byte(lba >> 16), byte(lba >> 8), byte(lba), 0, 0, 1, 0}
}

var syncCache10 = []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// senseOf returns a result's status and sense key, ASC and ASCQ.
func senseOf(res scsi.Result) [4]byte {
	k, a, q, _ := scsi.Sense(res.Sense)
	return [4]byte{byte(res.Status), k, a, q}
}

func clearUA(t *testing.T, d *Daemon) {
	t.Helper()
	for range 8 {
		if scsiCmd(t, d, make([]byte, 6), nil).Status == scsi.StatusGood {
			return
		}
	}
	t.Fatal("unit attentions do not clear")
}

// metricValue reads one series of a metric from the daemon's registry.
func metricValue(t *testing.T, d *Daemon, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := d.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// TestSyncFailureLatchedExport: once an fdatasync of an export's volume
// failed, SYNCHRONIZE CACHE keeps failing although the device "recovered"
// (the kernel reports a writeback error once), the failure is logged at
// ERROR once with the volume and the error, counted, and shown in the
// control API's export info and the metrics.
func TestSyncFailureLatchedExport(t *testing.T) {
	d, fv, logs, _ := faultyDaemon(t)
	clearUA(t, d)
	require.Equal(t, [4]byte{}, senseOf(scsiCmd(t, d, write10(0), make([]byte, 512))))
	require.Empty(t, d.Exports()[0].SyncError)

	fv.fail(nil, syscall.EIO)
	medium := [4]byte{byte(scsi.StatusCheckCondition), scsi.SenseMediumError, 0x0c, 0}
	assert.Equal(t, medium, senseOf(scsiCmd(t, d, syncCache10, nil)))
	fv.fail(nil, nil) // the next fdatasync would succeed, with the write lost
	for range 5 {
		assert.Equal(t, medium, senseOf(scsiCmd(t, d, syncCache10, nil)), "the sync failure is remembered")
		assert.Equal(t, medium, senseOf(scsiCmd(t, d, write10(1), make([]byte, 512))), "writes fail too")
	}

	lines := logs.Lines("level=ERROR", "fdatasync failed")
	require.Len(t, lines, 1, "logged once: %q", lines)
	assert.Contains(t, lines[0], "volume=mhc-demo-root")
	assert.Contains(t, lines[0], `err="volume mhc-demo-root: fdatasync: input/output error"`)
	assert.Empty(t, logs.Lines("volume I/O error"), "the refusals after the latch are not logged again")

	ex := d.Exports()
	require.Len(t, ex, 1)
	assert.Equal(t, "volume mhc-demo-root: fdatasync: input/output error", ex[0].SyncError)
	assert.Equal(t, 1.0, metricValue(t, d, "mhcodi_targetd_export_sync_failed", map[string]string{"target": demoIQN}))
	assert.Equal(t, 1.0, metricValue(t, d, "mhcodi_targetd_io_errors_total", map[string]string{"target": demoIQN, "op": "sync", "cause": "io"}))
	assert.Equal(t, 5.0, metricValue(t, d, "mhcodi_targetd_io_errors_total", map[string]string{"target": demoIQN, "op": "sync", "cause": "sync_failed"}))
	assert.Equal(t, 5.0, metricValue(t, d, "mhcodi_targetd_io_errors_total", map[string]string{"target": demoIQN, "op": "write", "cause": "sync_failed"}))
}

// TestFullVolumeLoggedAndCounted: writes to a volume whose filesystem is
// full reach the initiator as SPACE ALLOCATION FAILED WRITE PROTECT (the
// LU is thin) and the host logs them, one line per interval with the count
// of those held back, and counts every one.
func TestFullVolumeLoggedAndCounted(t *testing.T) {
	d, fv, logs, advance := faultyDaemon(t)
	clearUA(t, d)
	fv.fail(fmt.Errorf("pwrite: %w", syscall.ENOSPC), nil)
	noSpace := [4]byte{byte(scsi.StatusCheckCondition), scsi.SenseDataProtect, 0x27, 0x07}
	for range 50 {
		require.Equal(t, noSpace, senseOf(scsiCmd(t, d, write10(2), make([]byte, 512))))
		advance(time.Second)
	}
	lines := logs.Lines("level=ERROR", "volume out of space")
	require.Len(t, lines, 2, "one line per 30 s over 50 s: %q", lines)
	assert.Contains(t, lines[0], "volume=mhc-demo-root")
	assert.Contains(t, lines[0], "no space left on device")
	assert.Contains(t, lines[0], "suppressed=0")
	assert.Contains(t, lines[1], "suppressed=29")
	assert.Equal(t, 50.0, metricValue(t, d, "mhcodi_targetd_io_errors_total", map[string]string{"target": demoIQN, "op": "write", "cause": "no_space"}))
	assert.Empty(t, d.Exports()[0].SyncError, "a full disk does not latch by itself")
}
