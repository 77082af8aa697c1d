package events

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func ev(sec int, node, kind, guest string) Event {
	return Event{Time: t0.Add(time.Duration(sec) * time.Second), Node: node, Kind: kind, Guest: guest}
}

func TestFilterAndMerge(t *testing.T) {
	a := []Event{ev(1, "node-a", KindSelfFence, "web"), ev(5, "node-a", KindForeign, "db")}
	b := []Event{ev(3, "node-b", KindFailover, "web"), ev(5, "node-a", KindForeign, "db")}
	m := Merge(a, b)
	require.Len(t, m, 3, "an event two answers carry is listed once")
	assert.Equal(t, []string{KindSelfFence, KindFailover, KindForeign}, []string{m[0].Kind, m[1].Kind, m[2].Kind})
	assert.True(t, Filter{Guest: "web"}.Match(m[0]))
	assert.False(t, Filter{Guest: "web"}.Match(m[2]))
	assert.False(t, Filter{Since: t0.Add(2 * time.Second)}.Match(m[0]))
	assert.True(t, Filter{Since: t0.Add(3 * time.Second)}.Match(m[1]), "since is inclusive")
}

func TestJournalKeepsTheLastAndSurvivesARestart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", "events.jsonl")
	j, err := OpenJournal(p, 3)
	require.NoError(t, err)
	for i := range 10 {
		require.NoError(t, j.Append(ev(i, "node-a", KindLeg, "web")))
	}
	got := j.List(Filter{})
	require.Len(t, got, 3)
	assert.Equal(t, t0.Add(9*time.Second), got[2].Time)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.LessOrEqual(t, strings.Count(string(b), "\n"), 6, "the file is bounded to twice the kept events")

	// A crash cut the last line short: it is skipped.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"time":"2026-12-04T12:`)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	j, err = OpenJournal(p, 3)
	require.NoError(t, err)
	got = j.List(Filter{Since: t0.Add(8 * time.Second)})
	require.Len(t, got, 2)
	assert.Equal(t, "web", got[0].Guest)
}

func TestJournalAppendFailsHalfway(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "events.jsonl")
	j, err := OpenJournal(p, 10)
	require.NoError(t, err)
	// The state directory became unwritable: the file cannot be opened.
	require.NoError(t, os.Mkdir(p, 0o700))
	err = j.Append(ev(1, "node-a", KindSelfFence, "web"))
	require.Error(t, err)
	assert.Len(t, j.List(Filter{}), 1, "the event is still listed from memory")

	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, nil, 0o600))
	_, err = OpenJournal(filepath.Join(plain, "x", "events.jsonl"), 10)
	assert.Error(t, err, "a journal below a file, not a directory")
}

func TestHookDeliversInOrderAndNeverBlocks(t *testing.T) {
	var mu sync.Mutex
	var got []string
	release := make(chan struct{})
	h := &Hook{Path: "/usr/local/bin/notify", Timeout: time.Minute, Log: slog.New(slog.DiscardHandler),
		Run: func(ctx context.Context, path string, stdin []byte) error {
			<-release
			mu.Lock()
			got = append(got, string(stdin))
			mu.Unlock()
			if strings.Contains(string(stdin), `"db"`) {
				return errors.New("exit status 1")
			}
			return nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	h.Start(ctx)
	// The hook hangs on the first event: Notify still returns at once,
	// and drops once the queue is full.
	dropped := 0
	for i := range hookQueue + 10 {
		g := "web"
		if i == 1 {
			g = "db"
		}
		if !h.Notify(ev(i, "node-a", KindFailover, g)) {
			dropped++
		}
	}
	assert.Positive(t, dropped)
	close(release)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 2
	}, 10*time.Second, time.Millisecond)
	cancel()
	h.Wait()
	mu.Lock()
	defer mu.Unlock()
	assert.Contains(t, got[0], `"guest":"web"`)
	assert.Contains(t, got[1], `"guest":"db"`, "a failing run does not stop the next")
	assert.True(t, strings.HasSuffix(got[0], "}\n"))
}

func TestHookTimesOut(t *testing.T) {
	done := make(chan error, 1)
	h := &Hook{Path: "x", Timeout: time.Millisecond, Log: slog.New(slog.DiscardHandler),
		Run: func(ctx context.Context, _ string, _ []byte) error {
			<-ctx.Done()
			done <- ctx.Err()
			return ctx.Err()
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.Start(ctx)
	h.Notify(ev(1, "node-a", KindLeg, "web"))
	assert.ErrorIs(t, <-done, context.DeadlineExceeded)
}

func TestExecRun(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "got")
	script := filepath.Join(dir, "hook")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\ncat > "+out+"\n"), 0o755))
	require.NoError(t, ExecRun(context.Background(), script, []byte(`{"kind":"leg"}`)))
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, `{"kind":"leg"}`, string(b))
	fail := filepath.Join(dir, "fail")
	require.NoError(t, os.WriteFile(fail, []byte("#!/bin/sh\necho nope >&2\nexit 3\n"), 0o755))
	err = ExecRun(context.Background(), fail, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nope")
}
