package fenced

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/events"
	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/fencing/ops"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// ResyncStallAfter is how long a resync may stand still before it is an
// event and a verify finding (the metric
// mhcodi_fenced_array_sync_stalled_seconds shows it from the first
// second).
const ResyncStallAfter = ops.ResyncStallAfter

// StalledArrays are the arrays whose sync stands still at now, with for
// how long in seconds (nil when none).
func StalledArrays(arrays map[string]map[string]arrayReport, now time.Time) map[string]map[string]float64 {
	var out map[string]map[string]float64
	for g, disks := range arrays {
		for d, r := range disks {
			st := r.Track.Stalled(now)
			if st <= 0 {
				continue
			}
			if out == nil {
				out = map[string]map[string]float64{}
			}
			if out[g] == nil {
				out[g] = map[string]float64{}
			}
			out[g][d] = st.Seconds()
		}
	}
	return out
}

// emit records e in this node's journal and hands it to the hook; it
// never blocks on either for long (the journal is a local append).
func (s *Server) emit(e events.Event) {
	if e.Time.IsZero() {
		e.Time = s.clock.Now().UTC()
	}
	e.Node = s.self
	if s.journal != nil {
		if err := s.journal.Append(e); err != nil {
			s.log.Warn("cannot record an event", "kind", e.Kind, "guest", e.Guest, "err", err)
		}
	}
	if s.hook != nil {
		s.hook.Notify(e)
	}
}

// OwnerChanges are the events of the records whose owner or epoch moved
// between before and after (a claim, a failover, an evacuation).
func OwnerChanges(before, after []ledger.Record, why string) []events.Event {
	prev := map[string]ledger.Record{}
	for _, r := range before {
		prev[r.Guest] = r
	}
	var out []events.Event
	for _, r := range after {
		p := prev[r.Guest]
		if r.Owner == p.Owner && r.Epoch == p.Epoch {
			continue
		}
		out = append(out, events.Event{Kind: events.KindOwner, Guest: r.Guest, Epoch: r.Epoch,
			Detail: fmt.Sprintf("%s → %s", orNone(p.Owner), orNone(r.Owner)), Reason: why})
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// recordOp runs an operation and records it: a failover (kind auto,
// planned or forced) or another operation, with the ownership changes it
// made.
func (s *Server) recordOp(ctx context.Context, op, guest, detail string, run func() error) error {
	// Who owned what before: a quick read (a forced failover runs without
	// quorum, and must not wait for it), else the monitor's last read.
	lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	before, berr := s.ledger.List(lctx)
	cancel()
	if berr != nil {
		if cached, at := s.ledger.cached(); !at.IsZero() {
			before, berr = cached, nil
		}
	}
	kind := events.KindOperation
	if strings.Contains(op, "failover") {
		kind = events.KindFailover
		s.emit(events.Event{Kind: kind, Guest: guest, Detail: detail, Reason: "started"})
	}
	err := run()
	e := events.Event{Kind: kind, Guest: guest, Detail: detail, Reason: "done"}
	if err != nil {
		e.Reason, e.Err = "failed", err.Error()
	}
	if berr == nil {
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		after, aerr := s.ledger.List(lctx)
		cancel()
		if aerr == nil {
			for _, oc := range OwnerChanges(before, after, detail) {
				s.emit(oc)
				if oc.Guest == guest {
					e.Epoch = oc.Epoch
				}
			}
		}
	}
	s.emit(e)
	return err
}

// opDetail names an operation in the event log.
func opDetail(r api.OpRequest) string {
	switch {
	case r.Op == api.OpFailover && r.Force:
		return "forced failover"
	case r.Op == api.OpFailover:
		return "planned failover"
	}
	return r.Op
}

// guestraidKind maps a guestraid event to the log's kind ("" for those
// not worth a line of the cluster's history).
func guestraidKind(ev string) string {
	switch ev {
	case channel.EventFail, channel.EventRemoved, channel.EventReAdd, channel.EventAdd, channel.EventWipe,
		channel.EventLeftOut, channel.EventSplit, channel.EventError:
		return events.KindLeg
	case channel.EventResyncDone:
		return events.KindResyncDone
	case channel.EventDegraded:
		return events.KindDegraded
	}
	return ""
}

// ArrayTransitions are the events an array's new state report brings
// against the previous one: a sync that starts, a degraded array whole
// again, a resync that stood still for ResyncStallAfter (once per stall).
// stallSaid says whether the stall was already an event; the second
// result is its new value.
func ArrayTransitions(prev, cur arrayReport, hadPrev, stallSaid bool, now time.Time) ([]events.Event, bool) {
	var out []events.Event
	disk := cur.State.Disk
	if Syncing(cur.State.SyncAction) && (!hadPrev || !Syncing(prev.State.SyncAction)) {
		out = append(out, events.Event{Kind: events.KindResyncStart, Disk: disk, Detail: cur.State.SyncAction})
	}
	if hadPrev && prev.State.Degraded > 0 && cur.State.Degraded == 0 {
		out = append(out, events.Event{Kind: events.KindRecovered, Disk: disk})
	}
	if cur.Track.Since != prev.Track.Since {
		stallSaid = false
	}
	if st := cur.Track.Stalled(now); st >= ResyncStallAfter && !stallSaid {
		out = append(out, events.Event{Kind: events.KindResyncStalls, Disk: disk, Detail: cur.State.SyncAction,
			Reason: fmt.Sprintf("no progress for %s at %.1f %%", st.Round(time.Second), cur.State.Progress*100)})
		stallSaid = true
	}
	return out, stallSaid
}

// handleEvents answers PathEvents: this node's journal (scope=node), or
// it merged with every peer's that answers.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	q, err := api.ParseEventsQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad request: since: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, s.Events(r.Context(), q))
}

// Events is the event log as this node can read it.
func (s *Server) Events(ctx context.Context, q api.EventsQuery) api.EventsResponse {
	f := events.Filter{Guest: q.Guest, Since: q.Since}
	own := []events.Event{}
	if s.journal != nil {
		own = s.journal.List(f)
	}
	if q.NodeOnly {
		return api.EventsResponse{Events: own}
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	lists := [][]events.Event{own}
	missing := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range s.cfg.Nodes {
		if n.Name == s.self {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp api.EventsResponse
			ec, ok := s.client(n.Name).(api.EventsClient)
			err := fmt.Errorf("its client cannot read events")
			if ok {
				resp, err = ec.Events(ctx, api.EventsQuery{Guest: q.Guest, Since: q.Since, NodeOnly: true})
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				missing[n.Name] = err.Error()
				return
			}
			lists = append(lists, resp.Events)
		}()
	}
	wg.Wait()
	out := api.EventsResponse{Events: events.Merge(lists...)}
	if out.Events == nil {
		out.Events = []events.Event{}
	}
	if len(missing) > 0 {
		out.Missing = missing
	}
	return out
}
