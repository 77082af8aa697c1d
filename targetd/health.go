package targetd

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/mhcodi/mhcodi/targetd/volume"
)

// failureLogInterval is how often one export logs a repeating volume
// failure (a full filesystem fails every write the guest retries); the
// failures in between are counted, in the next line and in the metrics.
const failureLogInterval = 30 * time.Second

// Causes of volume failures, as the io_errors_total metric labels them.
const (
	causeNoSpace    = "no_space"    // ENOSPC or EDQUOT: the filesystem or thin pool is full
	causeSyncFailed = "sync_failed" // refused because an earlier fdatasync failed (see volume.Volume.Sync)
	causeIO         = "io"          // any other device error
)

// failureCause classifies a volume failure for the log and the metrics.
func failureCause(err error) string {
	switch {
	case errors.Is(err, volume.ErrSyncFailed):
		return causeSyncFailed
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return causeNoSpace
	}
	return causeIO
}

// volumeHealth turns the failures an export's volume reports
// (volume.Volume.OnFailure) into what the operator of the host sees: log
// lines and metrics. Without it a full filesystem or a failing disk only
// reached the initiator, as sense data, and the host said nothing.
type volumeHealth struct {
	target, volume, path string
	log                  *slog.Logger
	now                  func() time.Time
	count                func(op volume.Op, cause string)

	mu      sync.Mutex
	noSpace logLimit
	ioErr   logLimit
}

func newVolumeHealth(target, vol, path string, log *slog.Logger, now func() time.Time, count func(volume.Op, string)) *volumeHealth {
	return &volumeHealth{
		target: target, volume: vol, path: path, log: log, now: now, count: count,
		noSpace: logLimit{every: failureLogInterval},
		ioErr:   logLimit{every: failureLogInterval},
	}
}

// failed is the volume's OnFailure function.
func (h *volumeHealth) failed(f volume.Failure) {
	cause := failureCause(f.Err)
	h.count(f.Op, cause)
	switch {
	case f.Latched:
		// Once per open volume: the volume reports Latched once.
		h.log.Error("fdatasync failed: writes acknowledged before it may be lost; the export fails every write and sync from now on",
			"target", h.target, "volume", h.volume, "path", h.path, "err", f.Err,
			"hint", "fix the device, restart mhcodi-targetd and resync this leg in full: a bitmap resync does not know what was lost")
		return
	case cause == causeSyncFailed:
		return // the latch was logged; the refusals that follow are counted
	}
	lim, msg := &h.ioErr, "volume I/O error: the initiator gets MEDIUM ERROR"
	if cause == causeNoSpace {
		lim, msg = &h.noSpace, "volume out of space: writes fail (the initiator gets SPACE ALLOCATION FAILED WRITE PROTECT) until space is freed where the volume lives"
	}
	h.mu.Lock()
	ok, suppressed := lim.allow(h.now())
	h.mu.Unlock()
	if !ok {
		return
	}
	h.log.Error(msg, "target", h.target, "volume", h.volume, "path", h.path, "op", string(f.Op), "err", f.Err,
		"suppressed", suppressed, "log_interval", lim.every.String())
}

// logLimit lets one log line through per interval and counts the ones it
// holds back, so that a failure repeating thousands of times a second
// logs a line per interval saying how many were left out. The zero
// interval lets every line through. It is not safe for concurrent use.
type logLimit struct {
	every      time.Duration
	last       time.Time
	logged     bool
	suppressed int
}

// allow reports whether a line may be logged at now and, if so, how many
// were held back since the last one.
func (l *logLimit) allow(now time.Time) (ok bool, suppressed int) {
	if l.logged && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	suppressed = l.suppressed
	l.logged, l.last, l.suppressed = true, now, 0
	return true, suppressed
}
