package scsi

import (
	"math/bits"
	"sync"
)

// BufPool hands out Data-In buffers in power-of-two size classes so that a
// busy target reuses memory instead of feeding the garbage collector one
// buffer per READ. Each Target owns one; nothing is shared between targets.
//
// Buffers larger than the biggest class are allocated and left to the
// garbage collector.
type BufPool struct {
	classes [numClasses]sync.Pool
}

const (
	minClassShift = 9  // 512 bytes
	maxClassShift = 24 // 16 MiB
	numClasses    = maxClassShift - minClassShift + 1
)

// NewBufPool returns an empty pool.
func NewBufPool() *BufPool { return &BufPool{} }

// classOf returns the class index for a buffer of n bytes, or -1 when n is
// too large to pool.
func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	shift := bits.Len(uint(n - 1))
	if shift > maxClassShift {
		return -1
	}
	return shift - minClassShift
}

// Get returns a buffer of length n (its contents are not zeroed) and the
// handle to give back to Put. The handle is nil for unpooled buffers.
func (p *BufPool) Get(n int) ([]byte, *[]byte) {
	c := classOf(n)
	if c < 0 {
		return make([]byte, n), nil
	}
	if v := p.classes[c].Get(); v != nil {
		bp := v.(*[]byte)
		return (*bp)[:n], bp
	}
	b := make([]byte, 1<<(c+minClassShift))
	return b[:n], &b
}

// Put returns a buffer obtained from Get. A nil handle is ignored.
func (p *BufPool) Put(bp *[]byte) {
	if bp == nil {
		return
	}
	c := classOf(cap(*bp))
	if c < 0 || cap(*bp) != 1<<(c+minClassShift) {
		return // not one of ours; let the GC have it
	}
	*bp = (*bp)[:cap(*bp)]
	p.classes[c].Put(bp)
}

// withPooled attaches a pooled buffer to a result so that Target.Release
// can return it.
func withPooled(res Result, bp *[]byte) Result {
	res.pooled = bp
	return res
}
