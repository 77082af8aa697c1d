// Package writecheck proves, from the write logs of every targetd, that
// fencing kept each guest to one writer: no LUN took writes from two
// initiators at one epoch, and no LUN's epoch went back.
//
// What targetd logs (controlapi.WriteRecord, targetd-<node>-writes.jsonl in
// its state dir) is coalesced: one record for the first successful write
// an initiator makes to a target at an epoch, per targetd run (a restarted
// targetd logs the first write again). The epoch is the target's fencing
// epoch when the write completed, not the initiator's idea of it. So:
//
//   - a fenced-out old owner whose write was still accepted shows up as a
//     second initiator at the new epoch: "two writers in one epoch";
//   - a target whose fencing state went backwards (lost or restored from
//     an old copy) shows up as a record whose epoch is lower than an
//     earlier record's of the same target: "epoch went down".
//
// Counts in the report are numbers of records, not of writes, and time
// ranges run from the first to the last record (the first write of each
// targetd run), not to the last write.
package writecheck

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

// LogGlob matches targetd's write logs in a state directory.
const LogGlob = "targetd-*-writes.jsonl"

// Report is what Check found.
type Report struct {
	// Targets are every target that took writes, by name.
	Targets []Target
	// Errors are the violations, one sentence each; empty when OK.
	Errors []string
}

// Target is one LUN's history.
type Target struct {
	Name string
	// Nodes whose logs hold the target (one, unless two nodes export the
	// same target, which is itself reported as a violation).
	Nodes []string
	// Epochs in ascending order.
	Epochs []Epoch
}

// Epoch is who wrote to a target at one fencing epoch.
type Epoch struct {
	Epoch   uint64
	Writers []Writer // by first record
}

// Writer is one initiator's records at one epoch of one target.
type Writer struct {
	Initiator   string
	Records     int
	First, Last time.Time
}

// OK reports whether no violation was found.
func (r Report) OK() bool { return len(r.Errors) == 0 }

// Target returns the history of the target called name.
func (r Report) Target(name string) (Target, bool) {
	for _, t := range r.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// Writers lists the initiators that wrote to target at epoch.
func (r Report) Writers(target string, epoch uint64) []string {
	t, _ := r.Target(target)
	for _, e := range t.Epochs {
		if e.Epoch == epoch {
			out := make([]string, len(e.Writers))
			for i, w := range e.Writers {
				out[i] = w.Initiator
			}
			return out
		}
	}
	return nil
}

// Latest is a target's newest epoch that took writes, with its writers.
func (t Target) Latest() Epoch {
	if len(t.Epochs) == 0 {
		return Epoch{}
	}
	return t.Epochs[len(t.Epochs)-1]
}

// String tells the report for people: the verdict, the violations, then
// every target's epochs and writers.
func (r Report) String() string {
	var b strings.Builder
	if r.OK() {
		fmt.Fprintf(&b, "write logs OK: %d targets, one writer per epoch, epochs never went down\n", len(r.Targets))
	} else {
		fmt.Fprintf(&b, "write logs: %d violations\n", len(r.Errors))
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "  VIOLATION: %s\n", e)
		}
	}
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "  %s (on %s)\n", t.Name, strings.Join(t.Nodes, ", "))
		for _, e := range t.Epochs {
			for _, w := range e.Writers {
				fmt.Fprintf(&b, "    epoch %d: %s, %d records, %s .. %s\n", e.Epoch, w.Initiator, w.Records,
					w.First.Format("15:04:05.000"), w.Last.Format("15:04:05.000"))
			}
		}
	}
	return b.String()
}

// Check checks the write logs of the nodes (node → its records in log
// order). Within one node's log the order of lines is the order of
// writes (targetd appends under a lock), so "epochs never go down" is
// checked in that order, immune to clock steps.
func Check(logs map[string][]controlapi.WriteRecord) Report {
	type key struct {
		target string
		epoch  uint64
	}
	var r Report
	nodes := make([]string, 0, len(logs))
	for n := range logs {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)

	targets := map[string]*Target{}
	writers := map[key][]Writer{}
	for _, node := range nodes {
		// The highest epoch seen so far per target in this node's log,
		// and the record that carried it.
		high := map[string]controlapi.WriteRecord{}
		for i, rec := range logs[node] {
			if rec.Target == "" || rec.Initiator == "" {
				r.Errors = append(r.Errors, fmt.Sprintf("%s: record %d names no target or no initiator: %+v", node, i+1, rec))
				continue
			}
			ini := strings.ToLower(rec.Initiator)
			t := targets[rec.Target]
			if t == nil {
				t = &Target{Name: rec.Target}
				targets[rec.Target] = t
			}
			if len(t.Nodes) == 0 || t.Nodes[len(t.Nodes)-1] != node {
				t.Nodes = append(t.Nodes, node)
			}
			if h, ok := high[rec.Target]; ok && rec.Epoch < h.Epoch {
				r.Errors = append(r.Errors, fmt.Sprintf(
					"%s on %s: epoch went down: %s wrote at epoch %d at %s, after %s wrote at epoch %d at %s",
					rec.Target, node, ini, rec.Epoch, stamp(rec.Time), h.Initiator, h.Epoch, stamp(h.Time)))
			} else {
				high[rec.Target] = controlapi.WriteRecord{Time: rec.Time, Target: rec.Target, Initiator: ini, Epoch: rec.Epoch}
			}
			k := key{rec.Target, rec.Epoch}
			ws := writers[k]
			j := 0
			for j < len(ws) && ws[j].Initiator != ini {
				j++
			}
			if j == len(ws) {
				ws = append(ws, Writer{Initiator: ini, First: rec.Time, Last: rec.Time})
			}
			w := &ws[j]
			w.Records++
			if rec.Time.Before(w.First) {
				w.First = rec.Time
			}
			if rec.Time.After(w.Last) {
				w.Last = rec.Time
			}
			writers[k] = ws
		}
	}

	names := make([]string, 0, len(targets))
	for n := range targets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := targets[n]
		if len(t.Nodes) > 1 {
			r.Errors = append(r.Errors, fmt.Sprintf("%s is in the write logs of %d nodes (%s): a target lives on one node",
				n, len(t.Nodes), strings.Join(t.Nodes, ", ")))
		}
		for k, ws := range writers {
			if k.target == n {
				sort.SliceStable(ws, func(i, j int) bool { return ws[i].First.Before(ws[j].First) })
				t.Epochs = append(t.Epochs, Epoch{Epoch: k.epoch, Writers: ws})
			}
		}
		sort.Slice(t.Epochs, func(i, j int) bool { return t.Epochs[i].Epoch < t.Epochs[j].Epoch })
		for _, e := range t.Epochs {
			if len(e.Writers) < 2 {
				continue
			}
			var who []string
			for _, w := range e.Writers {
				who = append(who, fmt.Sprintf("%s (first %s)", w.Initiator, stamp(w.First)))
			}
			r.Errors = append(r.Errors, fmt.Sprintf("%s took writes from %d initiators at epoch %d: %s",
				n, len(e.Writers), e.Epoch, strings.Join(who, ", ")))
		}
		r.Targets = append(r.Targets, *t)
	}
	return r
}

// CheckFiles reads write logs and checks them. The node of each log is
// taken from its name (targetd-<node>-writes.jsonl), else the path.
func CheckFiles(paths ...string) (Report, error) {
	if len(paths) == 0 {
		return Report{}, errors.New("writecheck: no write log to check")
	}
	logs := map[string][]controlapi.WriteRecord{}
	for _, p := range paths {
		recs, err := controlapi.ReadWriteLog(p)
		if err != nil {
			return Report{}, fmt.Errorf("writecheck: %w", err)
		}
		node := NodeOf(p)
		logs[node] = append(logs[node], recs...)
	}
	return Check(logs), nil
}

// CheckDirs checks every write log (LogGlob) found in the directories
// (targetd state dirs). A directory without one is fine: a node whose
// targetd took no write yet may not have made it.
func CheckDirs(dirs ...string) (Report, error) {
	var paths []string
	for _, d := range dirs {
		m, err := filepath.Glob(filepath.Join(d, LogGlob))
		if err != nil {
			return Report{}, fmt.Errorf("writecheck: %w", err)
		}
		paths = append(paths, m...)
	}
	if len(paths) == 0 {
		return Report{}, fmt.Errorf("writecheck: no %s in %s", LogGlob, strings.Join(dirs, ", "))
	}
	return CheckFiles(paths...)
}

// NodeOf is the node a write log belongs to, from its file name.
func NodeOf(path string) string {
	base := filepath.Base(path)
	if n, ok := strings.CutPrefix(base, "targetd-"); ok {
		if n, ok := strings.CutSuffix(n, "-writes.jsonl"); ok && n != "" {
			return n
		}
	}
	return path
}

func stamp(t time.Time) string { return t.UTC().Format("15:04:05.000") }
