package cli

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/events"
)

var evAt = time.Date(2026, 12, 4, 12, 0, 1, 0, time.Local)

// eventsFenced serves PathEvents from evs, filtered as fenced does.
func eventsFenced(t *testing.T, evs []events.Event, missing map[string]string) (*fakeFenced, *[]string) {
	f := startFenced(t)
	var queries []string
	f.mux.HandleFunc("GET "+api.PathEvents, func(w http.ResponseWriter, r *http.Request) {
		q, err := api.ParseEventsQuery(r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		f.mu.Unlock()
		out := api.EventsResponse{Events: []events.Event{}, Missing: missing}
		for _, e := range evs {
			if (events.Filter{Guest: q.Guest, Since: q.Since}).Match(e) {
				out.Events = append(out.Events, e)
			}
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	return f, &queries
}

func TestEventsCmd(t *testing.T) {
	evs := []events.Event{
		{Time: evAt, Node: "node-a", Kind: events.KindSelfFence, Guest: "web1", Epoch: 4, Detail: "owner none", Reason: "self-fence: the lease was last renewed 7.1s ago"},
		{Time: evAt.Add(3 * time.Second), Node: "node-b", Kind: events.KindFailover, Guest: "web1", Detail: "automatic failover", Reason: "failed", Err: "start node-b: qemu exited"},
		{Time: evAt.Add(4 * time.Second), Node: "node-b", Kind: events.KindResyncStart, Guest: "db1", Disk: "root", Detail: "recover"},
	}
	f, queries := eventsFenced(t, evs, map[string]string{"witness": "dial tcp: i/o timeout"})
	code, out, errs := run("events", "--node", "node-b", "--socket", f.socket)
	require.Equal(t, ExitOK, code, errs)
	assert.Equal(t, "2026-12-04 12:00:01.000  node-a  self-fence  web1  epoch 4  owner none: self-fence: the lease was last renewed 7.1s ago\n"+
		"2026-12-04 12:00:04.000  node-b  failover  web1  automatic failover: failed  error: start node-b: qemu exited\n"+
		"2026-12-04 12:00:05.000  node-b  resync-start  db1/root  recover\n", out)
	assert.Equal(t, "witness's events are missing: dial tcp: i/o timeout\n", errs)

	code, out, errs = run("events", "--guest", "db1", "--json", "--node", "node-b", "--socket", f.socket)
	require.Equal(t, ExitOK, code, errs)
	var e events.Event
	require.NoError(t, json.Unmarshal([]byte(out), &e))
	assert.Equal(t, evs[2], func() events.Event { e.Time = e.Time.Local(); return e }())

	code, _, errs = run("events", "--since", "2026-12-04T12:00:04+00:00", "--node", "node-b", "--socket", f.socket)
	require.Equal(t, ExitOK, code, errs)
	f.mu.Lock()
	assert.Contains(t, (*queries)[len(*queries)-1], "since=2026-12-04T12%3A00%3A04Z")
	f.mu.Unlock()

	code, _, errs = run("events", "--since", "yesterday", "--node", "node-b", "--socket", f.socket)
	assert.Equal(t, ExitUsage, code)
	assert.Contains(t, errs, "neither a duration")
	code, _, errs = run("events", "--node", "node-b", "--socket", "/nonexistent/f.sock")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errs, "cannot reach node-b's mhcodi-fenced")
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	got, err := parseSince("30m", now)
	require.NoError(t, err)
	assert.Equal(t, now.Add(-30*time.Minute), got)
	_, err = parseSince("-5m", now)
	assert.Error(t, err)
}

// scriptedEvents answers each Events call with the next answer.
type scriptedEvents struct {
	mu      sync.Mutex
	answers []func(api.EventsQuery) (api.EventsResponse, error)
	asked   []api.EventsQuery
}

func (s *scriptedEvents) Events(_ context.Context, q api.EventsQuery) (api.EventsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, q)
	if len(s.answers) == 0 {
		return api.EventsResponse{}, nil
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	return a(q)
}

func TestFollowEventsPrintsEachOnceAndSurvivesAnOutage(t *testing.T) {
	e1 := events.Event{Time: evAt, Node: "node-a", Kind: events.KindSelfFence, Guest: "web1"}
	e2 := events.Event{Time: evAt.Add(time.Second), Node: "node-b", Kind: events.KindFailover, Guest: "web1", Reason: "started"}
	e3 := events.Event{Time: evAt.Add(time.Second), Node: "node-b", Kind: events.KindOwner, Guest: "web1", Epoch: 5}
	e4 := events.Event{Time: evAt.Add(2 * time.Second), Node: "node-b", Kind: events.KindFailover, Guest: "web1", Reason: "done"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	answer := func(evs ...events.Event) func(api.EventsQuery) (api.EventsResponse, error) {
		return func(api.EventsQuery) (api.EventsResponse, error) { return api.EventsResponse{Events: evs}, nil }
	}
	s := &scriptedEvents{answers: []func(api.EventsQuery) (api.EventsResponse, error){
		answer(e1, e2),
		answer(e2, e3), // e2 again (since is inclusive), e3 at the same time
		func(api.EventsQuery) (api.EventsResponse, error) {
			return api.EventsResponse{}, errors.New("connection refused")
		},
		func(api.EventsQuery) (api.EventsResponse, error) {
			return api.EventsResponse{}, errors.New("connection refused")
		},
		answer(e2, e3, e4),
		func(api.EventsQuery) (api.EventsResponse, error) { cancel(); return api.EventsResponse{}, nil },
	}}
	tick := make(chan time.Time)
	go func() {
		for {
			select {
			case tick <- time.Time{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	var out, errs strings.Builder
	p := &eventPrinter{out: &out, errs: &errs, said: map[string]string{}}
	require.NoError(t, followEvents(ctx, s, api.EventsQuery{Guest: "web1"}, tick, p, func(err error) error { return err }))
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 4, out.String())
	assert.Contains(t, lines[0], "self-fence")
	assert.Contains(t, lines[1], "failover  web1  started")
	assert.Contains(t, lines[2], "owner")
	assert.Contains(t, lines[3], "done")
	assert.Equal(t, 1, strings.Count(errs.String(), "connection refused"), "an outage is said once")
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Equal(t, evAt.Add(time.Second), s.asked[1].Since, "asks from the last event printed")
	assert.Equal(t, "web1", s.asked[1].Guest)
}
