package raid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/guestraid/channel"
	"github.com/mhcodi/mhcodi/guestraid/md"
)

// System is md as Service uses it; *md.System is the real one.
type System interface {
	Serials() (map[string]string, error)
	BlockDevs() ([]string, error)
	Array(name string) (md.Array, error)
	Examine(ctx context.Context, dev string) (*md.Super, error)
	ExamineBitmap(ctx context.Context, dev string) (md.Bitmap, error)
	Readable(dev string) bool
	WriteSectors(dev string) (uint64, error)
	DevBytes(dev string) (int64, error)
	Create(ctx context.Context, c md.CreateSpec) error
	Assemble(ctx context.Context, name string, devs []string) error
	Add(ctx context.Context, name, dev string) error
	ReAdd(ctx context.Context, name, dev string) error
	Remove(name, dev string) error
	Wipe(ctx context.Context, dev string) error
	SetDevState(name, dev, word string) error
	SetSyncAction(name, action string) error
	Stop(ctx context.Context, name string) error
}

// Sink receives what Service reports: events and state messages (the
// channel to the host; nil-safe).
type Sink interface {
	Send(v any)
}

// Service carries out the Watcher's decisions on a System.
type Service struct {
	Sys   System
	W     *Watcher
	Log   *slog.Logger
	Sink  Sink
	Clock func() time.Time
	// StateFile keeps the host info and the wiped legs across processes
	// (the initramfs's assemble and the system's watch); "" for none.
	StateFile string

	superCache map[string]cachedSuper
	saved      string
}

type cachedSuper struct {
	sectors uint64
	at      time.Time
	super   *md.Super
	err     error
}

func (s *Service) now() time.Time {
	if s.Clock != nil {
		return s.Clock()
	}
	return time.Now()
}

// Emit logs an event and sends it to the host.
func (s *Service) Emit(ev channel.Event) {
	attrs := []any{"disk", ev.Disk, "event", ev.Event}
	if ev.Leg != "" {
		attrs = append(attrs, "leg", ev.Leg)
	}
	if ev.DirtyBytes != 0 {
		attrs = append(attrs, "dirty_bytes", ev.DirtyBytes)
	}
	if ev.ResyncBytes != 0 {
		attrs = append(attrs, "resync_bytes", ev.ResyncBytes)
	}
	if ev.ArrayBytes != 0 {
		attrs = append(attrs, "array_bytes", ev.ArrayBytes)
	}
	attrs = append(attrs, "detail", ev.Detail)
	level := slog.LevelInfo
	switch ev.Event {
	case channel.EventError, channel.EventSplit, channel.EventFail, channel.EventDegraded, channel.EventLeftOut, channel.EventNoHostInfo:
		level = slog.LevelWarn
	}
	s.Log.Log(context.Background(), level, "guestraid event", attrs...)
	if s.Sink != nil {
		s.Sink.Send(ev)
	}
}

func (s *Service) note(d DiskSpec, bytes int64, n Note) channel.Event {
	return channel.Event{Type: channel.TypeEvent, Time: channel.Timestamp(s.now()), Disk: d.Name,
		Event: n.Event, Leg: n.Leg, Detail: n.Detail, ArrayBytes: bytes}
}

// Scan finds the RAID1 legs of every virtio-blk device (for the case of
// no host info).
func (s *Service) Scan(ctx context.Context) ([]ScannedDev, error) {
	devs, err := s.Sys.BlockDevs()
	if err != nil {
		return nil, err
	}
	serials, err := s.Sys.Serials()
	if err != nil {
		return nil, err
	}
	bySerialDev := map[string]string{}
	for ser, dev := range serials {
		bySerialDev[dev] = ser
	}
	var out []ScannedDev
	for _, dev := range devs {
		sd := ScannedDev{Dev: dev, Serial: bySerialDev[dev]}
		sb, err := s.Sys.Examine(ctx, dev)
		switch {
		case err == nil:
			sd.Super = sb
		case errors.Is(err, md.ErrNoSuperblock):
		default:
			s.Log.Warn("scanning for md legs", "dev", dev, "err", err)
			continue
		}
		out = append(out, sd)
	}
	return out, nil
}

// Observe reads every disk's array and legs.
func (s *Service) Observe(ctx context.Context) []DiskObs {
	serials, err := s.Sys.Serials()
	if err != nil {
		s.Log.Warn("listing virtio-blk serials", "err", err)
	}
	if s.superCache == nil {
		s.superCache = map[string]cachedSuper{}
	}
	var out []DiskObs
	for _, d := range s.W.Disks() {
		a, err := s.Sys.Array(d.MD)
		if err != nil {
			s.Log.Warn("reading md sysfs", "md", d.MD, "err", err)
		}
		o := DiskObs{Array: a}
		needArraySuper := false
		for _, leg := range d.Legs {
			lo := LegObs{Dev: serials[leg.Serial]}
			if lo.Dev != "" {
				lo.WriteSectors, _ = s.Sys.WriteSectors(lo.Dev)
				if _, member := a.Member(lo.Dev); !member || !a.Running {
					lo.Readable = s.Sys.Readable(lo.Dev)
					if lo.Readable {
						lo.Super, lo.SuperErr = s.examineCached(ctx, lo.Dev, lo.WriteSectors)
						needArraySuper = needArraySuper || (lo.Super != nil && a.Running)
					}
				} else {
					lo.Readable = true
				}
			}
			o.Legs = append(o.Legs, lo)
		}
		if needArraySuper {
			for _, mb := range a.Members {
				if mb.Has("in_sync") && !mb.Has("faulty") {
					if sb, err := s.Sys.Examine(ctx, mb.Dev); err == nil {
						o.ArraySuper = sb
						break
					}
				}
			}
		}
		out = append(out, o)
	}
	return out
}

// examineCached reads a non-member's superblock again only when the leg
// was written to (this guest is the only writer of its legs) or 30 s
// passed, so a leg left out for good costs no mdadm run per poll.
func (s *Service) examineCached(ctx context.Context, dev string, sectors uint64) (*md.Super, error) {
	now := s.now()
	if c, ok := s.superCache[dev]; ok && c.sectors == sectors && now.Sub(c.at) < 30*time.Second {
		return c.super, c.err
	}
	sb, err := s.Sys.Examine(ctx, dev)
	if errors.Is(err, md.ErrNoSuperblock) {
		sb, err = nil, nil
	}
	s.superCache[dev] = cachedSuper{sectors: sectors, at: now, super: sb, err: err}
	return sb, err
}

// Step observes, decides, acts and reports once; it returns how many
// actions it carried out.
func (s *Service) Step(ctx context.Context) int {
	obs := s.Observe(ctx)
	r := s.W.Step(s.now(), obs)
	for _, ev := range r.Events {
		s.Emit(ev)
	}
	disks := s.W.Disks()
	for _, a := range r.Actions {
		var o DiskObs
		var d DiskSpec
		for i := range disks {
			if disks[i].Name == a.Disk && i < len(obs) {
				d, o = disks[i], obs[i]
			}
		}
		s.apply(ctx, d, o, a)
	}
	for _, st := range r.States {
		if s.Sink != nil {
			s.Sink.Send(st)
		}
	}
	s.Save()
	return len(r.Actions)
}

func (s *Service) apply(ctx context.Context, d DiskSpec, o DiskObs, a Action) {
	ev := func(name, detail string) channel.Event {
		return s.note(d, o.Array.Bytes, Note{Event: name, Leg: a.Leg.ID(), Detail: detail})
	}
	fail := func(err error) {
		s.Emit(ev(channel.EventError, fmt.Sprintf("%s failed: %v", a, err)))
	}
	var before uint64
	if a.Dev != "" {
		before, _ = s.Sys.WriteSectors(a.Dev)
	}
	var err error
	switch a.Kind {
	case ActAssemble:
		err = s.assemble(ctx, d)
	case ActRemove:
		if err = s.Sys.Remove(a.MD, a.Dev); err == nil {
			s.Emit(ev(channel.EventRemoved, fmt.Sprintf("removed faulty %s from %s", a.Dev, a.MD)))
		}
	case ActReAdd:
		dirty, how := s.dirty(ctx, o)
		if err = s.Sys.ReAdd(ctx, a.MD, a.Dev); err == nil {
			e := ev(channel.EventReAdd, fmt.Sprintf("re-added %s to %s through the write-intent bitmap; dirty_bytes %s", a.Dev, a.MD, how))
			e.DirtyBytes = dirty
			s.Emit(e)
		}
	case ActAdd:
		if err = s.Sys.Add(ctx, a.MD, a.Dev); err == nil {
			s.Emit(ev(channel.EventAdd, fmt.Sprintf("added blank %s to %s: full resync", a.Dev, a.MD)))
		}
	case ActWipeAdd:
		before, err = s.wipeAdd(ctx, a, ev)
	case ActSetState:
		if err = s.Sys.SetDevState(a.MD, a.Dev, a.Word); err == nil {
			s.Emit(ev(channel.EventFlags, fmt.Sprintf("%s in %s: %s (%s leg)", a.Dev, a.MD, a.Word, map[bool]string{true: "local", false: "remote"}[a.Leg.Local])))
		}
	case ActCheck:
		if err = s.Sys.SetSyncAction(a.MD, "check"); err == nil {
			s.Emit(ev(channel.EventCheckStart, fmt.Sprintf("check scrub of %s started", a.MD)))
		}
	}
	if err != nil && a.Kind != ActAssemble {
		fail(err)
	}
	s.W.Done(s.now(), a, before, err)
}

// dirty is the dirty part of the array's bitmap: dirty chunks × chunk
// size from `mdadm --examine-bitmap` of an in-sync member (the bitmap the
// re-add copies by).
func (s *Service) dirty(ctx context.Context, o DiskObs) (int64, string) {
	for _, mb := range o.Array.Members {
		if !mb.Has("in_sync") || mb.Has("faulty") {
			continue
		}
		b, err := s.Sys.ExamineBitmap(ctx, mb.Dev)
		if err != nil {
			return 0, fmt.Sprintf("unknown (mdadm -X %s: %v)", mb.Dev, err)
		}
		return b.DirtyBytes(), fmt.Sprintf("= %d dirty of %d bitmap chunks × %d KiB (mdadm -X %s at re-add time)", b.Dirty, b.Bits, b.ChunkBytes>>10, mb.Dev)
	}
	return 0, "unknown (no in-sync member to read the bitmap of)"
}

// wipeAdd wipes a leg and adds it; it returns the leg's write-sector
// count between the two (the wipe's own writes are not resync).
func (s *Service) wipeAdd(ctx context.Context, a Action, ev func(string, string) channel.Event) (uint64, error) {
	if a.Member {
		if err := s.Sys.SetDevState(a.MD, a.Dev, "faulty"); err != nil {
			return 0, err
		}
		// md may hold the faulty member a moment (pending I/O).
		var err error
		for i := 0; i < 50; i++ {
			if err = s.Sys.Remove(a.MD, a.Dev); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return 0, err
		}
	}
	if err := s.Sys.Wipe(ctx, a.Dev); err != nil {
		return 0, err
	}
	s.Emit(ev(channel.EventWipe, fmt.Sprintf("the host marks %s stale: superblock and first 4 MiB zeroed, never re-added through the bitmap", a.Dev)))
	before, _ := s.Sys.WriteSectors(a.Dev)
	if err := s.Sys.Add(ctx, a.MD, a.Dev); err != nil {
		return before, err
	}
	s.Emit(ev(channel.EventAdd, fmt.Sprintf("added wiped %s to %s: full resync", a.Dev, a.MD)))
	return before, nil
}

// BitmapChunk is the write-intent bitmap's chunk for an array of size
// bytes: 1 MiB, doubled until the bitmap has at most 2^18 chunks. A
// returning leg copies whole dirty chunks, so small chunks make re-adds
// cheap (mdadm's default of 64 MiB gives a 256 MiB test array 4 chunks,
// and a 4 KiB write costs a 64 MiB copy); each first write to a clean
// chunk costs a bitmap update, and 2^18 bits (32 KiB) keep the bitmap in
// the space mdadm reserves before the data.
func BitmapChunk(size int64) int64 {
	c := int64(1 << 20)
	for size/c > 1<<18 {
		c *= 2
	}
	return c
}

// assemble starts disk d: probe its legs, plan, create or assemble.
func (s *Service) assemble(ctx context.Context, d DiskSpec) error {
	serials, err := s.Sys.Serials()
	if err != nil {
		return err
	}
	probes := make([]LegProbe, len(d.Legs))
	for i, leg := range d.Legs {
		dev := serials[leg.Serial]
		if dev == "" {
			continue
		}
		probes[i].Dev = dev
		if !s.Sys.Readable(dev) {
			probes[i].Err = errors.New("not readable")
			continue
		}
		sb, err := s.Sys.Examine(ctx, dev)
		switch {
		case err == nil:
			probes[i].Super = sb
		case errors.Is(err, md.ErrNoSuperblock):
		default:
			probes[i].Err = err
		}
	}
	p := PlanAssemble(d, probes)
	for _, n := range p.Notes {
		if n.Event == "degraded" {
			continue // the Watcher reports it when it sees the array
		}
		s.Emit(s.note(d, 0, n))
		for _, leg := range d.Legs {
			if n.Leg != "" && leg.ID() == n.Leg {
				s.W.Reported(d.Name, leg.Serial, n.Event)
			}
		}
	}
	if p.Nothing {
		return errors.New("no leg present")
	}
	var err2 error
	if p.Create {
		var size int64
		before := map[string]uint64{}
		var devs []string
		for i, leg := range d.Legs {
			if probes[i].Dev != "" && probes[i].Err == nil {
				before[leg.Serial], _ = s.Sys.WriteSectors(probes[i].Dev)
				devs = append(devs, probes[i].Dev)
			}
		}
		size = s.legBytes(devs)
		chunk := BitmapChunk(size)
		err2 = s.Sys.Create(ctx, md.CreateSpec{MD: d.MD, Name: d.ArrayName, Devs: p.CreateDevs, WriteMostly: p.WriteMostly, BitmapChunk: chunk})
		if err2 == nil {
			s.W.Created(d.Name, before)
			a, _ := s.Sys.Array(d.MD)
			s.Emit(s.note(d, a.Bytes, Note{Event: channel.EventCreated, Detail: fmt.Sprintf(
				"created %s (%s, RAID1, metadata 1.2, internal bitmap with %d KiB chunks) on %s; initial resync follows",
				d.MD, d.ArrayName, chunk>>10, strings.Join(showDevs(p.CreateDevs), " "))}))
		}
	} else {
		err2 = s.Sys.Assemble(ctx, d.MD, p.Assemble)
		if err2 == nil {
			a, _ := s.Sys.Array(d.MD)
			s.Emit(s.note(d, a.Bytes, Note{Event: channel.EventAssembled, Detail: fmt.Sprintf(
				"assembled %s from %s (superblock of %s decided)", d.MD, strings.Join(p.Assemble, " "), p.Winner)}))
		}
	}
	if err2 != nil {
		s.Emit(s.note(d, 0, Note{Event: channel.EventError, Detail: fmt.Sprintf("starting %s: %v", d.MD, err2)}))
	}
	return err2
}

func showDevs(devs []string) []string {
	out := slices.Clone(devs)
	for i, d := range out {
		if d == "" {
			out[i] = "missing"
		}
	}
	return out
}

// legBytes is the smallest size of devs, for the bitmap chunk; 0 if
// unknown.
func (s *Service) legBytes(devs []string) int64 {
	var min int64
	for _, d := range devs {
		n, err := s.Sys.DevBytes(d)
		if err == nil && (n < min || min == 0) {
			min = n
		}
	}
	return min
}

// savedState is StateFile's content.
type savedState struct {
	Host  *channel.Host `json:"host,omitempty"`
	Wiped []string      `json:"wiped,omitempty"`
}

// Save writes the host info and wiped legs to StateFile when they changed.
func (s *Service) Save() {
	if s.StateFile == "" {
		return
	}
	b, err := json.Marshal(savedState{Host: s.W.Host(), Wiped: s.W.Wiped()})
	if err != nil || string(b) == s.saved {
		return
	}
	if err := os.MkdirAll(filepath.Dir(s.StateFile), 0o755); err == nil {
		tmp := s.StateFile + ".tmp"
		if err = os.WriteFile(tmp, b, 0o644); err == nil {
			err = os.Rename(tmp, s.StateFile)
		}
		if err != nil {
			s.Log.Warn("saving guestraid state", "file", s.StateFile, "err", err)
			return
		}
	}
	s.saved = string(b)
}

// LoadState reads a StateFile: the host info saved there (nil if none)
// and the wiped legs.
func LoadState(path string) (*channel.Host, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var st savedState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Host != nil {
		if err := st.Host.Validate(); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return st.Host, st.Wiped, nil
}

// ApplyHost applies a host message and reports it.
func (s *Service) ApplyHost(h *channel.Host) {
	for _, n := range s.W.SetHost(h) {
		s.Emit(channel.Event{Type: channel.TypeEvent, Time: channel.Timestamp(s.now()), Event: n.Event, Detail: n.Detail})
	}
	s.Save()
}

// Stop stops every array (shutdown), reporting each.
func (s *Service) Stop(ctx context.Context) error {
	var errs []error
	for _, d := range s.W.Disks() {
		a, err := s.Sys.Array(d.MD)
		if err != nil || !a.Running {
			continue
		}
		if err := s.Sys.Stop(ctx, d.MD); err != nil {
			errs = append(errs, err)
			s.Emit(s.note(d, a.Bytes, Note{Event: channel.EventError, Detail: fmt.Sprintf("stopping %s: %v", d.MD, err)}))
			continue
		}
		s.Emit(s.note(d, a.Bytes, Note{Event: channel.EventStopped, Detail: "stopped " + d.MD}))
	}
	return errors.Join(errs...)
}
