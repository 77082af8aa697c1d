// Package guesttest runs a guest of the test cluster the way a host does:
// the qemu driver starts it (with its guestraid channel and console),
// a reader follows what its guestraid reports, and helpers wait for
// states and events, read the workload's console lines and, once the guest
// is stopped, compare its legs on the hosts. The end-to-end tests and
// `make demo` share it.
package guesttest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/guestraid/superblock"
	"github.com/mhcodi/mhcodi/guestraid/workload"
	"github.com/mhcodi/mhcodi/test/cluster"
)

// Guest is a guest running on one host of a test cluster.
type Guest struct {
	Name string
	Host *cluster.Host
	Drv  hypervisor.Driver
	Spec hypervisor.GuestSpec

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every message
	messages []any         // *channel.State, *channel.Event, in arrival order
	conn     net.Conn
	done     chan struct{}
}

// Options of Start.
type Options struct {
	Epoch uint64
	Stale map[string]bool // leg nodes the host marks stale
	Logf  func(format string, args ...any)
}

// Start boots guest on host h through the qemu driver and follows its
// channel. The qemu process (and the driver's helpers) are tracked by the
// host, so the cluster's teardown ends them even when a test fails.
func Start(ctx context.Context, c *cluster.Cluster, h *cluster.Host, guest string, o Options) (*Guest, error) {
	info, err := fencing.HostInfoJSON(c.Config, guest, h.Name, o.Epoch, o.Stale)
	if err != nil {
		return nil, err
	}
	drv, err := hypervisor.New(c.Config, h.Name, driverOptions(c, h))
	if err != nil {
		return nil, err
	}
	spec, err := hypervisor.SpecFor(c.Config, guest, h.Name, info, specOptions(c, h)...)
	if err != nil {
		return nil, err
	}
	g := &Guest{Name: guest, Host: h, Drv: drv, Spec: spec, changed: make(chan struct{}), done: make(chan struct{})}
	if err := drv.Start(ctx, spec); err != nil {
		return nil, err
	}
	if err := g.track(); err != nil {
		return g, err
	}
	ch, ok := drv.(hypervisor.Channeler)
	if !ok {
		return g, errors.New("the driver has no guestraid channel")
	}
	conn, err := ch.Channel(ctx, guest)
	if err != nil {
		return g, err
	}
	g.conn = conn
	go g.read()
	return g, nil
}

// track hands every pid file of the guest's run directory (qemu's, the
// bridge's) to the host, so teardown ends them.
func (g *Guest) track() error {
	files, _ := filepath.Glob(filepath.Join(g.Spec.RunDir, "*.pid"))
	if len(files) == 0 {
		return fmt.Errorf("no pid file in %s", g.Spec.RunDir)
	}
	for _, f := range files {
		name := g.Name + "-" + strings.TrimSuffix(filepath.Base(f), ".pid")
		if _, err := g.Host.TrackPidFile(name, f); err != nil {
			return fmt.Errorf("track %s: %w", f, err)
		}
	}
	return nil
}

func (g *Guest) read() {
	defer close(g.done)
	sc := bufio.NewScanner(g.conn)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		v, err := channel.Decode(sc.Bytes())
		if err != nil {
			continue
		}
		g.mu.Lock()
		g.messages = append(g.messages, v)
		close(g.changed)
		g.changed = make(chan struct{})
		g.mu.Unlock()
	}
}

// Send sends a host message (channel.Host, channel.Check) to the guest.
func (g *Guest) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = g.conn.Write(append(b, '\n'))
	return err
}

// MarkStale tells the running guest that the legs on these nodes are
// stale, at a new epoch.
func (g *Guest) MarkStale(c *cluster.Cluster, epoch uint64, stale map[string]bool) error {
	h, err := fencing.HostInfo(c.Config, g.Name, g.Host.Name, epoch, stale)
	if err != nil {
		return err
	}
	return g.Send(h)
}

// Messages returns every message so far.
func (g *Guest) Messages() []any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]any(nil), g.messages...)
}

// Wait waits until match accepts a message that arrived at index from or
// later, and returns it with the index after it.
func (g *Guest) Wait(ctx context.Context, from int, match func(any) bool) (any, int, error) {
	for {
		g.mu.Lock()
		msgs, changed := g.messages, g.changed
		g.mu.Unlock()
		for i := from; i < len(msgs); i++ {
			if match(msgs[i]) {
				return msgs[i], i + 1, nil
			}
		}
		from = max(from, len(msgs))
		select {
		case <-ctx.Done():
			return nil, from, fmt.Errorf("waiting for a guestraid message: %w", ctx.Err())
		case <-g.done:
			return nil, from, errors.New("the guestraid channel closed")
		case <-changed:
		}
	}
}

// WaitEvent waits for an event called name (channel.Event*) on disk.
func (g *Guest) WaitEvent(ctx context.Context, from int, disk, name string) (*channel.Event, int, error) {
	v, next, err := g.Wait(ctx, from, func(v any) bool {
		e, ok := v.(*channel.Event)
		return ok && e.Disk == disk && e.Event == name
	})
	if err != nil {
		return nil, next, fmt.Errorf("event %s of disk %s: %w", name, disk, err)
	}
	return v.(*channel.Event), next, nil
}

// WaitState waits for a state of disk that pred accepts.
func (g *Guest) WaitState(ctx context.Context, from int, disk string, pred func(*channel.State) bool) (*channel.State, int, error) {
	v, next, err := g.Wait(ctx, from, func(v any) bool {
		s, ok := v.(*channel.State)
		return ok && s.Disk == disk && pred(s)
	})
	if err != nil {
		return nil, next, fmt.Errorf("state of disk %s: %w", disk, err)
	}
	return v.(*channel.State), next, nil
}

// Healthy is a clean, complete, idle mirror.
func Healthy(s *channel.State) bool {
	return s.Degraded == 0 && s.SyncAction == "idle" && len(s.Legs) == 2 &&
		s.Legs[0].State == "in_sync" && s.Legs[1].State == "in_sync"
}

// Console returns the guest's serial console so far.
func (g *Guest) Console() string {
	b, _ := os.ReadFile(filepath.Join(g.Spec.RunDir, hypervisor.ConsoleLog))
	return string(b)
}

// WorkloadLines returns the workload's console lines of one kind
// (progress, ioerror, stopped…), decoded.
func (g *Guest) WorkloadLines(kind string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(g.Console(), "\n") {
		i := strings.Index(l, "workload: "+kind+" ")
		if i < 0 {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(strings.TrimSpace(l[i+len("workload: "+kind+" "):])), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// Stop presses the power button and waits for the guest to power off
// (guestraid stops the workload and the arrays first).
func (g *Guest) Stop(ctx context.Context, timeout time.Duration) error {
	err := g.Drv.Stop(ctx, g.Name, timeout)
	if g.conn != nil {
		g.conn.Close()
	}
	return err
}

// Destroy pulls the guest's plug.
func (g *Guest) Destroy(ctx context.Context) error {
	err := g.Drv.Destroy(ctx, g.Name)
	if g.conn != nil {
		g.conn.Close()
	}
	return err
}

// LegFile is the file that holds guest's disk leg on node (file backend).
func LegFile(cfg *configs.Config, guest, disk, node string) (string, error) {
	for _, l := range cfg.Legs() {
		if l.Guest == guest && l.Disk == disk && l.Node == node {
			if l.Backend != configs.BackendFile {
				return "", fmt.Errorf("leg %s/%s on %s is not a file", guest, disk, node)
			}
			return l.Location, nil
		}
	}
	return "", fmt.Errorf("no leg %s/%s on %s", guest, disk, node)
}

// LegReport is what CompareLegs found.
type LegReport struct {
	Superblocks  map[string]superblock.Superblock
	FirstDiff    int64 // -1: the data areas are identical
	Verify       map[string]workload.Summary
	RegionBlocks uint64
}

// CompareLegs reads both legs of a stopped guest's disk on the hosts:
// their md superblocks, whether their data areas are identical, and
// whether the workload's region verifies on each.
func CompareLegs(cfg *configs.Config, guest, disk string, regionBytes int64) (LegReport, error) {
	r := LegReport{Superblocks: map[string]superblock.Superblock{}, Verify: map[string]workload.Summary{}, RegionBlocks: uint64(regionBytes / workload.BlockSize)}
	g, ok := cfg.Guest(guest)
	if !ok {
		return r, fmt.Errorf("no guest %s", guest)
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, d := range g.Disks {
		if d.Name != disk {
			continue
		}
		for _, n := range d.Legs {
			p, err := LegFile(cfg, guest, disk, n)
			if err != nil {
				return r, err
			}
			f, err := os.Open(p)
			if err != nil {
				return r, err
			}
			files = append(files, f)
			sb, err := superblock.Read(f)
			if err != nil {
				return r, fmt.Errorf("leg on %s: %w", n, err)
			}
			r.Superblocks[n] = sb
			s, err := workload.Verify(f, sb.DataOffset, r.RegionBlocks)
			if err != nil {
				return r, fmt.Errorf("leg on %s: %w", n, err)
			}
			r.Verify[n] = s
		}
	}
	if len(files) != 2 {
		return r, fmt.Errorf("disk %s of %s: %d legs", disk, guest, len(files))
	}
	off, err := superblock.CompareData(files[0], files[1])
	r.FirstDiff = off
	return r, err
}

// Describe is one line about a disk's state, for people.
func Describe(s *channel.State) string {
	var legs []string
	for _, l := range s.Legs {
		d := fmt.Sprintf("%s (%s) %s", l.Node, orDash(l.Dev), l.State)
		if len(l.Flags) > 0 {
			d += " [" + strings.Join(l.Flags, ",") + "]"
		} else if l.State == "in_sync" {
			d += " [read leg]"
		}
		legs = append(legs, d)
	}
	sync := s.SyncAction
	if sync != "idle" && sync != "" {
		sync = fmt.Sprintf("%s %.0f%%", sync, s.Progress*100)
	}
	return fmt.Sprintf("%s %s, %d MiB, degraded %d, sync %s, mismatches %d; legs: %s",
		s.MD, s.ArrayState, s.ArrayBytes>>20, s.Degraded, sync, s.MismatchCnt, strings.Join(legs, "; "))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
