package workload

import (
	"errors"
	"fmt"
	"io"
)

// Summary is the result of verifying a region.
type Summary struct {
	Blocks uint64 `json:"blocks"`
	// Gen is the newest generation found; Cursor the first block still at
	// Gen-1 (Blocks when the last pass completed).
	Gen    uint64 `json:"gen"`
	Cursor uint64 `json:"cursor"`
	Blank  uint64 `json:"blank"`
	// Errors lists what is wrong, at most maxErrors of them; Bad counts
	// every bad block.
	Bad    uint64   `json:"bad"`
	Errors []string `json:"errors,omitempty"`
}

// OK reports whether the region holds one consistent state of the
// workload: good blocks, generation Gen before Cursor and Gen-1 after it.
func (s Summary) OK() bool { return s.Bad == 0 && len(s.Errors) == 0 }

const maxErrors = 20

// Verify reads nblocks pattern blocks from r starting at off and checks
// that they are what a workload writing passes front to back leaves:
// blocks [0, Cursor) of generation Gen, blocks [Cursor, n) of Gen-1 (or
// blank when Gen is 1), and no bad block.
func Verify(r io.ReaderAt, off int64, nblocks uint64) (Summary, error) {
	s := Summary{Blocks: nblocks, Cursor: nblocks}
	buf := make([]byte, 1<<20)
	gens := make([]uint64, nblocks) // 0 = blank
	for i := uint64(0); i < nblocks; {
		n := min(uint64(len(buf)/BlockSize), nblocks-i)
		if _, err := r.ReadAt(buf[:n*BlockSize], off+int64(i*BlockSize)); err != nil && !errors.Is(err, io.EOF) {
			return s, fmt.Errorf("read block %d: %w", i, err)
		}
		for j := uint64(0); j < n; j++ {
			st, gen, err := Check(buf[j*BlockSize:], i+j)
			switch st {
			case Bad:
				s.Bad++
				s.addf("%v", err)
			case Blank:
				s.Blank++
			case Good:
				gens[i+j] = gen
				s.Gen = max(s.Gen, gen)
			}
		}
		i += n
	}
	if s.Gen == 0 {
		return s, nil
	}
	// The cursor is where generation Gen ends; nothing after it may be Gen
	// and nothing before it older.
	c := uint64(0)
	for c < nblocks && gens[c] == s.Gen {
		c++
	}
	if c < nblocks {
		s.Cursor = c
	}
	for i := c; i < nblocks; i++ {
		want := s.Gen - 1
		if gens[i] != want && !(want == 0 && gens[i] == 0) {
			if gens[i] == 0 && want > 0 {
				s.addf("block %d: blank, but pass %d already wrote it", i, want)
			} else {
				s.addf("block %d: generation %d after the cursor at %d, want %d", i, gens[i], c, want)
			}
		}
	}
	return s, nil
}

func (s *Summary) addf(format string, args ...any) {
	if len(s.Errors) < maxErrors {
		s.Errors = append(s.Errors, fmt.Sprintf(format, args...))
	}
}
