package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/cmd/mhcodi/cli"
)

// guide returns the command lines of the README's real-host guide: the
// sh block of "## Installing on real hosts", without comments.
func guide(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repo, "README.md"))
	require.NoError(t, err)
	_, sec, ok := strings.Cut(string(readme), "\n## Installing on real hosts\n")
	require.True(t, ok, "README.md has no section \"Installing on real hosts\"")
	sec, _, _ = strings.Cut(sec, "\n## ")
	_, block, ok := strings.Cut(sec, "```sh\n")
	require.True(t, ok, "the guide has no sh block")
	block, _, ok = strings.Cut(block, "```")
	require.True(t, ok)
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestGuide checks every command of the real-host guide against what is
// built: each mhcodi line names an existing subcommand with flags it has
// and the arguments it takes, each unit systemctl enables is one the
// package installs, and the package apt installs is the one make deb
// makes. The guide covers every step from the package to a checked guest.
func TestGuide(t *testing.T) {
	lines := guide(t)
	pkg, err := os.ReadFile(filepath.Join(repo, "packaging/mhcodi.yaml"))
	require.NoError(t, err)
	var seen []string
	for _, line := range lines {
		f := strings.Fields(line)
		switch f[0] {
		case "mhcodi":
			path, err := checkCLI(f[1:])
			assert.NoError(t, err, line)
			seen = append(seen, path)
		case "systemctl":
			for _, unit := range f[1:] {
				if strings.HasPrefix(unit, "-") || unit == "enable" {
					continue
				}
				tmpl, _, _ := strings.Cut(unit, "@")
				if strings.Contains(unit, "@") {
					tmpl += "@"
				}
				assert.Contains(t, string(pkg), "dst: /lib/systemd/system/"+tmpl+".service", "%s: the package has no unit %s", line, unit)
			}
		case "apt":
			assert.Contains(t, line, "./mhcodi_<version>-1_amd64.deb")
			assert.Contains(t, string(pkg), "\nname: mhcodi\n")
		}
	}
	for _, step := range []string{"config check", "cluster init", "image build", "volume create",
		"guest create", "guest start", "status", "verify"} {
		assert.Contains(t, seen, step, "the guide has no mhcodi %s", step)
	}
}

// checkCLI parses an mhcodi command line against the command tree and
// returns the command's path ("guest start").
func checkCLI(args []string) (string, error) {
	root := cli.Command()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return "", err
	}
	if cmd == root || cmd.HasSubCommands() || !cmd.Runnable() {
		return "", fmt.Errorf("%q does not name a command", cmd.CommandPath())
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return "", err
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return "", err
	}
	return strings.TrimPrefix(cmd.CommandPath(), "mhcodi "), nil
}

func TestCheckCLI(t *testing.T) {
	p, err := checkCLI(strings.Fields("guest start web1 --node node-a"))
	assert.NoError(t, err)
	assert.Equal(t, "guest start", p)
	for _, bad := range []string{"guest strat web1 --node a", "guest start --node a", "guest start web1 --nod a",
		"volume create --node a extra", "guest", "nosuch"} {
		_, err := checkCLI(strings.Fields(bad))
		assert.Error(t, err, bad)
	}
}
