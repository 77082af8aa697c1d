package cmd_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVersion builds every binary the way make build does, with the
// version linked in, and checks that each prints it with --version (and
// -version for those on the flag package), on stdout with status 0.
func TestVersion(t *testing.T) {
	const v = "1.2.3-4-gdeadbeef"
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-X github.com/mhcodi/mhcodi/internal/version.Version="+v,
		"-o", dir+string(filepath.Separator), "./...").CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	want := " " + v + " (" + runtime.Version() + ")\n"
	names := []string{"mhcodi"}
	for name := range daemons {
		names = append(names, name)
	}
	for _, name := range names {
		flags := []string{"--version"}
		if name != "mhcodi" {
			flags = append(flags, "-version")
		}
		for _, f := range flags {
			code, stdout, stderr := runBin(t, filepath.Join(dir, name), f)
			assert.Equal(t, 0, code, "%s %s: %s", name, f, stderr)
			assert.Equal(t, name+want, stdout, "%s %s", name, f)
			assert.Empty(t, stderr, "%s %s", name, f)
		}
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, len(names), "every binary of cmd/ is checked")
}
