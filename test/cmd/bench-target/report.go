package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mhcodi/mhcodi/test/iscsitest"
)

// cell is one workload against one target.
type cell struct {
	IOPS  float64 `json:"iops,omitempty"`
	MiBps float64 `json:"mib_per_s,omitempty"`
	// Status is "" for a measurement, else "stalled", "error" or the
	// target's note ("n/a (not built)"); Err says more.
	Status string `json:"status,omitempty"`
	Err    string `json:"error,omitempty"`
	// IOs is how many requests the row completed; CPUSeconds and Switches
	// what the target process used meanwhile (utime+stime from
	// /proc/PID/stat; voluntary and nonvoluntary context switches of its
	// threads), zero when it runs in the bench process.
	IOs        float64 `json:"ios,omitempty"`
	CPUSeconds float64 `json:"target_cpu_seconds,omitempty"`
	Switches   int64   `json:"target_context_switches,omitempty"`
	// PeakRSS is the target's peak resident set during the row (VmHWM
	// reset before it), zero when it could not be measured.
	PeakRSS int64 `json:"target_peak_rss_bytes,omitempty"`
}

// peakRSS is the row's peak RSS, or n/a.
func (c cell) peakRSS() string {
	if c.PeakRSS <= 0 {
		return "n/a"
	}
	return iscsitest.FormatBytes(c.PeakRSS)
}

// cpuPer100k is the target's CPU-seconds per 100k I/Os, or n/a.
func (c cell) cpuPer100k() string {
	if !c.ok() || c.IOs <= 0 || c.CPUSeconds <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", c.CPUSeconds/c.IOs*1e5)
}

// switchesPerIO is the target's context switches per I/O, or n/a.
func (c cell) switchesPerIO() string {
	if !c.ok() || c.IOs <= 0 || c.Switches <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", float64(c.Switches)/c.IOs)
}

func (c cell) ok() bool { return c.Status == "" }

func (c cell) String() string {
	if !c.ok() {
		return c.Status
	}
	return fmt.Sprintf("%.0f IOPS  %.1f MiB/s", c.IOPS, c.MiBps)
}

// progress is String with the target's CPU and context switches.
func (c cell) progress() string {
	if !c.ok() || c.CPUSeconds <= 0 {
		return c.String()
	}
	return fmt.Sprintf("%s  %s CPU-s/100k I/O  %s cs/I/O", c.String(), c.cpuPer100k(), c.switchesPerIO())
}

// targetResult is one target's column.
type targetResult struct {
	Name    string `json:"name"`
	Runs    []cell `json:"runs"`
	PeakRSS int64  `json:"peak_rss_bytes,omitempty"`
	RSSNote string `json:"peak_rss_note,omitempty"`
	// Restarts counts restarts after a stalled row.
	Restarts int    `json:"restarts_after_stall,omitempty"`
	Note     string `json:"note,omitempty"`
}

// fill sets every row to status (a target that could not run).
func (t *targetResult) fill(rows []string, status string) {
	t.Runs = make([]cell, len(rows))
	for i := range t.Runs {
		t.Runs[i] = cell{Status: status}
	}
}

func (t targetResult) run(i int) cell {
	if i < len(t.Runs) {
		return t.Runs[i]
	}
	return cell{Status: "missing"}
}

// results is the whole run.
type results struct {
	Size     int64          `json:"file_size_bytes"`
	Duration time.Duration  `json:"row_duration_ns"`
	Elapsed  time.Duration  `json:"elapsed_ns"`
	Rows     []string       `json:"rows"`
	Targets  []targetResult `json:"targets"`
}

func (r results) target(name string) (targetResult, bool) {
	for _, t := range r.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return targetResult{}, false
}

// printTable writes the table: one row per workload, a column per target,
// then targetd's ratios to tgt and gotgt (IOPS ratios; MiB/s ratios are
// the same, the request size being the row's), then peak RSS.
func printTable(w io.Writer, r results) {
	fmt.Fprintf(w, "\nbench-target: %s file, %v per row, %d CPUs, loopback; IOPS and MiB/s (1 MiB = 2^20 bytes)\n\n",
		iscsitest.FormatBytes(r.Size), r.Duration, runtime.NumCPU())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	hdr := []string{"workload"}
	for _, t := range r.Targets {
		hdr = append(hdr, t.Name)
	}
	ratios := []string{"tgt", "gotgt"}
	for _, p := range ratios {
		hdr = append(hdr, "targetd/"+p)
	}
	fmt.Fprintln(tw, strings.Join(hdr, "\t"))
	td, haveTD := r.target("targetd")
	for i, row := range r.Rows {
		cols := []string{row}
		for _, t := range r.Targets {
			cols = append(cols, t.run(i).String())
		}
		for _, p := range ratios {
			cols = append(cols, ratio(td, haveTD, r, p, i))
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	cols := []string{"peak RSS"}
	for _, t := range r.Targets {
		switch {
		case t.PeakRSS == 0:
			cols = append(cols, "n/a")
		case t.RSSNote != "":
			cols = append(cols, iscsitest.FormatBytes(t.PeakRSS)+" ("+t.RSSNote+")")
		default:
			cols = append(cols, iscsitest.FormatBytes(t.PeakRSS))
		}
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t"))
	_ = tw.Flush()

	// CPU and context switches of each target process per row.
	perRow := func(title string, f func(cell) string) {
		fmt.Fprintf(w, "\n%s\n\n", title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		hdr := []string{"workload"}
		for _, t := range r.Targets {
			hdr = append(hdr, t.Name)
		}
		fmt.Fprintln(tw, strings.Join(hdr, "\t"))
		for i, row := range r.Rows {
			cols := []string{row}
			for _, t := range r.Targets {
				cols = append(cols, f(t.run(i)))
			}
			fmt.Fprintln(tw, strings.Join(cols, "\t"))
		}
		_ = tw.Flush()
	}
	perRow("target CPU-seconds per 100k I/Os (utime+stime of the target process around each row, login included)", cell.cpuPer100k)
	perRow("target context switches per I/O (voluntary+nonvoluntary, summed over the target's threads)", cell.switchesPerIO)
	perRow("target peak RSS during the row (VmHWM, reset before each row)", cell.peakRSS)

	// What the cells cannot hold.
	var notes []string
	for _, t := range r.Targets {
		if t.Note != "" {
			notes = append(notes, fmt.Sprintf("%s: %s", t.Name, t.Note))
		}
		if t.Restarts > 0 {
			notes = append(notes, fmt.Sprintf("%s: restarted %d times, after each stalled row", t.Name, t.Restarts))
		}
		for i, c := range t.Runs {
			if c.Err != "" {
				notes = append(notes, fmt.Sprintf("%s, %s: %s: %s", t.Name, r.Rows[i], c.Status, oneLine(c.Err)))
			}
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range notes {
			fmt.Fprintln(w, "  "+n)
		}
	}
	fmt.Fprintf(w, "\ntotal time %v\n", r.Elapsed.Round(time.Second))
}

// ratio is targetd's IOPS over peer's for row i, or why there is none.
func ratio(td targetResult, haveTD bool, r results, peer string, i int) string {
	p, ok := r.target(peer)
	if !haveTD || !ok {
		return "n/a"
	}
	a, b := td.run(i), p.run(i)
	if !a.ok() || !b.ok() || b.IOPS == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a.IOPS/b.IOPS)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func writeJSON(path string, r results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("json: %w", err)
	}
	return nil
}
