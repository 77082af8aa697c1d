package workload

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// region is an in-memory region of n blocks.
func region(n int) []byte { return make([]byte, n*BlockSize) }

func fill(r []byte, from, to int, gen uint64) {
	for i := from; i < to; i++ {
		Fill(r[i*BlockSize:], uint64(i), gen)
	}
}

func TestVerify(t *testing.T) {
	const n = 16
	for _, tc := range []struct {
		name   string
		setup  func(r []byte)
		ok     bool
		gen    uint64
		cursor uint64
	}{
		{"blank", func(r []byte) {}, true, 0, n},
		{"first pass half way", func(r []byte) { fill(r, 0, 5, 1) }, true, 1, 5},
		{"pass complete", func(r []byte) { fill(r, 0, n, 1) }, true, 1, n},
		{"second pass", func(r []byte) { fill(r, 0, n, 1); fill(r, 0, 7, 2) }, true, 2, 7},
		{"hole in the first pass", func(r []byte) { fill(r, 0, 5, 1); fill(r, 6, 8, 1) }, false, 1, 5},
		{"old block behind the cursor", func(r []byte) { fill(r, 0, n, 2); fill(r, 3, 4, 1) }, false, 2, 3},
		{"torn block", func(r []byte) { fill(r, 0, n, 1); r[5*BlockSize+100] ^= 1 }, false, 1, n},
		{"misplaced block", func(r []byte) { fill(r, 0, n, 1); copy(r[2*BlockSize:3*BlockSize], r[9*BlockSize:]) }, false, 1, n},
		{"two generations skipped", func(r []byte) { fill(r, 0, n, 1); fill(r, 0, 4, 3) }, false, 3, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := region(n)
			tc.setup(r)
			s, err := Verify(bytes.NewReader(r), 0, n)
			require.NoError(t, err)
			assert.Equal(t, tc.ok, s.OK(), "%+v", s)
			assert.Equal(t, tc.gen, s.Gen)
			if tc.ok {
				assert.Equal(t, tc.cursor, s.Cursor)
			}
		})
	}
}

func TestCheckTellsBlocksApart(t *testing.T) {
	b := make([]byte, BlockSize)
	Fill(b, 7, 3)
	st, gen, err := Check(b, 7)
	assert.Equal(t, Good, st)
	assert.Equal(t, uint64(3), gen)
	assert.NoError(t, err)
	st, _, err = Check(b, 8)
	assert.Equal(t, Bad, st)
	assert.ErrorContains(t, err, "holds block 7")
	c := make([]byte, BlockSize)
	Fill(c, 7, 4)
	assert.NotEqual(t, b, c, "another generation is other bytes")
}

// TestRunThenVerify writes passes to a file and verifies it.
func TestRunThenVerify(t *testing.T) {
	p := filepath.Join(t.TempDir(), "region")
	require.NoError(t, os.WriteFile(p, make([]byte, 64*BlockSize), 0o644))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	prog, err := Run(ctx, Options{Device: p, Blocks: 64})
	require.NoError(t, err, "O_DIRECT writes to a file in the test's temp dir")
	assert.Zero(t, prog.Errors)
	assert.Positive(t, prog.Writes)
	s, err := VerifyDevice(Options{Device: p, Blocks: 64})
	require.NoError(t, err)
	assert.True(t, s.OK(), "%+v", s)
	if prog.Next == 0 { // stopped right at the end of a pass
		assert.Equal(t, prog.Gen-1, s.Gen)
		assert.Equal(t, uint64(64), s.Cursor)
	} else {
		assert.Equal(t, prog.Gen, s.Gen)
		assert.Equal(t, prog.Next, s.Cursor)
	}
}
