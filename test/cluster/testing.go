package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// KeepEnv, when set to 1, keeps the directories of clusters built by NewT
// (logs, volumes, cluster file) for a look after the test.
const KeepEnv = "MHCODI_KEEP_CLUSTER"

// NewT builds a cluster for a test and tears it down when the test ends,
// whether it passed, failed or called t.Fatal; a ^C tears it down too (see
// Close). Before building it sweeps clusters whose test binary died
// (SIGKILL, a timeout panic) without tearing down. When the test failed it
// logs the tail of every daemon log first. A missing bin/ fails the test
// with the step that builds it.
func NewT(t testing.TB, o Options) *Cluster {
	t.Helper()
	tw := &testWriter{t: t}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if os.Getenv(KeepEnv) == "1" {
		o.Keep = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if swept, err := SweepStale(ctx); err != nil {
		t.Logf("cluster: sweeping stale clusters: %v", err)
	} else if len(swept) > 0 {
		t.Logf("cluster: swept stale clusters of dead runs: %v", swept)
	}
	c, err := New(ctx, o)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.logTails(t)
		}
		if err := c.Close(); err != nil {
			t.Errorf("cluster teardown: %v", err)
		}
		// A signal handled after this point must not log through t.
		tw.end()
	})
	return c
}

// logTails logs the end of every log in <dir>/logs.
func (c *Cluster) logTails(t testing.TB) {
	logs, _ := filepath.Glob(c.path("logs", "*.log"))
	sort.Strings(logs)
	for _, l := range logs {
		t.Logf("cluster: %s (tail):\n%s", l, fileTail(l, 3000))
	}
}

// testWriter sends log lines to t.Log until the test ends, then to stderr.
type testWriter struct {
	t     testing.TB
	mu    sync.Mutex
	ended bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return os.Stderr.Write(b)
	}
	w.t.Log(string(bytes.TrimRight(b, "\n")))
	return len(b), nil
}

func (w *testWriter) end() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
}
