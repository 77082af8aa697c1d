package iscsi

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/mhcodi/mhcodi/iscsi/pdu"
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

// answerR2Ts sends payload for every R2T of itt until its SCSI Response,
// which it returns; PDUs for other tasks are handed to other.
func answerR2Ts(c *client, itt uint32, payload []byte, first *pdu.Header, other func(*pdu.Header)) *pdu.Header {
	h := first
	for {
		if h == nil {
			h, _ = c.recv()
		}
		switch {
		case h.ITT() != itt:
			other(h)
		case h.Opcode() == pdu.OpR2T:
			off, n := h.U32(pdu.OffOffset), h.U32(pdu.OffResidual)
			var d pdu.Header
			d.SetOpcode(pdu.OpDataOut)
			d[1] = 0x80
			d.SetITT(itt)
			d.PutU32(pdu.OffTTT, h.U32(pdu.OffTTT))
			d.PutU32(pdu.OffOffset, off)
			c.send(&d, payload[off:off+n])
		case h.Opcode() == pdu.OpSCSIResp:
			return h
		default:
			c.t.Fatalf("unexpected %v for ITT 0x%x", h.Opcode(), itt)
		}
		h = nil
	}
}

// A large write gets its buffer and its first R2T only when the write
// budget has room: the second of two writes that each take the whole
// budget waits for the first to finish, and one aborted while it waits
// gives its place up and never sees an R2T.
func TestWriteBudgetHoldsR2T(t *testing.T) {
	const size = 128 << 10
	f := newFixture(t, func(cfg *Config) { cfg.WriteBudget = size })
	c := loggedIn(t, f, "ImmediateData", "No", "InitialR2T", "Yes", "MaxBurstLength", "8192")
	a := bytes.Repeat([]byte{0xaa}, size)
	b := bytes.Repeat([]byte{0xbb}, size)
	ittA := c.scsiCmd(write10(0, size/512), false, true, size, nil, true)
	r2tA, _ := c.recv()
	require.Equal(t, pdu.OpR2T, r2tA.Opcode())
	ittB := c.scsiCmd(write10(size/512, size/512), false, true, size, nil, true)
	nh, _ := c.nop()
	require.Equal(t, pdu.OpNOPIn, nh.Opcode(), "no R2T for the second write while the first holds the budget")

	var r2tB *pdu.Header
	resp := answerR2Ts(c, ittA, a, r2tA, func(h *pdu.Header) {
		require.Equal(t, pdu.OpR2T, h.Opcode())
		require.Nil(t, r2tB)
		r2tB = h
	})
	assert.Equal(t, byte(0), resp[3], "GOOD")
	resp = answerR2Ts(c, ittB, b, r2tB, func(h *pdu.Header) { t.Fatalf("unexpected %v", h.Opcode()) })
	assert.Equal(t, byte(0), resp[3], "GOOD")
	assert.Equal(t, a, f.dev.bytes(0, size))
	assert.Equal(t, b, f.dev.bytes(size, size))

	// Abort a write that waits for the budget.
	ittA = c.scsiCmd(write10(0, size/512), false, true, size, nil, true)
	r2tA, _ = c.recv()
	require.Equal(t, pdu.OpR2T, r2tA.Opcode())
	ittB = c.scsiCmd(write10(size/512, size/512), false, true, size, nil, true)
	tm := c.abortTask(ittB, c.cmdSN-1)
	require.Equal(t, pdu.OpTaskMgmtResp, tm.Opcode())
	assert.Equal(t, byte(tmfComplete), tm[2])
	resp = answerR2Ts(c, ittA, b, r2tA, func(h *pdu.Header) { t.Fatalf("unexpected %v for the aborted write", h.Opcode()) })
	assert.Equal(t, byte(0), resp[3], "GOOD")
	nh, _ = c.nop()
	require.Equal(t, pdu.OpNOPIn, nh.Opcode(), "no R2T for the aborted write")
	assert.Equal(t, b, f.dev.bytes(0, size))
	assert.Eventually(t, func() bool {
		f.srv.writeBudget.mu.Lock()
		defer f.srv.writeBudget.mu.Unlock()
		return f.srv.writeBudget.free == size
	}, 5*time.Second, 10*time.Millisecond, "the whole budget is back")
}

func TestSpinners(t *testing.T) {
	for procs, want := range map[int]int32{1: 0, 2: 1, 4: 1, 8: 2, 16: 4, 64: 16} {
		assert.Equal(t, want, spinners(procs), "GOMAXPROCS %d", procs)
	}
}
