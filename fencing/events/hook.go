package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"time"
)

// HookTimeout bounds one run of the alert hook.
const HookTimeout = 10 * time.Second

// hookQueue is how many events may wait for the hook; more are dropped
// (and logged): the hook must never hold fenced up.
const hookQueue = 256

// RunFunc runs the hook program with stdin; tests pass a fake.
type RunFunc func(ctx context.Context, path string, stdin []byte) error

// ExecRun runs path with stdin, its output discarded.
func ExecRun(ctx context.Context, path string, stdin []byte) error {
	cmd := exec.CommandContext(ctx, path)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}

// Hook hands events, one at a time and in order, to an alert program
// (fencing.event_hook) with the event as JSON on stdin, each run bounded
// by Timeout. Notify never blocks: a full queue drops the event.
type Hook struct {
	Path    string
	Timeout time.Duration
	Run     RunFunc
	Log     *slog.Logger

	q    chan Event
	once sync.Once
	wg   sync.WaitGroup
}

// NewHook returns a hook running path (nil for "").
func NewHook(path string, log *slog.Logger) *Hook {
	if path == "" {
		return nil
	}
	return &Hook{Path: path, Timeout: HookTimeout, Run: ExecRun, Log: log}
}

// Start runs the queue until ctx ends; Wait waits for it.
func (h *Hook) Start(ctx context.Context) {
	h.init()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case e := <-h.q:
				h.deliver(ctx, e)
			}
		}
	}()
}

// Wait waits for Start's loop to end.
func (h *Hook) Wait() { h.wg.Wait() }

func (h *Hook) init() { h.once.Do(func() { h.q = make(chan Event, hookQueue) }) }

// Notify queues e for the hook; it reports false when the queue is full
// and e was dropped.
func (h *Hook) Notify(e Event) bool {
	h.init()
	select {
	case h.q <- e:
		return true
	default:
		h.Log.Warn("event hook: queue full; event dropped", "hook", h.Path, "kind", e.Kind, "guest", e.Guest)
		return false
	}
}

func (h *Hook) deliver(ctx context.Context, e Event) {
	b, err := json.Marshal(e)
	if err != nil {
		h.Log.Error("event hook: cannot encode the event", "err", err)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	if err := h.Run(rctx, h.Path, append(b, '\n')); err != nil {
		h.Log.Warn("event hook failed", "hook", h.Path, "kind", e.Kind, "guest", e.Guest, "err", err)
	}
}
