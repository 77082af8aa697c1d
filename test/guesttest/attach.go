package guesttest

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/test/cluster"
)

// consolePoll is how often the Wait* helpers of an attached guest read
// its console again.
const consolePoll = 200 * time.Millisecond

// Attach follows a guest that some host's mhcodi-fenced started on h
// (mhcodi guest start, a failover): it waits until the guest's qemu runs
// there, tracks it and its leg bridge (cluster.Host.TrackGuests), and
// reads its console. The guestraid channel stays fenced's — a qemu socket
// chardev serves one client — so the channel-based helpers (Wait,
// WaitEvent, Send) see nothing; use ConsoleEvents and WaitConsoleEvent,
// fed by the line guestraid logs for every event it sends. Drv is the
// node's own driver (h.ConfigPath), so Destroy pulls the plug as fenced
// would.
func Attach(ctx context.Context, c *cluster.Cluster, h *cluster.Host, guest string) (*Guest, error) {
	cfg, err := configs.Load(h.ConfigPath())
	if err != nil {
		return nil, fmt.Errorf("attach %s on %s: %w", guest, h.Name, err)
	}
	drv, err := hypervisor.New(cfg, h.Name, hypervisor.Options{Prefix: h.Prefix(), Netns: h.Netns, Bridge: c.Bin("mhcodi-bridge"), RunDir: h.RunDir()})
	if err != nil {
		return nil, fmt.Errorf("attach %s on %s: %w", guest, h.Name, err)
	}
	g := &Guest{Name: guest, Host: h, Drv: drv, changed: make(chan struct{}), done: make(chan struct{}),
		Spec: hypervisor.GuestSpec{Name: guest, RunDir: filepath.Join(h.RunDir(), guest)}}
	// No channel reader: the channel helpers end at once instead of
	// waiting for messages that never come.
	close(g.done)
	for {
		if _, err := h.TrackGuests(); err != nil {
			return nil, fmt.Errorf("attach %s on %s: %w", guest, h.Name, err)
		}
		if g.Running() {
			return g, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("attach %s on %s: its qemu does not run there (no live %s): %w",
				guest, h.Name, filepath.Join(g.Spec.RunDir, hypervisor.PIDFile), ctx.Err())
		case <-time.After(consolePoll):
		}
	}
}

// Running reports whether the guest's qemu runs on its host (a tracked
// process named <guest>-qemu).
func (g *Guest) Running() bool {
	return g.Host.Proc(g.Name+"-"+strings.TrimSuffix(hypervisor.PIDFile, ".pid")) != nil
}

// WaitGone waits until the guest's qemu no longer runs, and returns when
// it noticed.
func (g *Guest) WaitGone(ctx context.Context) (time.Time, error) {
	for {
		if !g.Running() {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s still runs on %s: %w", g.Name, g.Host.Name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ConsoleEvents returns the guestraid events of the console so far, as
// guestraid logged them (msg="guestraid event" disk=… event=… leg=…).
func (g *Guest) ConsoleEvents() []channel.Event {
	var out []channel.Event
	for _, l := range strings.Split(g.Console(), "\n") {
		if !strings.Contains(l, `msg="guestraid event"`) {
			continue
		}
		f := logfmt(l)
		e := channel.Event{Type: channel.TypeEvent, Disk: f["disk"], Event: f["event"], Leg: f["leg"], Detail: f["detail"]}
		if t, err := time.Parse(time.RFC3339Nano, f["time"]); err == nil {
			e.Time = channel.Timestamp(t)
		}
		e.DirtyBytes, _ = strconv.ParseInt(f["dirty_bytes"], 10, 64)
		e.ResyncBytes, _ = strconv.ParseInt(f["resync_bytes"], 10, 64)
		e.ArrayBytes, _ = strconv.ParseInt(f["array_bytes"], 10, 64)
		out = append(out, e)
	}
	return out
}

// WaitConsoleEvent waits for an event called name (channel.Event*) of disk
// on the console, at index from of ConsoleEvents or later, and returns it
// with the index after it.
func (g *Guest) WaitConsoleEvent(ctx context.Context, from int, disk, name string) (channel.Event, int, error) {
	for {
		evs := g.ConsoleEvents()
		for i := from; i < len(evs); i++ {
			if evs[i].Disk == disk && evs[i].Event == name {
				return evs[i], i + 1, nil
			}
		}
		select {
		case <-ctx.Done():
			return channel.Event{}, len(evs), fmt.Errorf("event %s of disk %s on %s's console: %w", name, disk, g.Name, ctx.Err())
		case <-time.After(consolePoll):
		}
	}
}

// WaitProgress waits until the workload has printed more than n progress
// lines on the console, and returns when it saw the new one: proof that
// the guest writes.
func (g *Guest) WaitProgress(ctx context.Context, n int) (time.Time, error) {
	for {
		if len(g.WorkloadLines("progress")) > n {
			return time.Now(), nil
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s on %s: no workload progress past line %d: %w", g.Name, g.Host.Name, n, ctx.Err())
		case <-time.After(consolePoll / 2):
		}
	}
}

// logfmt splits a slog text line (key=value, values quoted when they hold
// spaces) into its fields.
func logfmt(line string) map[string]string {
	out := map[string]string{}
	s := line
	for {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return out
		}
		key := s[:eq]
		if i := strings.LastIndexFunc(key, unicode.IsSpace); i >= 0 {
			key = key[i+1:] // text before the first key (a console prefix)
		}
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := 1 // the closing quote, or len(s) when there is none
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end < len(s) {
				if v, err := strconv.Unquote(s[:end+1]); err == nil {
					val = v
				} else {
					val = s[1:end]
				}
				s = s[end+1:]
			} else {
				val, s = s[1:], ""
			}
		} else {
			i := strings.IndexFunc(s, unicode.IsSpace)
			if i < 0 {
				i = len(s)
			}
			val, s = s[:i], s[i:]
		}
		out[key] = val
	}
}
