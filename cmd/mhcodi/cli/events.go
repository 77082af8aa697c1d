package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/fencing/api"
	"github.com/mhcodi/mhcodi/fencing/events"
)

// followEvery is how often --follow asks for new events.
const followEvery = time.Second

func newEventsCmd(g *globals) *cobra.Command {
	f := &fencedFlags{}
	var guest, since string
	var follow, asJSON bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "The cluster's event log: failovers, fencing, ownership, legs and arrays",
		Long: `Asks the local mhcodi-fenced for the cluster's event log: its own journal
merged, by time, with every other node's that answers (a node that does not
is named on stderr). Each node keeps its last 10 000 events in its state
directory (events.jsonl), so the history survives restarts and a node cut off
from the ledger still records that it fenced itself.

Kinds: owner (the ledger gave a guest to a node at a new epoch), failover
(automatic, planned or forced: started, done, failed), operation, self-fence,
foreign (a guest destroyed where the ledger does not give it), leg (guestraid:
fail, removed, readd, add, wipe, left-out, split, error), resync-start,
resync-done, resync-stalls (no progress for 2 minutes), degraded, recovered.

--since takes a duration back from now (10m, 2h) or an RFC 3339 time;
--follow prints new events as they come until interrupted; --json prints one
JSON object per line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := api.EventsQuery{Guest: guest}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return &exitError{ExitUsage, err}
				}
				q.Since = t
			}
			ec, ok := f.client().(api.EventsClient)
			if !ok {
				return &exitError{ExitInvalid, fmt.Errorf("this mhcodi's fenced client cannot read %s", api.PathEvents)}
			}
			p := &eventPrinter{out: cmd.OutOrStdout(), errs: cmd.ErrOrStderr(), json: asJSON, said: map[string]string{}}
			if !follow {
				ctx, cancel := context.WithTimeout(cmd.Context(), clusterTimeout)
				defer cancel()
				r, err := ec.Events(ctx, q)
				if err != nil {
					return fencedErr(f, err)
				}
				return p.print(r)
			}
			tick := time.NewTicker(followEvery)
			defer tick.Stop()
			return followEvents(cmd.Context(), ec, q, tick.C, p, func(err error) error { return fencedErr(f, err) })
		},
	}
	addFencedFlags(cmd, f)
	cmd.Flags().StringVar(&guest, "guest", "", "only this guest's events")
	cmd.Flags().StringVar(&since, "since", "", "only events since then: a duration back from now (30m) or an RFC 3339 time")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per event and line")
	return cmd
}

func fencedErr(f *fencedFlags, err error) error {
	if api.StatusOf(err) != 0 {
		return &exitError{ExitInvalid, err}
	}
	return f.unreachable(err)
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s: a duration back from now is positive", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: neither a duration (30m) nor an RFC 3339 time (2026-12-04T12:00:00Z)", s)
	}
	return t, nil
}

// followEvents prints the events, then asks again at every tick for
// those since the last one printed, until ctx ends. A fenced that stops
// answering is said once and asked again.
func followEvents(ctx context.Context, ec api.EventsClient, q api.EventsQuery, tick <-chan time.Time, p *eventPrinter, wrap func(error) error) error {
	seen := map[events.Event]bool{} // the events at the newest time printed
	failing := false
	for {
		rctx, cancel := context.WithTimeout(ctx, clusterTimeout)
		r, err := ec.Events(rctx, q)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			fmt.Fprintf(p.errs, "%v; asking again\n", wrap(err))
			failing = true
		case err == nil:
			failing = false
			var fresh []events.Event
			for _, e := range r.Events {
				if !seen[e] {
					fresh = append(fresh, e)
				}
			}
			r.Events = fresh
			if err := p.print(r); err != nil {
				return err
			}
			if n := len(fresh); n > 0 {
				last := fresh[n-1].Time
				if !last.Equal(q.Since) {
					seen = map[events.Event]bool{}
				}
				q.Since = last
				for _, e := range fresh {
					if e.Time.Equal(last) {
						seen[e] = true
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

// eventPrinter prints events as lines or JSON, and each missing node
// once per reason.
type eventPrinter struct {
	out, errs io.Writer
	json      bool
	said      map[string]string
}

func (p *eventPrinter) print(r api.EventsResponse) error {
	for n, why := range r.Missing {
		if p.said[n] != why {
			p.said[n] = why
			fmt.Fprintf(p.errs, "%s's events are missing: %s\n", n, why)
		}
	}
	for _, e := range r.Events {
		if p.json {
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(p.out, "%s\n", b); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintln(p.out, formatEvent(e)); err != nil {
			return err
		}
	}
	return nil
}

// formatEvent is one line: time, node, kind, guest[/disk], epoch, what.
func formatEvent(e events.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %s", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Node, e.Kind)
	if e.Guest != "" {
		b.WriteString("  " + e.Guest)
		if e.Disk != "" {
			b.WriteString("/" + e.Disk)
		}
	}
	if e.Epoch != 0 {
		fmt.Fprintf(&b, "  epoch %d", e.Epoch)
	}
	var what []string
	for _, s := range []string{e.Detail, e.Reason} {
		if s != "" {
			what = append(what, s)
		}
	}
	if len(what) > 0 {
		b.WriteString("  " + strings.Join(what, ": "))
	}
	if e.Err != "" {
		b.WriteString("  error: " + e.Err)
	}
	return b.String()
}
