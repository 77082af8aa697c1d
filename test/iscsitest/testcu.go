package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"
)

// TestCUOptions configures RunTestCU.
type TestCUOptions struct {
	// Allow names skipped tests that are acceptable, with the reason:
	// the key is "Suite.Test" or a whole "Suite" as iscsi-test-cu prints
	// them (e.g. "CompareAndWrite": "tgt does not implement it"). Any other
	// skip is a failure, because iscsi-test-cu counts a skip as a pass.
	Allow map[string]string
	// Initiator and Initiator2 override iscsi-test-cu's -i and -I names.
	Initiator, Initiator2 string
	// AllowSanitize passes -S, letting SANITIZE tests run.
	AllowSanitize bool
	// Timeout bounds the whole run (2 minutes if zero). A suite that hangs
	// (gotgt's OrWrite does) is killed and its test reported as Stalled.
	Timeout time.Duration
	// Logger receives progress; slog.Default() if nil.
	Logger *slog.Logger
}

// RunTestCU runs libiscsi's conformance suite against url with --dataloss
// (without it every test that writes is skipped) and returns one result
// per test. tests are iscsi-test-cu --test names: "SCSI.Read10",
// "iSCSI.iSCSIResiduals.Read10Invalid", "ALL.Inquiry"…
//
// The text output is parsed rather than the -x XML: the XML records a skip
// as a success with no trace of the skip, and the text is the only place
// that names which test skipped. The parse is checked against the run
// summary's totals, so a format change is an error, not a silent pass.
//
// A non-nil error means the run itself is unusable (tool missing, no
// login, garbled output); test failures are in the report.
func RunTestCU(ctx context.Context, url string, tests []string, o TestCUOptions) (*TestCUReport, error) {
	bin, err := Tool("iscsi-test-cu")
	if err != nil {
		return nil, err
	}
	if len(tests) == 0 {
		return nil, errors.New("iscsi-test-cu: no tests named")
	}
	if err := checkURL(url); err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	argv := []string{bin, "--dataloss", "--test=" + strings.Join(tests, ",")}
	if o.AllowSanitize {
		argv = append(argv, "-S")
	}
	if o.Initiator != "" {
		argv = append(argv, "-i", o.Initiator)
	}
	if o.Initiator2 != "" {
		argv = append(argv, "-I", o.Initiator2)
	}
	argv = append(argv, url)

	// iscsi-test-cu writes CUnit files into its working directory in some
	// modes: give it a scratch one.
	dir, err := os.MkdirTemp("", "iscsitest-cu-")
	if err != nil {
		return nil, fmt.Errorf("iscsi-test-cu: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	o.Logger.Info("iscsi-test-cu", "url", url, "tests", tests)
	res, err := runClient(ctx, clientSpec{name: "iscsi-test-cu", argv: argv, dir: dir, timeout: o.Timeout})
	if err != nil {
		return nil, err
	}
	rep, perr := parseTestCU(res.output)
	rep.ExitCode = res.exitCode
	rep.Output = res.output
	rep.Elapsed = res.elapsed
	rep.applyAllow(o.Allow)
	if res.stalled {
		rep.Stalled = true
		rep.markStalled()
		return rep, nil // the partial report says where it hung
	}
	if perr != nil {
		return rep, fmt.Errorf("iscsi-test-cu %s: %w; output: %s", url, perr, tail(res.output, 1500))
	}
	if len(rep.Tests) == 0 {
		return rep, fmt.Errorf("iscsi-test-cu %s ran no test (exit %d): %s", url, res.exitCode, tail(res.output, 1500))
	}
	// iscsi-test-cu exits 1 when CUnit recorded a failure (a test's or a
	// suite setup's); a disagreement means the parse missed something.
	if failed := rep.count(Failed)+rep.SuitesFailed > 0; failed != (res.exitCode != 0) {
		return rep, fmt.Errorf("iscsi-test-cu %s: exit status %d but parsed %d failed tests and %d failed suites; output: %s",
			url, res.exitCode, rep.count(Failed), rep.SuitesFailed, tail(res.output, 1500))
	}
	o.Logger.Info("iscsi-test-cu done", "url", url, "tests", len(rep.Tests), "problems", len(rep.Problems()), "elapsed", res.elapsed)
	return rep, nil
}

// Status is the outcome of one conformance test.
type Status string

const (
	// Passed: the test ran and passed.
	Passed Status = "passed"
	// Failed: the test ran and an assertion failed.
	Failed Status = "FAILED"
	// Skipped: the test skipped itself (not implemented, not applicable)
	// and the caller did not allow it. Counts as a failure.
	Skipped Status = "SKIPPED"
	// AllowedSkip: a skip the caller's allow list names.
	AllowedSkip Status = "skipped (allowed)"
	// Stalled: the test was running when the deadline killed the suite.
	Stalled Status = "STALLED"
)

// TestResult is one iscsi-test-cu test.
type TestResult struct {
	Suite, Test string
	Status      Status
	// Detail is the skip reason, the failed assertions, or the allow-list
	// reason.
	Detail string
}

// Name is "Suite.Test", as the allow list keys it.
func (r TestResult) Name() string { return r.Suite + "." + r.Test }

// OK reports whether the result counts as a pass.
func (r TestResult) OK() bool { return r.Status == Passed || r.Status == AllowedSkip }

// TestCUReport is one iscsi-test-cu run.
type TestCUReport struct {
	Tests []TestResult
	// SuitesFailed counts suites whose setup failed (CUnit's summary), so
	// none of their tests ran.
	SuitesFailed int
	ExitCode     int
	Stalled      bool
	Elapsed      time.Duration
	Output       string // the tool's whole output, for failure messages
}

// OK reports whether every test passed or skipped with permission.
func (r *TestCUReport) OK() bool {
	return len(r.Problems()) == 0 && !r.Stalled && r.SuitesFailed == 0
}

// Problems lists every result that does not count as a pass.
func (r *TestCUReport) Problems() []TestResult {
	var out []TestResult
	for _, t := range r.Tests {
		if !t.OK() {
			out = append(out, t)
		}
	}
	return out
}

// Result finds a test by "Suite.Test".
func (r *TestCUReport) Result(name string) (TestResult, bool) {
	for _, t := range r.Tests {
		if t.Name() == name {
			return t, true
		}
	}
	return TestResult{}, false
}

// Summary is one line per test, problems first, for logs and failures.
func (r *TestCUReport) Summary() string {
	ts := append([]TestResult(nil), r.Tests...)
	sort.SliceStable(ts, func(i, j int) bool { return !ts[i].OK() && ts[j].OK() })
	var b strings.Builder
	counts := map[Status]int{}
	for _, t := range ts {
		counts[t.Status]++
	}
	fmt.Fprintf(&b, "%d tests: %d passed, %d failed, %d skipped (not allowed), %d skipped (allowed), %d stalled; %d suites failed setup\n",
		len(ts), counts[Passed], counts[Failed], counts[Skipped], counts[AllowedSkip], counts[Stalled], r.SuitesFailed)
	for _, t := range ts {
		fmt.Fprintf(&b, "  %-8s %s", t.Status, t.Name())
		if t.Detail != "" {
			fmt.Fprintf(&b, ": %s", strings.ReplaceAll(t.Detail, "\n", "; "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func (r *TestCUReport) count(s Status) int {
	n := 0
	for _, t := range r.Tests {
		if t.Status == s {
			n++
		}
	}
	return n
}

// applyAllow turns skips named by allow into AllowedSkip.
func (r *TestCUReport) applyAllow(allow map[string]string) {
	for i, t := range r.Tests {
		if t.Status != Skipped {
			continue
		}
		reason, ok := allow[t.Name()]
		if !ok {
			reason, ok = allow[t.Suite]
		}
		if ok {
			r.Tests[i].Status = AllowedSkip
			r.Tests[i].Detail = t.Detail + " — allowed: " + reason
		}
	}
}

// markStalled marks the test that had started but not finished.
func (r *TestCUReport) markStalled() {
	for i := range r.Tests {
		if r.Tests[i].Status == "" {
			r.Tests[i].Status = Stalled
			r.Tests[i].Detail = "still running when the deadline killed iscsi-test-cu"
		}
	}
}
