package iscsitest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// iscsi-test-cu's text mode is CUnit's "basic" interface in verbose mode
// with the tests' own log lines mixed in:
//
//	Suite: Read10
//	  Test: Simple ...passed
//	  Test: VPD ...    [SKIPPED] UNMAP is not implemented.
//	passed
//	  Test: Write10Residuals ...    Second block was overwritten …
//	FAILED
//	    1. test_write10_residuals.c:96  - CU_ASSERT_EQUAL(…)
//	Run Summary:    Type  Total    Ran Passed Failed Inactive
//	              suites      3      3    n/a      0        0
//	               tests      7      7      6      1        0
//
// A test's verdict is the first "passed" or "FAILED" that starts a line or
// directly follows its "..."; log lines may say "[FAILED]" (with brackets)
// anywhere, including after the verdict when a suite's teardown logs.
var (
	suiteRE   = regexp.MustCompile(`^Suite: (\S+)`)
	testRE    = regexp.MustCompile(`^  Test: (\S+) \.\.\.(.*)$`)
	verdictRE = regexp.MustCompile(`^(passed|FAILED)`)
	assertRE  = regexp.MustCompile(`^    \d+\. (.*)$`)
	skipRE    = regexp.MustCompile(`\[SKIPPED\]\s*(.*)`)
	summaryRE = regexp.MustCompile(`^\s+(suites|tests)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)`)
)

// silentSkips maps log lines of libiscsi 1.19 tests that skip through
// CU_PASS("[SKIPPED] …") without logging "[SKIPPED]" to the skip reason:
// CUnit's basic mode never prints CU_PASS messages, so such a line is the
// only trace that the test did not run. set_swp() logs it when the
// target does not let SWP change, and ModeSense6.Control-SWP then passes
// having tested nothing. (The other silent skips of 1.19 log nothing at
// all; none of them applies to a target with a Block Limits VPD page, a
// LUN under 2^31 blocks and MAXIMUM COMPARE AND WRITE LENGTH 255.)
var silentSkips = map[string]string{
	"SWP is not changeable": "Target does not support changing SWP (logged by set_swp)",
}

// summaryRow is one row of CUnit's run summary.
type summaryRow struct{ total, ran, failed int }

// parseTestCU reads iscsi-test-cu's text output. Tests whose verdict never
// came (the run was killed) have an empty Status. The error reports output
// that does not add up; the report holds what could be read.
func parseTestCU(out string) (*TestCUReport, error) {
	rep := &TestCUReport{}
	var (
		suite   string
		cur     = -1 // index in rep.Tests of the test awaiting its verdict
		last    = -1 // index of the test whose assertion lines may follow
		skipMsg string
		sums    = map[string]summaryRow{}
	)
	verdict := func(v string) {
		t := &rep.Tests[cur]
		switch {
		case v == "FAILED":
			t.Status = Failed
		case skipMsg != "":
			t.Status, t.Detail = Skipped, skipMsg
		default:
			t.Status = Passed
		}
		last, cur, skipMsg = cur, -1, ""
	}
	// Lines end in \n; iscsi-test-cu never uses \r here.
	for _, line := range strings.Split(out, "\n") {
		if m := suiteRE.FindStringSubmatch(line); m != nil {
			suite, cur, last = m[1], -1, -1
			continue
		}
		if m := testRE.FindStringSubmatch(line); m != nil {
			rep.Tests = append(rep.Tests, TestResult{Suite: suite, Test: m[1]})
			cur, last, skipMsg = len(rep.Tests)-1, -1, ""
			line = m[2] // the rest may hold the verdict or a log line
			if v := verdictRE.FindString(line); v != "" {
				verdict(v)
				continue
			}
		}
		if m := summaryRE.FindStringSubmatch(line); m != nil {
			sums[m[1]] = summaryRow{total: atoi(m[2]), ran: atoi(m[3]), failed: atoi(m[5])}
			continue
		}
		if cur >= 0 {
			if m := skipRE.FindStringSubmatch(line); m != nil && skipMsg == "" {
				skipMsg = strings.TrimSpace(m[1])
			}
			if why, ok := silentSkips[strings.TrimSpace(line)]; ok && skipMsg == "" {
				skipMsg = why
			}
			if v := verdictRE.FindString(line); v != "" {
				verdict(v)
			}
			continue
		}
		if last >= 0 && rep.Tests[last].Status == Failed {
			if m := assertRE.FindStringSubmatch(line); m != nil {
				a := m[1]
				// A teardown log line may be glued to the last assertion.
				if i := strings.Index(a, "    ["); i > 0 {
					a = a[:i]
				}
				t := &rep.Tests[last]
				if t.Detail != "" {
					t.Detail += "\n"
				}
				t.Detail += strings.TrimSpace(a)
			}
		}
	}
	rep.SuitesFailed = sums["suites"].failed
	return rep, checkSummary(rep, sums)
}

// checkSummary compares the parsed tests with CUnit's own counts.
func checkSummary(rep *TestCUReport, sums map[string]summaryRow) error {
	tests, ok := sums["tests"]
	if !ok {
		return fmt.Errorf("no run summary in the output (parsed %d tests)", len(rep.Tests))
	}
	if tests.ran != len(rep.Tests) {
		return fmt.Errorf("run summary says %d tests ran, parsed %d", tests.ran, len(rep.Tests))
	}
	if n := rep.count(Failed); tests.failed != n {
		return fmt.Errorf("run summary says %d tests failed, parsed %d", tests.failed, n)
	}
	for _, t := range rep.Tests {
		if t.Status == "" {
			return fmt.Errorf("no verdict for %s", t.Name())
		}
	}
	return nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s) // the regexp admitted digits only
	return n
}

// parseTestCUList reads iscsi-test-cu --list: one name a line, FAMILY,
// FAMILY.Suite or FAMILY.Suite.Test, each family and suite before its
// members. Anything else is an error: a format change must not shrink
// the list a caller checks runs against.
func parseTestCUList(out string) (*TestCUList, error) {
	l := &TestCUList{Tests: map[string][]string{}}
	suites := map[string]bool{} // "FAMILY.Suite"
	for i, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		parts := strings.Split(line, ".")
		for _, p := range parts {
			if p == "" || strings.ContainsAny(p, " \t") {
				return nil, fmt.Errorf("line %d: %q is not FAMILY[.Suite[.Test]]", i+1, line)
			}
		}
		fam := parts[0]
		if _, ok := l.Tests[fam]; !ok && len(parts) > 1 {
			return nil, fmt.Errorf("line %d: %q comes before its family %s", i+1, line, fam)
		}
		switch len(parts) {
		case 1:
			if _, ok := l.Tests[fam]; ok {
				return nil, fmt.Errorf("line %d: family %s listed twice", i+1, fam)
			}
			l.Families = append(l.Families, fam)
			l.Tests[fam] = nil
		case 2:
			suites[line] = true
		case 3:
			if !suites[parts[0]+"."+parts[1]] {
				return nil, fmt.Errorf("line %d: %q comes before its suite", i+1, line)
			}
			l.Tests[fam] = append(l.Tests[fam], parts[1]+"."+parts[2])
		default:
			return nil, fmt.Errorf("line %d: %q is not FAMILY[.Suite[.Test]]", i+1, line)
		}
	}
	if len(l.Families) == 0 {
		return nil, fmt.Errorf("no families in %d bytes of output", len(out))
	}
	for _, f := range l.Families {
		if len(l.Tests[f]) == 0 {
			return nil, fmt.Errorf("family %s lists no tests", f)
		}
	}
	return l, nil
}
