// Package events is the cluster's event log: what fenced did or saw
// (ownership changes, failovers, self-fencing, foreign guests destroyed,
// legs going stale and resyncing, arrays degraded and recovered), kept by
// every node in a bounded journal in its state directory, read across the
// cluster by `mhcodi events`, and handed to an optional alert hook.
//
// Why a journal per node rather than the ledger (etcd): the events that
// matter most happen when the ledger cannot be written — a node that lost
// quorum fences itself, a two-node cluster without a witness is forced
// over. A local append never fails for lack of quorum; the reader merges
// the journals of every node that answers, by time.
package events

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// Kinds of events.
const (
	KindOwner        = "owner"         // the ledger gave a guest to a node at a new epoch (Reason: the operation)
	KindFailover     = "failover"      // a failover started, done or failed (Detail: auto, planned, forced)
	KindOperation    = "operation"     // another operation of the CLI ended (Detail: the operation)
	KindSelfFence    = "self-fence"    // this node destroyed a guest because its lease was not renewed
	KindForeign      = "foreign"       // this node destroyed a guest the ledger gives elsewhere
	KindLeg          = "leg"           // guestraid: a leg failed, was removed, re-added, added, wiped (Detail: guestraid's event)
	KindResyncStart  = "resync-start"  // an array began resyncing a leg
	KindResyncDone   = "resync-done"   // a resync finished
	KindDegraded     = "degraded"      // an array runs with a leg missing
	KindRecovered    = "recovered"     // a degraded array is whole again
	KindResyncStalls = "resync-stalls" // a resync has not progressed for a while
)

// Event is one entry of the log.
type Event struct {
	Time   time.Time `json:"time"`
	Node   string    `json:"node"` // the node that recorded it
	Kind   string    `json:"kind"`
	Guest  string    `json:"guest,omitempty"`
	Disk   string    `json:"disk,omitempty"`
	Epoch  uint64    `json:"epoch,omitempty"`
	Detail string    `json:"detail,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Err    string    `json:"error,omitempty"`
}

// Filter selects events; zero fields select everything.
type Filter struct {
	Guest string
	Since time.Time // events at or after
}

// Match reports whether e passes f.
func (f Filter) Match(e Event) bool {
	return (f.Guest == "" || e.Guest == f.Guest) && (f.Since.IsZero() || !e.Time.Before(f.Since))
}

// Merge merges the nodes' lists into one, oldest first (stable for
// events of the same time), dropping exact duplicates.
func Merge(lists ...[]Event) []Event {
	var out []Event
	seen := map[Event]bool{}
	for _, l := range lists {
		for _, e := range l {
			if !seen[e] {
				seen[e] = true
				out = append(out, e)
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

// DefaultKeep is how many events a journal keeps.
const DefaultKeep = 10000

// Journal is a node's event log: JSON lines in one file, the last Keep
// kept (the file is rewritten down to Keep once it holds twice as many).
type Journal struct {
	path string
	keep int

	mu     sync.Mutex
	recent []Event
	lines  int // lines in the file
}

// OpenJournal opens (or creates) the journal at path and loads its last
// keep events. A damaged line is skipped, not fatal: a crash may cut the
// last one short.
func OpenJournal(path string, keep int) (*Journal, error) {
	if keep <= 0 {
		keep = DefaultKeep
	}
	j := &Journal{path: path, keep: keep}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("events: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		j.lines++
		var e Event
		if json.Unmarshal(sc.Bytes(), &e) == nil && !e.Time.IsZero() {
			j.recent = append(j.recent, e)
		}
	}
	if len(j.recent) > keep {
		j.recent = j.recent[len(j.recent)-keep:]
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return j, nil
}

// Append records e (kept in memory even when the file cannot be written;
// the error says so).
func (j *Journal) Append(e Event) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.recent = append(j.recent, e)
	if len(j.recent) > j.keep {
		j.recent = j.recent[len(j.recent)-j.keep:]
	}
	if j.lines+1 > 2*j.keep {
		if err := j.rewrite(); err != nil {
			return err
		}
		return nil
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	_, werr := f.Write(append(line, '\n'))
	cerr := f.Close()
	if werr != nil || cerr != nil {
		return fmt.Errorf("events: writing %s: %w", j.path, errors.Join(werr, cerr))
	}
	j.lines++
	return nil
}

// rewrite replaces the file with the kept events (atomically).
func (j *Journal) rewrite() error {
	var buf bytes.Buffer
	for _, e := range j.recent {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		buf.Write(append(b, '\n'))
	}
	tmp := j.path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o640); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("events: %w", err)
	}
	j.lines = len(j.recent)
	return nil
}

// List returns the kept events that pass f, oldest first.
func (j *Journal) List(f Filter) []Event {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := []Event{}
	for _, e := range j.recent {
		if f.Match(e) {
			out = append(out, e)
		}
	}
	return out
}
