package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/initiator/iscsiclient"
	"github.com/mhcodi/mhcodi/initiator/nbd"
	"github.com/mhcodi/mhcodi/iscsi/text"
)

// fakeSession is a session whose commands the test scripts.
type fakeSession struct {
	read   func(ctx context.Context, lba uint64, p []byte) error
	done   chan struct{}
	once   sync.Once
	logout atomic.Bool
}

func newFake(read func(context.Context, uint64, []byte) error) *fakeSession {
	return &fakeSession{read: read, done: make(chan struct{})}
}

func (f *fakeSession) die() { f.once.Do(func() { close(f.done) }) }

func (f *fakeSession) Read(ctx context.Context, lba uint64, p []byte) error {
	return f.read(ctx, lba, p)
}
func (f *fakeSession) Write(ctx context.Context, lba uint64, p []byte, fua bool) error {
	return f.read(ctx, lba, p)
}
func (f *fakeSession) SynchronizeCache(context.Context) error { return nil }
func (f *fakeSession) BlockSize() uint32                      { return 512 }
func (f *fakeSession) Blocks() uint64                         { return 2048 }
func (f *fakeSession) Done() <-chan struct{}                  { return f.done }
func (f *fakeSession) Err() error                             { return iscsiclient.ErrConnectionLost }
func (f *fakeSession) Logout(context.Context) error           { f.logout.Store(true); f.die(); return nil }

// dialer hands out scripted dial results, one per login attempt.
type dialer struct {
	results chan func() (Session, error)
	calls   atomic.Int32
}

func newDialer() *dialer { return &dialer{results: make(chan func() (Session, error), 16)} }

func (d *dialer) dial(ctx context.Context) (Session, error) {
	d.calls.Add(1)
	select {
	case r := <-d.results:
		return r()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *dialer) up(s Session) { d.results <- func() (Session, error) { return s, nil } }
func (d *dialer) fail(err error) {
	d.results <- func() (Session, error) { return nil, err }
}

func startLeg(t *testing.T, d *dialer, changes *atomic.Int32) *Leg {
	t.Helper()
	return startLegWith(t, d, changes, false)
}

func startLegWith(t *testing.T, d *dialer, changes *atomic.Int32, stale bool) *Leg {
	t.Helper()
	l := NewLeg(LegConfig{Name: "root-node-a", Size: 1 << 20, Dial: d.dial, Stale: stale,
		Policy:   PolicyConfig{IOTimeout: 300 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond, RefusedBackoff: 20 * time.Millisecond},
		OnChange: func() { changes.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

func waitState(t *testing.T, l *Leg, want State) {
	t.Helper()
	require.Eventually(t, func() bool { s, _, _ := l.State(); return s == want }, 2*time.Second, 5*time.Millisecond)
}

func ok(context.Context, uint64, []byte) error { return nil }

func TestLegWaitsThenEIO(t *testing.T) {
	d := newDialer()
	var changes atomic.Int32
	l := startLeg(t, d, &changes)
	d.fail(errors.New("connection refused"))
	start := time.Now()
	err := l.ReadAt(context.Background(), make([]byte, 512), 0)
	took := time.Since(start)
	assert.ErrorIs(t, err, nbd.EIO)
	assert.Equal(t, nbd.EIO, nbd.ErrnoOf(err))
	assert.Contains(t, err.Error(), "connection refused", "the reason travels with the error")
	assert.InDelta(t, 300, took.Milliseconds(), 150, "waited the I/O timeout")
}

// A stale leg (the guest wipes it anyway) that is down fails requests at
// once: a failover must not wait for the host that just went down. Once
// up it serves like any other leg.
func TestLegStaleFailsAtOnceWhileDown(t *testing.T) {
	d := newDialer()
	var changes atomic.Int32
	l := startLegWith(t, d, &changes, true)
	start := time.Now()
	err := l.ReadAt(context.Background(), make([]byte, 512), 0)
	assert.ErrorIs(t, err, nbd.EIO)
	assert.Contains(t, err.Error(), "stale")
	assert.Less(t, time.Since(start), 100*time.Millisecond, "did not wait the 300 ms I/O timeout")

	d.up(newFake(ok))
	waitState(t, l, StateUp)
	require.NoError(t, l.ReadAt(context.Background(), make([]byte, 512), 0))
}

func TestLegRequestPendingUntilUp(t *testing.T) {
	d := newDialer()
	var changes atomic.Int32
	l := startLeg(t, d, &changes)
	errc := make(chan error, 1)
	go func() { errc <- l.ReadAt(context.Background(), make([]byte, 512), 512) }()
	time.Sleep(100 * time.Millisecond)
	d.up(newFake(ok))
	require.NoError(t, <-errc)
	waitState(t, l, StateUp)
}

func TestLegRetriesOnceOnNewSession(t *testing.T) {
	d := newDialer()
	var changes atomic.Int32
	l := startLeg(t, d, &changes)
	first := newFake(nil)
	first.read = func(context.Context, uint64, []byte) error {
		first.die()
		return fmt.Errorf("READ(16): %w: the target closed the connection", iscsiclient.ErrConnectionLost)
	}
	d.up(first)
	waitState(t, l, StateUp)
	var got atomic.Int32
	second := newFake(func(context.Context, uint64, []byte) error { got.Add(1); return nil })
	d.up(second)
	require.NoError(t, l.ReadAt(context.Background(), make([]byte, 512), 0))
	assert.Equal(t, int32(1), got.Load(), "ran again on the new session")

	// Lost twice: EIO.
	third := newFake(nil)
	third.read = func(context.Context, uint64, []byte) error {
		third.die()
		return iscsiclient.ErrConnectionLost
	}
	second.die()
	d.up(third)
	require.Eventually(t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.sess == third
	}, 2*time.Second, time.Millisecond)
	fourth := newFake(nil)
	fourth.read = third.read
	d.up(fourth)
	err := l.ReadAt(context.Background(), make([]byte, 512), 0)
	assert.ErrorIs(t, err, nbd.EIO)
	assert.ErrorIs(t, err, iscsiclient.ErrConnectionLost)
}

func TestLegErrors(t *testing.T) {
	d := newDialer()
	var changes atomic.Int32
	l := startLeg(t, d, &changes)
	d.up(newFake(func(context.Context, uint64, []byte) error {
		return &iscsiclient.SCSIError{Op: "READ(16)", Status: iscsiclient.StatusCheckCondition, SenseKey: iscsiclient.SenseIllegalRequest, ASC: 0x21}
	}))
	err := l.ReadAt(context.Background(), make([]byte, 512), 0)
	assert.Equal(t, nbd.EINVAL, nbd.ErrnoOf(err))
	err = l.ReadAt(context.Background(), make([]byte, 100), 0)
	assert.Equal(t, nbd.EINVAL, nbd.ErrnoOf(err), "unaligned")
	assert.Equal(t, nbd.EIO, errnoOf(&iscsiclient.SCSIError{Status: iscsiclient.StatusReservationConflict}))
}

func TestLegRefusedReportedOnce(t *testing.T) {
	d := newDialer()
	var changes atomic.Int32
	l := startLeg(t, d, &changes)
	refusal := &iscsiclient.LoginError{Status: text.StatusAuthFailed, Target: "iqn.x"}
	for range 5 {
		d.fail(refusal)
	}
	require.Eventually(t, func() bool { return d.calls.Load() >= 6 }, 2*time.Second, 5*time.Millisecond)
	st, _, reason := l.State()
	assert.Equal(t, StateRefused, st)
	assert.Contains(t, reason, "authentication failure")
	assert.Equal(t, int32(1), changes.Load(), "five refusals, one change")
	d.up(newFake(ok))
	waitState(t, l, StateUp)
}

func TestLegLogsOutWhenStopped(t *testing.T) {
	d := newDialer()
	var changes atomic.Int32
	l := NewLeg(LegConfig{Name: "x", Size: 4096, Dial: d.dial, OnChange: func() { changes.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	s := newFake(ok)
	d.up(s)
	waitState(t, l, StateUp)
	cancel()
	<-done
	assert.True(t, s.logout.Load())
	st, _, _ := l.State()
	assert.Equal(t, StateStopped, st)
	err := l.ReadAt(context.Background(), make([]byte, 512), 0)
	assert.ErrorIs(t, err, nbd.EIO, "a stopped leg fails at once")
}
