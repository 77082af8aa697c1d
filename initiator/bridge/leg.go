package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mhcodi/mhcodi/initiator/iscsiclient"
	"github.com/mhcodi/mhcodi/initiator/nbd"
)

// Session is what a leg needs of an iSCSI session (*iscsiclient.Session).
type Session interface {
	Read(ctx context.Context, lba uint64, p []byte) error
	Write(ctx context.Context, lba uint64, p []byte, fua bool) error
	SynchronizeCache(ctx context.Context) error
	BlockSize() uint32
	Blocks() uint64
	Done() <-chan struct{}
	Err() error
	Logout(ctx context.Context) error
}

// DialFunc logs in a new session.
type DialFunc func(ctx context.Context) (Session, error)

// LegConfig configures one leg.
type LegConfig struct {
	// Name identifies the leg in logs and the status file
	// ("<disk>-<node>").
	Name string
	// Size is the disk size in bytes, from the cluster file: the NBD
	// export needs it before any session may be up.
	Size   int64
	Policy PolicyConfig
	// Stale: the ledger marks this leg stale, so the guest will wipe it
	// and never reads it before; a request finding it down fails at once
	// rather than after Policy.IOTimeout (qemu reads every disk's first
	// sector before it starts the guest, and a failover must not wait
	// the timeout for a leg on the host that just went down).
	Stale bool
	// CmdTimeout bounds one command on a live session (default 30 s); a
	// command that exceeds it ends the connection, like a SCSI command
	// timeout followed by session recovery in open-iscsi.
	CmdTimeout time.Duration
	Dial       DialFunc
	Log        *slog.Logger
	// OnChange is called (from the leg's goroutine) after every state
	// change.
	OnChange func()
}

// defaultBlockSize is assumed until a session reports its own.
const defaultBlockSize = 512

// Leg keeps one remote leg's iSCSI session up and serves it as an
// nbd.Backend: requests wait for a session up to the I/O timeout, then
// fail with EIO, which is what md's failfast needs to drop the leg.
type Leg struct {
	cfg LegConfig
	log *slog.Logger

	mu     sync.Mutex
	policy *Policy
	sess   Session
	// changed is closed and replaced whenever sess changes, waking the
	// requests waiting for a session.
	changed chan struct{}
	closed  bool

	blockSize atomic.Uint32
}

// NewLeg returns a leg; Run keeps its session.
func NewLeg(cfg LegConfig) *Leg {
	if cfg.CmdTimeout <= 0 {
		cfg.CmdTimeout = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	l := &Leg{cfg: cfg, log: cfg.Log.With("leg", cfg.Name), policy: NewPolicy(cfg.Policy, time.Now()), changed: make(chan struct{})}
	l.blockSize.Store(defaultBlockSize)
	return l
}

// Name is the leg's name.
func (l *Leg) Name() string { return l.cfg.Name }

// State reports the leg's state, since when, and the last reason.
func (l *Leg) State() (State, time.Time, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.policy.State()
}

func (l *Leg) report(c Change, ok bool) {
	if !ok {
		return
	}
	attrs := []any{"state", c.To, "from", c.From, "since", c.Since.Format(time.RFC3339Nano)}
	if c.Reason != "" {
		attrs = append(attrs, "reason", c.Reason)
	}
	switch c.To {
	case StateUp, StateStopped:
		l.log.Info("leg state", attrs...)
	case StateRefused:
		l.log.Error("leg state: the target refuses this initiator", attrs...)
	default:
		l.log.Warn("leg state", attrs...)
	}
	if l.cfg.OnChange != nil {
		l.cfg.OnChange()
	}
}

// Run logs in and keeps a session until ctx ends, then logs out.
func (l *Leg) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		l.mu.Lock()
		wait := time.Until(l.policy.NextAttempt())
		l.mu.Unlock()
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			l.stop()
			return
		case <-timer.C:
		}
		s, err := l.cfg.Dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				l.stop()
				return
			}
			var re iscsiclient.Refuser
			refused := errors.As(err, &re) && re.Refused()
			l.mu.Lock()
			c, ok := l.policy.LoginFailed(time.Now(), err.Error(), refused)
			l.mu.Unlock()
			l.report(c, ok)
			continue
		}
		if bs := s.BlockSize(); bs > 0 {
			l.blockSize.Store(bs)
			if have := int64(s.Blocks()) * int64(bs); have < l.cfg.Size {
				l.log.Warn("the target's LUN is smaller than the disk in the cluster file", "lun_bytes", have, "disk_bytes", l.cfg.Size)
			}
		}
		l.mu.Lock()
		l.setSessionLocked(s)
		c, ok := l.policy.LoginSucceeded(time.Now())
		l.mu.Unlock()
		l.report(c, ok)

		select {
		case <-s.Done():
		case <-ctx.Done():
		}
		l.mu.Lock()
		l.setSessionLocked(nil)
		l.mu.Unlock()
		if ctx.Err() != nil {
			lctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if err := s.Logout(lctx); err != nil {
				l.log.Warn("logout failed", "err", err)
			}
			cancel()
			l.stop()
			return
		}
		reason := "session ended"
		if err := s.Err(); err != nil {
			reason = err.Error()
		}
		l.mu.Lock()
		c, ok = l.policy.SessionLost(time.Now(), reason)
		l.mu.Unlock()
		l.report(c, ok)
	}
}

func (l *Leg) setSessionLocked(s Session) {
	l.sess = s
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *Leg) stop() {
	l.mu.Lock()
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
	c, ok := l.policy.Stopped(time.Now())
	l.mu.Unlock()
	l.report(c, ok)
}

// session returns the session, waiting for one until the I/O timeout
// counted from waitStart. A session that just failed a command (dead) is
// not returned again, even before Run noticed its end.
func (l *Leg) session(ctx context.Context, waitStart time.Time, dead Session) (Session, error) {
	l.mu.Lock()
	deadline := l.policy.Deadline(waitStart)
	if l.cfg.Stale {
		deadline = waitStart
	}
	for {
		if l.sess != nil && l.sess != dead {
			s := l.sess
			l.mu.Unlock()
			return s, nil
		}
		if l.closed {
			l.mu.Unlock()
			return nil, fmt.Errorf("leg %s: bridge stopping: %w", l.cfg.Name, nbd.EIO)
		}
		changed := l.changed
		state, _, reason := l.policy.State()
		l.mu.Unlock()
		wait := time.Until(deadline)
		if wait <= 0 {
			if l.cfg.Stale {
				return nil, fmt.Errorf("leg %s: stale and without an iSCSI session (%s: %s): %w", l.cfg.Name, state, reason, nbd.EIO)
			}
			return nil, fmt.Errorf("leg %s: no iSCSI session for %v (%s: %s): %w", l.cfg.Name, l.policy.IOTimeout(), state, reason, nbd.EIO)
		}
		t := time.NewTimer(wait)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("leg %s: %w: %w", l.cfg.Name, context.Cause(ctx), nbd.EIO)
		}
		t.Stop()
		l.mu.Lock()
	}
}

// do runs op on a session: waiting for one up to the I/O timeout, and
// running it once more on the next session if the connection died under
// it (a block read or write can be repeated safely).
func (l *Leg) do(ctx context.Context, op func(ctx context.Context, s Session) error) error {
	waitStart := time.Now()
	var dead Session
	for attempt := 0; ; attempt++ {
		s, err := l.session(ctx, waitStart, dead)
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, l.cfg.CmdTimeout)
		err = op(cctx, s)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, iscsiclient.ErrConnectionLost) && attempt == 0 && ctx.Err() == nil {
			waitStart, dead = time.Now(), s
			continue
		}
		return fmt.Errorf("leg %s: %w: %w", l.cfg.Name, err, errnoOf(err))
	}
}

// errnoOf maps a command's failure to the NBD error the guest sees.
func errnoOf(err error) nbd.Errno {
	var se *iscsiclient.SCSIError
	if errors.As(err, &se) && se.Status == iscsiclient.StatusCheckCondition {
		switch se.SenseKey {
		case iscsiclient.SenseIllegalRequest:
			return nbd.EINVAL
		case iscsiclient.SenseDataProtect:
			return nbd.EPERM
		}
	}
	return nbd.EIO
}

func (l *Leg) check(n int, off int64) (uint64, error) {
	bs := int64(l.blockSize.Load())
	if off%bs != 0 || int64(n)%bs != 0 {
		return 0, fmt.Errorf("leg %s: %d bytes at %d are not aligned to %d-byte blocks: %w", l.cfg.Name, n, off, bs, nbd.EINVAL)
	}
	return uint64(off / bs), nil
}

// ReadAt implements nbd.Backend.
func (l *Leg) ReadAt(ctx context.Context, p []byte, off int64) error {
	lba, err := l.check(len(p), off)
	if err != nil {
		return err
	}
	return l.do(ctx, func(ctx context.Context, s Session) error { return s.Read(ctx, lba, p) })
}

// WriteAt implements nbd.Backend.
func (l *Leg) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	lba, err := l.check(len(p), off)
	if err != nil {
		return err
	}
	return l.do(ctx, func(ctx context.Context, s Session) error { return s.Write(ctx, lba, p, fua) })
}

// Flush implements nbd.Backend.
func (l *Leg) Flush(ctx context.Context) error {
	return l.do(ctx, func(ctx context.Context, s Session) error { return s.SynchronizeCache(ctx) })
}

// Size implements nbd.Backend.
func (l *Leg) Size() int64 { return l.cfg.Size }

// BlockSize implements nbd.BlockSizer.
func (l *Leg) BlockSize() uint32 { return l.blockSize.Load() }
