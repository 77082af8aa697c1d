package iscsitest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ProcUsage is what a process has used so far: CPU time of all its threads
// (utime+stime from /proc/PID/stat, which includes threads that exited) and
// context switches of its live threads (summed over /proc/PID/task/*/status;
// a thread that exited takes its count with it, which Go's long-lived
// threads rarely do).
type ProcUsage struct {
	CPU               time.Duration
	Voluntary, Forced int64 // voluntary / nonvoluntary context switches
}

// Sub is the usage between an earlier sample u0 and u.
func (u ProcUsage) Sub(u0 ProcUsage) ProcUsage {
	return ProcUsage{CPU: u.CPU - u0.CPU, Voluntary: u.Voluntary - u0.Voluntary, Forced: u.Forced - u0.Forced}
}

// Switches is all context switches.
func (u ProcUsage) Switches() int64 { return u.Voluntary + u.Forced }

// clockTick is USER_HZ, 100 on every Linux architecture Go supports here.
const clockTick = 100

// ReadProcUsage samples pid's usage.
func ReadProcUsage(pid int) (ProcUsage, error) {
	var u ProcUsage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, fmt.Errorf("cpu usage: %w", err)
	}
	if u.CPU, err = parseStatCPU(b); err != nil {
		return u, err
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, p := range tasks {
		sb, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited meanwhile
		}
		v, f := parseCtxtSwitches(sb)
		u.Voluntary += v
		u.Forced += f
	}
	return u, nil
}

// parseStatCPU reads utime+stime (fields 14 and 15) of a /proc/PID/stat
// line; the command name in parentheses may hold spaces.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu usage: malformed stat %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu usage: short stat %q", b)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu usage: stat fields %q %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// parseCtxtSwitches reads the context switch counts of a status file.
func parseCtxtSwitches(b []byte) (vol, nonvol int64) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
			vol, _ = strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
		} else if rest, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
			nonvol, _ = strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
		}
	}
	return vol, nonvol
}

// ResetPeakRSS sets pid's peak resident set (VmHWM) back to its current
// resident set (writing 5 to /proc/PID/clear_refs; root or the process's
// owner), so that a later PeakRSSOf measures one stretch of its life.
func ResetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// PeakRSSOf is pid's peak resident set in bytes (VmHWM).
func PeakRSSOf(pid int) (int64, error) { return vmHWM(pid) }
