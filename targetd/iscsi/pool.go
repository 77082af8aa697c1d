package iscsi

import (
	"math/bits"
	"sync"
)

// bufPool recycles write buffers in power-of-two size classes from 4 KiB
// to maxWriteBuffer, so a busy session does not allocate per command.
type bufPool struct {
	classes [bufClasses]sync.Pool
}

const (
	minBufShift = 12
	bufClasses  = 26 - minBufShift // up to 32 MiB (1<<25) inclusive
)

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// get returns a buffer of length n (contents undefined).
func (p *bufPool) get(n int) []byte {
	c := bufClass(n)
	if c >= bufClasses {
		return make([]byte, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<(c+minBufShift))
}

// put gives a buffer from get back.
func (p *bufPool) put(b []byte) {
	c := bufClass(cap(b))
	if c >= bufClasses || cap(b) != 1<<(c+minBufShift) {
		return
	}
	b = b[:cap(b)]
	p.classes[c].Put(&b)
}
