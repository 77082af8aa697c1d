package fenced

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/fencing"
	"github.com/mhcodi/mhcodi/fencing/events"
	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// recentEvents is how many of a guest's last events are kept.
const recentEvents = 32

// channelRetry is the pause between attempts to reach a guest's channel
// (the guest may still boot, or qemu may just have restarted).
const channelRetry = time.Second

// errNothingToClear ends a ledger update that found nothing to change.
var errNothingToClear = errors.New("no stale mark to clear")

// guestChannel is fenced's side of one running guest's guestraid channel
// and what it last heard there.
type guestChannel struct {
	name    string
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}

	mu     sync.Mutex
	conn   net.Conn
	states map[string]channel.State // by disk
	// reports: when each disk's state came and how its resync moves.
	reports map[string]arrayReport
	// stallSaid: the disk's current stall is already an event.
	stallSaid map[string]bool
	events    []channel.Event
	// resynced[node][disk]: the leg of node of disk was seen resynced
	// (a resync-done event, or in sync in an idle, whole array).
	resynced map[string]map[string]bool
}

// channelKeeper keeps a connection to every local running guest's
// channel, records its states and events, and clears a leg's stale mark
// in the ledger once the guest has resynced it everywhere.
type channelKeeper struct {
	self    string
	cfg     *configs.Config
	dial    hypervisor.Channeler
	ledger  ledger.Store
	started *startedBook
	clock   Clock
	log     *slog.Logger
	// emit records an event of the cluster's log (nil: none).
	emit func(events.Event)

	mu     sync.Mutex
	guests map[string]*guestChannel
}

func newChannelKeeper(self string, cfg *configs.Config, dial hypervisor.Channeler, l ledger.Store, started *startedBook, clock Clock, log *slog.Logger) *channelKeeper {
	return &channelKeeper{self: self, cfg: cfg, dial: dial, ledger: l, started: started, clock: clock, log: log,
		guests: map[string]*guestChannel{}}
}

// Sync starts a connection for every running guest without one, restarts
// the connection of a guest that was restarted (a new Started time), and
// ends those of guests that no longer run.
func (k *channelKeeper) Sync(ctx context.Context, running []hypervisor.Status) {
	if k.dial == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	seen := map[string]bool{}
	for _, st := range running {
		if _, ok := k.cfg.Guest(st.Name); !ok {
			continue
		}
		seen[st.Name] = true
		if gc, ok := k.guests[st.Name]; ok {
			if gc.started.Equal(st.Started) {
				continue
			}
			gc.cancel()
			delete(k.guests, st.Name)
		}
		cctx, cancel := context.WithCancel(ctx)
		gc := &guestChannel{name: st.Name, started: st.Started, cancel: cancel, done: make(chan struct{}),
			states: map[string]channel.State{}, reports: map[string]arrayReport{}, stallSaid: map[string]bool{}, resynced: map[string]map[string]bool{}}
		k.guests[st.Name] = gc
		go k.run(cctx, gc)
	}
	for name, gc := range k.guests {
		if !seen[name] {
			gc.cancel()
			delete(k.guests, name)
		}
	}
}

// Close ends every connection and waits for them.
func (k *channelKeeper) Close() {
	k.mu.Lock()
	var done []chan struct{}
	for name, gc := range k.guests {
		gc.cancel()
		done = append(done, gc.done)
		delete(k.guests, name)
	}
	k.mu.Unlock()
	for _, d := range done {
		<-d
	}
}

// Legs is every guest's last state per disk.
func (k *channelKeeper) Legs() map[string]map[string]channel.State {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]map[string]channel.State{}
	for name, gc := range k.guests {
		gc.mu.Lock()
		if len(gc.states) > 0 {
			m := map[string]channel.State{}
			for d, s := range gc.states {
				m[d] = s
			}
			out[name] = m
		}
		gc.mu.Unlock()
	}
	return out
}

// Arrays is every running guest's last array report per disk (the array
// metrics).
func (k *channelKeeper) Arrays() map[string]map[string]arrayReport {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]map[string]arrayReport{}
	for name, gc := range k.guests {
		gc.mu.Lock()
		if len(gc.reports) > 0 {
			m := map[string]arrayReport{}
			for d, r := range gc.reports {
				m[d] = r
			}
			out[name] = m
		}
		gc.mu.Unlock()
	}
	return out
}

// Events are a guest's recent events, oldest first.
func (k *channelKeeper) Events(guest string) []channel.Event {
	k.mu.Lock()
	gc := k.guests[guest]
	k.mu.Unlock()
	if gc == nil {
		return nil
	}
	gc.mu.Lock()
	defer gc.mu.Unlock()
	return append([]channel.Event(nil), gc.events...)
}

func (k *channelKeeper) run(ctx context.Context, gc *guestChannel) {
	defer close(gc.done)
	log := k.log.With("guest", gc.name)
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := k.dial.Channel(dctx, gc.name)
		cancel()
		if err != nil {
			log.Debug("guest channel not reachable yet", "err", err)
		} else {
			log.Debug("guest channel connected")
			k.serve(ctx, gc, conn, log)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(channelRetry):
		}
	}
}

// serve reads conn until it ends (the guest or qemu went away, or ctx).
func (k *channelKeeper) serve(ctx context.Context, gc *guestChannel, conn net.Conn, log *slog.Logger) {
	gc.mu.Lock()
	gc.conn = conn
	gc.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer func() {
		gc.mu.Lock()
		gc.conn = nil
		gc.mu.Unlock()
		conn.Close()
	}()
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		v, err := channel.Decode(sc.Bytes())
		if err != nil {
			log.Warn("guest channel: ignoring a message", "err", err)
			continue
		}
		switch m := v.(type) {
		case *channel.State:
			k.onState(ctx, gc, m, log)
		case *channel.Event:
			k.onEvent(ctx, gc, m, log)
		}
	}
}

// nodeOfLeg is the node of a disk's leg named by node or serial.
func (k *channelKeeper) nodeOfLeg(guest, disk, leg string) string {
	for _, l := range k.cfg.Legs() {
		if l.Guest == guest && l.Disk == disk && (l.Node == leg || l.Serial == leg) {
			return l.Node
		}
	}
	return ""
}

func (k *channelKeeper) onState(ctx context.Context, gc *guestChannel, st *channel.State, log *slog.Logger) {
	var nodes []string
	now := k.clock.Now()
	gc.mu.Lock()
	gc.states[st.Disk] = *st
	prev, hadPrev := gc.reports[st.Disk]
	cur := arrayReport{State: *st, Received: now, Track: TrackResync(prev.Track, *st, now)}
	gc.reports[st.Disk] = cur
	var evs []events.Event
	evs, gc.stallSaid[st.Disk] = ArrayTransitions(prev, cur, hadPrev, gc.stallSaid[st.Disk], now)
	idle := st.Degraded == 0 && (st.SyncAction == "idle" || st.SyncAction == "")
	if idle {
		for _, l := range st.Legs {
			if l.State != "in_sync" {
				continue
			}
			leg := l.Node
			if leg == "" {
				leg = l.Serial
			}
			if n := k.nodeOfLeg(gc.name, st.Disk, leg); n != "" {
				if markResynced(gc.resynced, n, st.Disk) {
					nodes = append(nodes, n)
				}
			}
		}
	}
	gc.mu.Unlock()
	for _, e := range evs {
		k.record(gc.name, e)
	}
	for _, n := range nodes {
		k.maybeClear(ctx, gc, n, log)
	}
}

func (k *channelKeeper) onEvent(ctx context.Context, gc *guestChannel, ev *channel.Event, log *slog.Logger) {
	gc.mu.Lock()
	gc.events = append(gc.events, *ev)
	if len(gc.events) > recentEvents {
		gc.events = gc.events[len(gc.events)-recentEvents:]
	}
	var node string
	if ev.Event == channel.EventResyncDone {
		node = k.nodeOfLeg(gc.name, ev.Disk, ev.Leg)
		if node != "" {
			markResynced(gc.resynced, node, ev.Disk)
		}
	}
	gc.mu.Unlock()
	log.Info("guest event", "disk", ev.Disk, "event", ev.Event, "leg", ev.Leg, "detail", ev.Detail)
	if kind := guestraidKind(ev.Event); kind != "" {
		detail := ev.Event
		if ev.Leg != "" {
			detail += " " + ev.Leg
		}
		k.record(gc.name, events.Event{Kind: kind, Disk: ev.Disk, Detail: detail, Reason: ev.Detail})
	}
	if node != "" {
		k.maybeClear(ctx, gc, node, log)
	}
}

// record emits e for guest, with the epoch the guest was started at.
func (k *channelKeeper) record(guest string, e events.Event) {
	if k.emit == nil {
		return
	}
	e.Guest = guest
	if ep, ok := k.started.get(guest); ok {
		e.Epoch = ep
	}
	k.emit(e)
}

// markResynced records it and reports whether it is news.
func markResynced(m map[string]map[string]bool, node, disk string) bool {
	if m[node] == nil {
		m[node] = map[string]bool{}
	}
	if m[node][disk] {
		return false
	}
	m[node][disk] = true
	return true
}

// ResyncedEverywhere reports whether every disk of guest with a leg on
// node has been seen resynced: a node's stale mark covers all its legs of
// the guest, so it is cleared only when the last of them is whole again.
func ResyncedEverywhere(cfg *configs.Config, guest, node string, resynced map[string]bool) bool {
	g, ok := cfg.Guest(guest)
	if !ok {
		return false
	}
	any := false
	for _, d := range g.Disks {
		for _, n := range d.Legs {
			if n == node {
				any = true
				if !resynced[d.Name] {
					return false
				}
			}
		}
	}
	return any
}

// maybeClear clears node's stale mark of the guest if the ledger has one
// this run may clear, and tells the guest its new host info.
func (k *channelKeeper) maybeClear(ctx context.Context, gc *guestChannel, node string, log *slog.Logger) {
	gc.mu.Lock()
	done := ResyncedEverywhere(k.cfg, gc.name, node, gc.resynced[node])
	gc.mu.Unlock()
	if !done {
		return
	}
	uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cur, err := k.ledger.Get(uctx, gc.name)
	if err != nil {
		log.Warn("cannot read the ledger to clear a stale leg", "leg", node, "err", err)
		return
	}
	if _, stale := cur.Stale[node]; !stale || cur.Owner != k.self {
		return
	}
	// The guest resynced under the epoch it was started with; a mark
	// made later (a newer claim) must survive.
	upTo, ok := k.started.get(gc.name)
	if !ok {
		upTo = cur.Epoch
	}
	rec, err := k.ledger.Update(uctx, gc.name, func(r *ledger.Record) error {
		if r.Owner != k.self {
			return fmt.Errorf("the ledger now gives %s to %s", gc.name, r.Owner)
		}
		if !ledger.ClearStale(r, node, upTo) {
			return errNothingToClear
		}
		r.By, r.Why, r.Updated = k.self, "leg "+node+" resynced", k.clock.Now().UTC()
		return nil
	})
	if errors.Is(err, errNothingToClear) {
		return
	}
	if err != nil {
		log.Warn("cannot clear a stale leg in the ledger; will try again on the next report", "leg", node, "err", err)
		// Forget what was seen: the guest's next idle state (every 5 s)
		// marks the legs again and brings another attempt.
		gc.mu.Lock()
		delete(gc.resynced, node)
		gc.mu.Unlock()
		return
	}
	log.Info("stale leg resynced: mark cleared in the ledger", "leg", node, "epoch", rec.Epoch)
	h, err := fencing.HostInfo(k.cfg, gc.name, k.self, rec.Epoch, rec.StaleLegs())
	if err != nil {
		log.Warn("cannot build the guest's new host info", "err", err)
		return
	}
	if err := gc.send(h); err != nil {
		log.Warn("cannot send the guest its new host info", "err", err)
	}
}

// send writes one message to the guest.
func (gc *guestChannel) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	gc.mu.Lock()
	defer gc.mu.Unlock()
	if gc.conn == nil {
		return errors.New("the channel is not connected")
	}
	_ = gc.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_, err = gc.conn.Write(append(b, '\n'))
	return err
}
