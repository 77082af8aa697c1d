package fenced

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// LeaseStep is how often the lease keeper checks the last renewal and
// feeds the watchdog.
const LeaseStep = time.Second

// LeaseFresh reports whether a lease last renewed at last may still be
// relied on at now: another node may take the guest over once last+ttl
// has passed, so the owner stops trusting it margin earlier, leaving
// itself that long to destroy its guests.
func LeaseFresh(now, last time.Time, ttl, margin time.Duration) bool {
	return !last.IsZero() && now.Before(last.Add(ttl-margin))
}

// LeaseKeeper is the owner's side of the lease (quorum mode): while the
// Store renews the node's lease, it feeds the watchdog; once the last
// renewal is older than ttl−margin it destroys every guest of this node,
// every step, and stops feeding, so that a fenced too hung to destroy
// anything gets the host reset by the watchdog instead.
type LeaseKeeper struct {
	TTL, Margin time.Duration
	// Renewed is the Store's LastRenewed.
	Renewed func() time.Time
	// SelfFence destroys every guest running here and says how many.
	SelfFence func(ctx context.Context, reason string) int
	// Dog is the watchdog device, nil for none.
	Dog *Watchdog
	Log *slog.Logger

	mu    sync.Mutex
	floor time.Time // the persisted renewal of a previous fenced
	file  *renewalFile
	stale bool
	fresh bool
}

// NewLeaseKeeper returns a keeper that persists renewals in file ("" for
// none) and starts from the one persisted there.
func NewLeaseKeeper(ttl, margin time.Duration, renewed func() time.Time, selfFence func(context.Context, string) int, dog *Watchdog, file string, log *slog.Logger) *LeaseKeeper {
	k := &LeaseKeeper{TTL: ttl, Margin: margin, Renewed: renewed, SelfFence: selfFence, Dog: dog, Log: log, file: &renewalFile{path: file}}
	k.floor = k.file.load()
	return k
}

// last is the newest renewal known: the Store's, or the one a previous
// fenced persisted (a restarted fenced gets what is left of the old lease,
// not more).
func (k *LeaseKeeper) last() time.Time {
	r := k.Renewed()
	if k.floor.After(r) {
		return k.floor
	}
	return r
}

// Fresh says whether the lease was fresh at the last step.
func (k *LeaseKeeper) Fresh() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fresh
}

// Step applies the rule at now and reports whether the lease is fresh.
func (k *LeaseKeeper) Step(ctx context.Context, now time.Time) bool {
	k.mu.Lock()
	last := k.last()
	fresh := LeaseFresh(now, last, k.TTL, k.Margin)
	k.fresh = fresh
	wasStale := k.stale
	k.stale = !fresh
	k.mu.Unlock()
	if fresh {
		if k.Dog != nil {
			if err := k.Dog.Feed(); err != nil {
				k.Log.Error("cannot feed the watchdog", "device", k.Dog.Path(), "err", err)
			}
		}
		if wasStale {
			k.Log.Info("lease renewed again", "renewed", last)
		}
		if err := k.file.store(last); err != nil {
			k.Log.Warn("cannot persist the lease renewal time", "err", err)
		}
		return true
	}
	reason := "the lease was never renewed"
	if !last.IsZero() {
		reason = fmt.Sprintf("the lease was last renewed %s ago, the limit is %s (lease_ttl %s − lease_margin %s)",
			now.Sub(last).Round(time.Millisecond), k.TTL-k.Margin, k.TTL, k.Margin)
	}
	switch {
	case wasStale:
	case last.IsZero():
		// A fenced that just started: not an alarm, but guests found
		// running here are still destroyed until the lease is granted.
		k.Log.Info("no lease yet: guests here are destroyed and the watchdog is not fed until etcd grants it", "reason", reason)
	default:
		k.Log.Warn("lease not renewed: guests here are destroyed and the watchdog is no longer fed", "reason", reason)
	}
	if n := k.SelfFence(ctx, reason); n > 0 {
		k.Log.Error("SELF-FENCE: destroyed every guest of this node before its lease can expire elsewhere",
			"guests", n, "reason", reason)
	}
	return false
}

// Run steps every LeaseStep until ctx ends.
func (k *LeaseKeeper) Run(ctx context.Context, clock Clock) {
	t := time.NewTicker(LeaseStep)
	defer t.Stop()
	for {
		k.Step(ctx, clock.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Watchdog is a Linux watchdog device (/dev/watchdog): once opened it
// resets the host unless written to within its timeout; writing 'V' before
// closing disarms it (the magic close of a clean shutdown).
type Watchdog struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// OpenWatchdog opens and arms the device and asks it for timeout (whole
// seconds, at least 2). A device that cannot change its timeout keeps its
// own, which is logged: the backup then comes later than it should.
func OpenWatchdog(path string, timeout time.Duration, log *slog.Logger) (*Watchdog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("watchdog %s: %w", path, err)
	}
	secs := int(timeout / time.Second)
	if secs < 2 {
		secs = 2
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, secs); err != nil {
		log.Warn("watchdog: cannot set its timeout; it keeps its own", "device", path, "want", time.Duration(secs)*time.Second, "err", err)
	} else {
		log.Info("watchdog armed", "device", path, "timeout", time.Duration(secs)*time.Second)
	}
	return &Watchdog{path: path, f: f}, nil
}

// Path is the device's path.
func (w *Watchdog) Path() string { return w.path }

// Feed pets the watchdog.
func (w *Watchdog) Feed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("watchdog %s is closed", w.path)
	}
	_, err := w.f.Write([]byte{0})
	return err
}

// Close disarms the device with the magic 'V' and closes it; only a clean
// shutdown does this, so a crashed fenced still gets the host reset.
func (w *Watchdog) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	_, werr := w.f.Write([]byte{'V'})
	cerr := w.f.Close()
	w.f = nil
	if werr != nil {
		return fmt.Errorf("watchdog %s: magic close: %w", w.path, werr)
	}
	return cerr
}
