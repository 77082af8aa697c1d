package fenced

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLeaseFresh(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	ttl, margin := 10*time.Second, 3*time.Second
	assert.False(t, LeaseFresh(t0, time.Time{}, ttl, margin), "never renewed")
	assert.True(t, LeaseFresh(t0.Add(6999*time.Millisecond), t0, ttl, margin))
	assert.False(t, LeaseFresh(t0.Add(7*time.Second), t0, ttl, margin), "at ttl−margin the owner stops trusting it")
}

// keeperRig is a LeaseKeeper on a fake clock and a fake renewal time,
// with a temporary file as its watchdog device.
type keeperRig struct {
	k       *LeaseKeeper
	dogPath string
	mu      sync.Mutex
	renewed time.Time
	fenced  []string
	running int
}

func newKeeperRig(t *testing.T, stateFile string) *keeperRig {
	r := &keeperRig{dogPath: filepath.Join(t.TempDir(), "watchdog"), running: 2}
	require.NoError(t, os.WriteFile(r.dogPath, nil, 0o600))
	dog, err := OpenWatchdog(r.dogPath, 3*time.Second, testLogger(t))
	require.NoError(t, err)
	t.Cleanup(func() { dog.Close() })
	r.k = NewLeaseKeeper(10*time.Second, 3*time.Second,
		func() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.renewed },
		func(_ context.Context, reason string) int {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.fenced = append(r.fenced, reason)
			n := r.running
			r.running = 0
			return n
		}, dog, stateFile, testLogger(t))
	return r
}

func (r *keeperRig) feeds(t *testing.T) int64 {
	fi, err := os.Stat(r.dogPath)
	require.NoError(t, err)
	return fi.Size()
}

func TestLeaseKeeperSelfFencesBeforeExpiry(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
	r := newKeeperRig(t, filepath.Join(t.TempDir(), "lease-renewed"))
	r.renewed = clock.Now()

	// Renewed once, then never again (etcd unreachable): every step is
	// a second; fresh up to ttl−margin = 7 s, the watchdog fed each time.
	var fencedAt time.Duration
	for i := 0; i <= 10; i++ {
		fresh := r.k.Step(ctx, clock.Now())
		elapsed := time.Duration(i) * time.Second
		if elapsed < 7*time.Second {
			assert.True(t, fresh, "at %v", elapsed)
			assert.EqualValues(t, i+1, r.feeds(t), "fed at %v", elapsed)
			assert.Empty(t, r.fenced)
		} else if fencedAt == 0 {
			assert.False(t, fresh)
			fencedAt = elapsed
		}
		clock.add(time.Second)
	}
	// The guests went at 7 s, 3 s before another node may take them
	// (ttl 10 s), and the watchdog was not fed from then on.
	assert.Equal(t, 7*time.Second, fencedAt)
	require.NotEmpty(t, r.fenced)
	assert.Contains(t, r.fenced[0], "last renewed 7s ago")
	assert.EqualValues(t, 7, r.feeds(t), "not fed after the lease went stale")
	assert.False(t, r.k.Fresh())

	// Renewed again: fed again, nothing more destroyed.
	n := len(r.fenced)
	r.mu.Lock()
	r.renewed = clock.Now()
	r.mu.Unlock()
	assert.True(t, r.k.Step(ctx, clock.Now()))
	assert.EqualValues(t, 8, r.feeds(t))
	assert.Len(t, r.fenced, n)
}

func TestLeaseKeeperRestartGetsOnlyWhatIsLeft(t *testing.T) {
	ctx := context.Background()
	state := filepath.Join(t.TempDir(), "lease-renewed")
	t0 := time.Now()
	r := newKeeperRig(t, state)
	r.renewed = t0
	require.True(t, r.k.Step(ctx, t0.Add(time.Second)))

	// A new fenced, whose Store has not renewed yet: the old renewal
	// counts, so it has until t0+7s, not a fresh lease.
	r2 := newKeeperRig(t, state)
	assert.True(t, r2.k.Step(ctx, t0.Add(5*time.Second)), "what is left of the old lease")
	assert.Empty(t, r2.fenced)
	assert.False(t, r2.k.Step(ctx, t0.Add(7*time.Second)))
	assert.NotEmpty(t, r2.fenced)
}

func TestWatchdogMagicClose(t *testing.T) {
	p := filepath.Join(t.TempDir(), "watchdog")
	require.NoError(t, syscall.Mkfifo(p, 0o600))
	got := make(chan []byte, 1)
	go func() {
		b, _ := os.ReadFile(p) // until the writer closes
		got <- b
	}()
	dog, err := OpenWatchdog(p, 3*time.Second, testLogger(t))
	require.NoError(t, err)
	require.NoError(t, dog.Feed())
	require.NoError(t, dog.Feed())
	require.NoError(t, dog.Close())
	select {
	case b := <-got:
		assert.Equal(t, []byte{0, 0, 'V'}, b, "two feeds, then the magic close")
	case <-time.After(5 * time.Second):
		t.Fatal("the fifo's reader saw no close")
	}
	assert.Error(t, dog.Feed())
}
