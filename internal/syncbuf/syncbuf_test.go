package syncbuf

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestConcurrentWritesAndLines(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				fmt.Fprintf(&b, "writer=%d line=%d\n", i, j)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	assert.Len(t, b.Lines(), 800)
	assert.Len(t, b.Lines("writer=3 "), 100)
	assert.Len(t, b.Lines("writer=3 ", "line=7\n"[:6]), 11) // line=7, line=70…79
	assert.Empty(t, b.Lines("nobody"))
}
