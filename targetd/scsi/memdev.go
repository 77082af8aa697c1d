package scsi

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

// MemDev is an in-memory BlockDev for tests, fuzzing and benchmarks of
// this package and of the transport above it. It is safe for concurrent
// use.
type MemDev struct {
	mu            sync.RWMutex
	data          []byte
	discardZeroes bool
	syncs         atomic.Int64
}

// NewMemDev returns a zeroed device of size bytes. discardZeroes sets what
// DiscardZeroes reports; Discard zeroes the range only when it is true
// (otherwise it fills it with 0xDD, to catch callers that rely on it).
func NewMemDev(size int64, discardZeroes bool) *MemDev {
	return &MemDev{data: make([]byte, size), discardZeroes: discardZeroes}
}

var errOutOfRange = errors.New("memdev: access beyond the end")

// ReadAt implements BlockDev.
func (m *MemDev) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if off < 0 || off > int64(len(m.data)) {
		return 0, errOutOfRange
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt implements BlockDev.
func (m *MemDev) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return 0, errOutOfRange
	}
	return copy(m.data[off:], p), nil
}

// Size implements BlockDev.
func (m *MemDev) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.data))
}

// Sync implements BlockDev; it counts calls.
func (m *MemDev) Sync() error {
	m.syncs.Add(1)
	return nil
}

// Syncs returns how many times Sync was called.
func (m *MemDev) Syncs() int64 { return m.syncs.Load() }

// Discard implements BlockDev.
func (m *MemDev) Discard(off, n int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || n < 0 || off+n > int64(len(m.data)) {
		return errOutOfRange
	}
	fill := byte(0xdd)
	if m.discardZeroes {
		fill = 0
	}
	b := m.data[off : off+n]
	for i := range b {
		b[i] = fill
	}
	return nil
}

// DiscardZeroes implements BlockDev.
func (m *MemDev) DiscardZeroes() bool { return m.discardZeroes }

// Resize grows or shrinks the device, keeping the common prefix.
func (m *MemDev) Resize(size int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := make([]byte, size)
	copy(d, m.data)
	m.data = d
}

// Bytes returns a copy of the contents.
func (m *MemDev) Bytes() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]byte(nil), m.data...)
}
