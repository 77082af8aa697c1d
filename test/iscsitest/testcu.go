package iscsitest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
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
	// ExpectFail names tests that are known to fail, with the reason and
	// the text the failure must show (see ExpectedFailure). A test named
	// here that fails otherwise stays Failed, and one that passes is
	// UnexpectedPass: either way the entry needs looking at.
	ExpectFail map[string]ExpectedFailure
	// Initiator and Initiator2 override iscsi-test-cu's -i and -I names.
	Initiator, Initiator2 string
	// MultipathURL, when set, is passed as iscsi-test-cu's second URL: a
	// second path to the same LU (it may be the same URL: a second
	// session is a second I_T nexus), without which every MultipathIO
	// test skips itself.
	MultipathURL string
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
	if o.MultipathURL != "" {
		if err := checkURL(o.MultipathURL); err != nil {
			return nil, err
		}
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
	if o.MultipathURL != "" {
		argv = append(argv, o.MultipathURL)
	}

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
	// iscsi-test-cu exits 1 when CUnit recorded a failure (a test's or a
	// suite setup's); a disagreement means the parse missed something.
	// Compared before the expected failures are applied: CUnit counted
	// them as the failures they are.
	failedRaw := rep.count(Failed)
	rep.applyAllow(o.Allow)
	rep.applyExpectFail(o.ExpectFail)
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
	if failed := failedRaw+rep.SuitesFailed > 0; failed != (res.exitCode != 0) {
		return rep, fmt.Errorf("iscsi-test-cu %s: exit status %d but parsed %d failed tests and %d failed suites; output: %s",
			url, res.exitCode, failedRaw, rep.SuitesFailed, tail(res.output, 1500))
	}
	o.Logger.Info("iscsi-test-cu done", "url", url, "tests", len(rep.Tests), "problems", len(rep.Problems()), "elapsed", res.elapsed)
	return rep, nil
}

// ExpectedFailure is an ExpectFail entry.
type ExpectedFailure struct {
	// Reason says why the failure is not targetd's: shown in reports.
	Reason string
	// Match must occur in the failed assertions (TestResult.Detail), so
	// that the entry covers that one failure and no other.
	Match string
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
	// ExpectedFail: a failure the caller's ExpectFail names, failing
	// the way it says.
	ExpectedFail Status = "failed (expected)"
	// UnexpectedPass: a test ExpectFail names that passed (or skipped):
	// the entry is stale. Counts as a failure.
	UnexpectedPass Status = "PASSED (expected to fail)"
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
func (r TestResult) OK() bool {
	return r.Status == Passed || r.Status == AllowedSkip || r.Status == ExpectedFail
}

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
	// Used holds the Allow and ExpectFail keys that matched a result, so
	// that a caller can find entries that no longer match anything.
	Used map[string]bool
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
	fmt.Fprintf(&b, "%d tests: %d passed, %d failed, %d skipped (not allowed), %d skipped (allowed), %d failed (expected), %d passed (expected to fail), %d stalled; %d suites failed setup\n",
		len(ts), counts[Passed], counts[Failed], counts[Skipped], counts[AllowedSkip], counts[ExpectedFail], counts[UnexpectedPass], counts[Stalled], r.SuitesFailed)
	for _, t := range ts {
		fmt.Fprintf(&b, "  %-8s %s", t.Status, t.Name())
		if t.Detail != "" {
			fmt.Fprintf(&b, ": %s", strings.ReplaceAll(t.Detail, "\n", "; "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Count is how many tests have status s.
func (r *TestCUReport) Count(s Status) int { return r.count(s) }

// Missing lists the names in want ("Suite.Test") that the run did not
// report, in want's order: a suite that silently lost tests.
func (r *TestCUReport) Missing(want []string) []string {
	got := make(map[string]bool, len(r.Tests))
	for _, t := range r.Tests {
		got[t.Name()] = true
	}
	var out []string
	for _, n := range want {
		if !got[n] {
			out = append(out, n)
		}
	}
	return out
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
		key := t.Name()
		reason, ok := allow[key]
		if !ok {
			key = t.Suite
			reason, ok = allow[key]
		}
		if ok {
			r.Tests[i].Status = AllowedSkip
			r.Tests[i].Detail = t.Detail + " — allowed: " + reason
			r.use(key)
		}
	}
}

// applyExpectFail turns failures named by expect, failing as it says,
// into ExpectedFail, and the tests it names that did not fail into
// UnexpectedPass. Entries are "Suite.Test": a whole suite failing on
// purpose is not a thing to allow.
func (r *TestCUReport) applyExpectFail(expect map[string]ExpectedFailure) {
	for i, t := range r.Tests {
		e, ok := expect[t.Name()]
		if !ok {
			continue
		}
		r.use(t.Name())
		switch t.Status {
		case Failed:
			if strings.Contains(t.Detail, e.Match) {
				r.Tests[i].Status = ExpectedFail
				r.Tests[i].Detail = t.Detail + " — expected: " + e.Reason
			} else {
				r.Tests[i].Detail = t.Detail + " — expected to fail with " + strconv.Quote(e.Match) + ", failed otherwise"
			}
		case Passed, Skipped, AllowedSkip:
			r.Tests[i].Status = UnexpectedPass
			r.Tests[i].Detail = strings.TrimSpace(t.Detail + " — expected to fail (" + e.Reason + "): remove the entry if this is fixed")
		}
	}
}

func (r *TestCUReport) use(key string) {
	if r.Used == nil {
		r.Used = map[string]bool{}
	}
	r.Used[key] = true
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

// TestCUList is what iscsi-test-cu --list prints: its families of tests
// (libiscsi 1.19: ALL, SCSI, iSCSI, LINUX) and each family's tests.
type TestCUList struct {
	// Families in the order --list prints them.
	Families []string
	// Tests maps a family to its tests as "Suite.Test", in list order:
	// the names a run of --test=FAMILY reports.
	Tests map[string][]string
}

// ListTestCU runs iscsi-test-cu --list. A caller that runs whole families
// compares each run with this list (TestCUReport.Missing), so a test the
// tool lists but a run does not report fails rather than vanishes.
func ListTestCU(ctx context.Context) (*TestCUList, error) {
	bin, err := Tool("iscsi-test-cu")
	if err != nil {
		return nil, err
	}
	res, err := runClient(ctx, clientSpec{name: "iscsi-test-cu --list", argv: []string{bin, "--list"}, timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	if res.stalled || res.exitCode != 0 {
		return nil, fmt.Errorf("iscsi-test-cu --list: exit %d (stalled %v): %s", res.exitCode, res.stalled, tail(res.output, 1500))
	}
	l, err := parseTestCUList(res.output)
	if err != nil {
		return nil, fmt.Errorf("iscsi-test-cu --list: %w", err)
	}
	return l, nil
}
