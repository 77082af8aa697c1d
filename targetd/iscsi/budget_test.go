package iscsi

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestByteBudget(t *testing.T) {
	b := newByteBudget(10)
	ctx := context.Background()
	n, err := b.acquire(ctx, 6)
	require.NoError(t, err)
	assert.EqualValues(t, 6, n)

	// A request for more than the budget waits for all of it.
	got := make(chan int64, 2)
	go func() { n, _ := b.acquire(ctx, 100); got <- n }()
	select {
	case <-got:
		t.Fatal("granted while 6 of 10 bytes are out")
	case <-time.After(20 * time.Millisecond):
	}
	b.release(6)
	assert.EqualValues(t, 10, <-got)

	// A waiter whose context ends gives up its place, and one behind it
	// is served when the bytes come back.
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := b.acquire(cctx, 5); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	go func() { n, _ := b.acquire(ctx, 3); got <- n }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	assert.ErrorIs(t, <-errc, context.Canceled)
	b.release(10)
	assert.EqualValues(t, 3, <-got)
	b.release(3)
	assert.EqualValues(t, 10, b.free)
	assert.Empty(t, b.waiters)
}
