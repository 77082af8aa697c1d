package iscsi

import (
	"context"
	"sync"
)

// byteBudget is a weighted semaphore of bytes, first come first served: it
// bounds the Data-In buffers the server's sessions hold at once, so that
// many sessions of large reads cost a bounded amount of memory instead of
// QueueDepth buffers each.
type byteBudget struct {
	mu      sync.Mutex
	size    int64
	free    int64
	waiters []*budgetWaiter
}

type budgetWaiter struct {
	n       int64
	ready   chan struct{}
	granted bool
}

func newByteBudget(size int64) *byteBudget { return &byteBudget{size: size, free: size} }

// acquire takes n bytes (at most the whole budget), waiting for them until
// ctx ends. It returns what it took, for release.
func (b *byteBudget) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(n, b.size)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.free >= n {
		b.free -= n
		b.mu.Unlock()
		return n, nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return n, nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	if w.granted {
		b.mu.Unlock()
		b.release(n)
		return 0, ctx.Err()
	}
	for i, x := range b.waiters {
		if x == w {
			b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
			break
		}
	}
	b.grantLocked() // the next in line may fit now
	b.mu.Unlock()
	return 0, ctx.Err()
}

// tryAcquire takes n bytes (at most the whole budget) if they are free
// and nobody waits.
func (b *byteBudget) tryAcquire(n int64) (int64, bool) {
	n = min(n, b.size)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.waiters) > 0 || b.free < n {
		return 0, false
	}
	b.free -= n
	return n, true
}

// release gives back n bytes from acquire.
func (b *byteBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.free += n
	b.grantLocked()
	b.mu.Unlock()
}

func (b *byteBudget) grantLocked() {
	for len(b.waiters) > 0 && b.free >= b.waiters[0].n {
		w := b.waiters[0]
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
		b.free -= w.n
		w.granted = true
		close(w.ready)
	}
}
