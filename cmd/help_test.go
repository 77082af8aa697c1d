// Package cmd_test checks what every mhcodi binary says when asked for
// help: the usage on standard output, exit status 0, and argument names
// that read as one word.
package cmd_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// daemons are the binaries built on the standard flag package, each with
// the commands that have flags of their own ("" for none).
var daemons = map[string][]string{
	"mhcodi-targetd":   {""},
	"mhcodi-initiator": {""},
	"mhcodi-fenced":    {""},
	"mhcodi-bridge":    {""},
	"guestraid":        {"", "assemble", "watch", "status", "boot"},
	"mhcodi-workload":  {"", "write", "verify", "bench"},
}

// binDir holds the binaries of this tree, built once for all tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mhcodi-help-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var buildOnce = sync.OnceValues(func() ([]byte, error) {
	return exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "./...").CombinedOutput()
})

// build builds every binary of cmd/ (once), so the tests check this tree,
// not whatever bin/ holds, and returns their directory.
func build(t *testing.T) string {
	t.Helper()
	out, err := buildOnce()
	require.NoError(t, err, "go build ./cmd/...:\n%s", out)
	return binDir
}

func runBin(t *testing.T, path string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(path, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run %s: %v", path, err)
	}
	return code, out.String(), errb.String()
}

// A flag line of the flag package ("  -name arg" then the usage on the next
// line, or "  -x arg\tusage") and of pflag ("  -c, --config arg   usage",
// "      --json   usage"); arg is the argument name the usage text gave.
var (
	goFlagLine    = regexp.MustCompile(`^  -([A-Za-z0-9][\w.-]*)(?: ([^\t]*))?(?:\t.*)?$`)
	pflagFlagLine = regexp.MustCompile(`^\s+(?:-\w, )?--([A-Za-z0-9][\w.-]*)((?: \S+)*)(?:  .*)?$`)
)

// argNames returns flag name -> argument name for every flag line of a
// usage text.
func argNames(usage string, re *regexp.Regexp) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(usage, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			out[m[1]] = strings.TrimSpace(m[2])
		}
	}
	return out
}

// checkArgNames fails on an argument name of more than one word: the flag
// packages take a back-quoted word of the usage text as the argument name
// (`-state-dir mhcodi import status`).
func checkArgNames(t *testing.T, what, usage string, re *regexp.Regexp) {
	t.Helper()
	names := argNames(usage, re)
	assert.NotEmpty(t, names, "%s: no flag lines found in:\n%s", what, usage)
	for flag, arg := range names {
		assert.NotContains(t, arg, " ", "%s: flag %s has the argument name %q", what, flag, arg)
		assert.NotContains(t, arg, "`", "%s: flag %s", what, flag)
		// The flag package's default for a flag.Var: says nothing.
		assert.NotEqual(t, "value", arg, "%s: flag %s has no argument name (back-quote one in its usage)", what, flag)
	}
}

func TestHelp(t *testing.T) {
	dir := build(t)
	for name, cmds := range daemons {
		for _, sub := range cmds {
			for _, h := range []string{"--help", "-h"} {
				args := []string{h}
				if sub != "" {
					args = []string{sub, h}
				}
				what := strings.Join(append([]string{name}, args...), " ")
				code, stdout, stderr := runBin(t, filepath.Join(dir, name), args...)
				assert.Equal(t, 0, code, "%s: exit status\n%s", what, stderr)
				assert.Empty(t, stderr, what)
				assert.Regexp(t, `^(?i)usage`, stdout, what)
				if sub == "" && len(cmds) > 1 {
					// The command list: each command is named.
					for _, c := range cmds[1:] {
						assert.Contains(t, stdout, "\n  "+c+" ", what)
					}
					continue
				}
				checkArgNames(t, what, stdout, goFlagLine)
			}
		}
	}
}

// TestHelpBadFlag: a flag that does not exist is still an error, on
// standard error with the usage, and exit status 2.
func TestHelpBadFlag(t *testing.T) {
	dir := build(t)
	for name, cmds := range daemons {
		args := []string{"--no-such-flag"}
		if sub := cmds[len(cmds)-1]; sub != "" {
			args = []string{sub, "--no-such-flag"}
		}
		code, stdout, stderr := runBin(t, filepath.Join(dir, name), args...)
		assert.Equal(t, 2, code, name)
		assert.Empty(t, stdout, name)
		assert.Contains(t, stderr, "flag provided but not defined: -no-such-flag", name)
		assert.Contains(t, stderr, "Usage of "+name, name)
	}
}

// TestCLIHelp walks mhcodi's command tree from its help texts: every
// command answers --help on stdout with 0 and its flags read well.
func TestCLIHelp(t *testing.T) {
	bin := filepath.Join(build(t), "mhcodi")
	seen := 0
	var walk func(path []string)
	walk = func(path []string) {
		what := strings.Join(append([]string{"mhcodi"}, path...), " ")
		code, stdout, stderr := runBin(t, bin, append(path, "--help")...)
		require.Equal(t, 0, code, "%s --help: %s", what, stderr)
		assert.Empty(t, stderr, what)
		assert.Contains(t, stdout, "Usage:", what)
		checkArgNames(t, what, stdout, pflagFlagLine)
		seen++
		_, rest, ok := strings.Cut(stdout, "\nAvailable Commands:\n")
		if !ok {
			return
		}
		block, _, _ := strings.Cut(rest, "\n\n")
		for _, line := range strings.Split(block, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] == "help" || f[0] == "completion" {
				continue
			}
			walk(append(append([]string{}, path...), f[0]))
		}
	}
	walk(nil)
	assert.Greater(t, seen, 10, "the walk should reach every command")

	code, stdout, _ := runBin(t, bin, "-h")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "Usage:")
}
