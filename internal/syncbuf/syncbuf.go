// Package syncbuf is a byte buffer that several goroutines may write and
// read at once: the output of a child process or of a logger that a test
// (or a job watching a child) reads while it still runs.
package syncbuf

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer behind a mutex. The zero value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Lines returns the non-empty lines written so far that contain every one
// of words (every line without words).
func (b *Buffer) Lines(words ...string) []string {
	var out []string
next:
	for _, l := range strings.Split(b.String(), "\n") {
		for _, w := range words {
			if !strings.Contains(l, w) {
				continue next
			}
		}
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
