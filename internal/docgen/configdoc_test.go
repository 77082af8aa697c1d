package docgen

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEveryConfigKeyDocumented fails when a key of the cluster file has no
// comment in package configs: mhcodi.yaml(5) is made from those comments,
// so a key without one would be a key the manual does not explain.
func TestEveryConfigKeyDocumented(t *testing.T) {
	keys, err := ConfigKeys("../../configs")
	require.NoError(t, err)
	require.Greater(t, len(keys), 40)
	for _, k := range keys {
		assert.NotEmpty(t, k.Doc, "configs: key %s (%s) has no doc comment on its field (or, for a section or list, its type); mhcodi.yaml(5) is generated from them", k.Path, k.Kind)
	}
	page := string(ConfigManPage(Header{Version: "1.0", Date: time.Unix(0, 0)}, keys, ""))
	for _, k := range keys {
		assert.Contains(t, page, "\n.B "+esc(k.Path)+"\n", k.Path)
	}
}

// TestConfigKeysDefaults: the defaults come from loading a file that
// leaves the keys out, so they are the loader's.
func TestConfigKeysDefaults(t *testing.T) {
	keys, err := ConfigKeys("../../configs")
	require.NoError(t, err)
	byPath := map[string]Key{}
	for _, k := range keys {
		byPath[k.Path] = k
	}
	for path, want := range map[string]string{
		"timeouts.lease_ttl":   "10s",
		"guests[].memory":      "512M",
		"guests[].vcpus":       "1",
		"nodes[].role":         "storage",
		"hypervisor.qemu":      "qemu-system-x86_64",
		"fencing.lease_margin": "3s",
	} {
		assert.Equal(t, want, byPath[path].Default, path)
	}
	assert.Empty(t, byPath["cluster.name"].Default)
	assert.Equal(t, "MHCODI_TIMEOUTS_LEASE_TTL", byPath["timeouts.lease_ttl"].Env)
	assert.Empty(t, byPath["guests[].memory"].Env, "no environment variable inside a list")
	assert.Equal(t, "section", byPath["fencing.etcd"].Kind)
	assert.Equal(t, "list", byPath["guests[].disks"].Kind)
	assert.Equal(t, "duration", byPath["timeouts.lease_ttl"].Kind)
}

func TestConfigManPageExample(t *testing.T) {
	keys, err := ConfigKeys("../../configs")
	require.NoError(t, err)
	ex, err := os.ReadFile("../../configs/examples/two-node.yaml")
	require.NoError(t, err)
	page := string(ConfigManPage(Header{Version: "1.0", Date: time.Unix(0, 0)}, keys, string(ex)))
	assert.True(t, strings.HasPrefix(page, ".TH MHCODI.YAML 5 \"1970-01-01\" \"mhcodi 1.0\""), page[:80])
	assert.Contains(t, page, ".SH EXAMPLE\n")
	assert.Contains(t, page, `iqn_prefix: iqn.2026\-11.org.example`)
}

func TestFlagUsage(t *testing.T) {
	usage := "Usage of x:\n  -config string\n    \tcluster file (default \"/etc/c.yaml\")\n  -v\tverbose\n  -n duration\n    \tfirst line\n    \tsecond line\n"
	assert.Equal(t, []Flag{
		{Name: "config", Arg: "string", Usage: `cluster file (default "/etc/c.yaml")`},
		{Name: "v", Usage: "verbose"},
		{Name: "n", Arg: "duration", Usage: "first line second line"},
	}, ParseFlagUsage(usage))
	cmds := ParseCommandList("usage: g <command>\n\ncommands:\n  assemble   create it\n  watch      watch it\n\nrun ...\n")
	assert.Equal(t, []Subcommand{{Name: "assemble", Summary: "create it"}, {Name: "watch", Summary: "watch it"}}, cmds)
	doc, summary, err := PackageDoc("../../cmd/mhcodi-targetd/main.go")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(doc, "mhcodi-targetd "), doc)
	assert.NotEmpty(t, summary)
	assert.NotContains(t, summary, "mhcodi-targetd")
	page := string(ProgramPage{Name: "x", Section: "8", Summary: "does x", Doc: doc,
		Flags: ParseFlagUsage(usage)}.Render(Header{Version: "1", Date: time.Unix(0, 0)}))
	assert.Contains(t, page, ".TP\n\\fB\\-config\\fR \\fIstring\\fR\n")
}
