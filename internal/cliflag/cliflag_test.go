package cliflag

import (
	"bytes"
	"flag"
	"testing"

	"github.com/stretchr/testify/assert"
)

func newSet(stderr *bytes.Buffer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs, fs.String("node", "", "this `node`'s name")
}

func TestHelpGoesToStdoutWithZero(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		var stdout, stderr bytes.Buffer
		fs, _ := newSet(&stderr)
		code, ok := Parse(fs, []string{arg}, &stdout)
		assert.False(t, ok, arg)
		assert.Equal(t, 0, code, arg)
		assert.Contains(t, stdout.String(), "Usage of tool:\n  -node node\n", arg)
		assert.Empty(t, stderr.String(), arg)
		assert.Equal(t, &stderr, fs.Output(), "the output is put back")
	}
}

func TestBadFlagGoesToStderrWithTwo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	fs, _ := newSet(&stderr)
	code, ok := Parse(fs, []string{"-nod", "a"}, &stdout)
	assert.False(t, ok)
	assert.Equal(t, 2, code)
	assert.Empty(t, stdout.String())
	assert.Contains(t, stderr.String(), "flag provided but not defined: -nod\nUsage of tool:\n")
}

func TestParses(t *testing.T) {
	var stdout, stderr bytes.Buffer
	fs, node := newSet(&stderr)
	code, ok := Parse(fs, []string{"-node", "node-a", "rest"}, &stdout)
	assert.True(t, ok)
	assert.Equal(t, 0, code)
	assert.Equal(t, "node-a", *node)
	assert.Equal(t, []string{"rest"}, fs.Args())
	assert.Empty(t, stdout.String()+stderr.String())
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"-version", "--version"} {
		var stdout, stderr bytes.Buffer
		fs := flag.NewFlagSet("tool sub", flag.ContinueOnError)
		fs.SetOutput(&stderr)
		code, ok := Parse(fs, []string{arg}, &stdout)
		assert.False(t, ok, arg)
		assert.Equal(t, 0, code, arg)
		assert.Regexp(t, `^tool \S+ \(go[^)]*\)\n$`, stdout.String(), arg)
		assert.Empty(t, stderr.String(), arg)
	}
	// A command with a -version flag of its own keeps it.
	var stdout, stderr bytes.Buffer
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	v := fs.String("version", "", "metadata version")
	code, ok := Parse(fs, []string{"-version", "1.2"}, &stdout)
	assert.True(t, ok)
	assert.Equal(t, 0, code)
	assert.Equal(t, "1.2", *v)
	assert.Empty(t, stdout.String()+stderr.String())
}
