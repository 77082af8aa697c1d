package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/naming"
)

const twoNode = "../../../configs/examples/two-node.yaml"

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestConfigCheckTable(t *testing.T) {
	code, out, errs := run("config", "check", "--config", twoNode)
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, out, "valid. Cluster prod: 2 storage node(s), 0 witness(es), 2 guest(s), 3 disk(s), 6 leg(s).")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2+1+6+1+1+2, out) // summary, blank, header, 6 legs, blank, header, 2 NICs
	assert.Regexp(t, `^GUEST\s+DISK\s+NODE\s+SIZE\s+VOLUME\s+TARGET IQN\s+PATH\s+SERIAL\s+WWN$`, lines[2])
	l := naming.Leg{Cluster: "prod", Guest: "web1", Disk: "root", Node: "node-b"}
	assert.Regexp(t, `^web1\s+root\s+node-b\s+10G\s+/dev/vg0/mhc-web1-root\s+iqn\.2026-11\.org\.example:prod\.node-b\.web1\.root\s+/dev/mhcodi/web1/root/node-b\s+`+
		naming.Serial(l)+`\s+`+naming.FormatWWN(naming.WWN(l))+`$`, lines[4])
	assert.Regexp(t, `^GUEST\s+NIC\s+NETWORK\s+VLAN\s+MAC\s+ADDRESS\s+TAP\s+BRIDGES$`, lines[10])
	assert.Regexp(t, `^web1\s+svc\s+svc\s+10\s+`+naming.MAC("prod", "web1", "svc").String()+`\s+203\.0\.113\.10/24\s+`+
		naming.TapName("web1", "svc")+`\s+node-a:br-svc node-b:br-vlans$`, lines[11])
}

func TestConfigCheckJSON(t *testing.T) {
	code, out, errs := run("config", "check", "--config", twoNode, "--json")
	require.Equal(t, ExitOK, code, errs)
	var r struct {
		Valid bool
		Nodes []struct {
			Name, Role, SANAddress, InitiatorIQN string
		}
		Legs []struct {
			Guest, Disk, Node   string
			SizeBytes           uint64 `json:"size_bytes"`
			TargetIQN           string `json:"target_iqn"`
			DevPath             string `json:"dev_path"`
			Serial, WWN, Volume string
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	assert.True(t, r.Valid)
	require.Len(t, r.Legs, 6)
	assert.Equal(t, uint64(10<<30), r.Legs[0].SizeBytes)
	assert.Equal(t, "mhc-web1-root", r.Legs[0].Volume)
	assert.Equal(t, "/dev/mhcodi/web1/root/node-a", r.Legs[0].DevPath)
	p, err := naming.ParseIQN(r.Legs[1].TargetIQN)
	require.NoError(t, err)
	assert.Equal(t, "node-b", p.Leg.Node)
	assert.NoError(t, naming.ValidSerial(r.Legs[0].Serial))
	_, err = naming.ParseWWN(r.Legs[0].WWN)
	assert.NoError(t, err)
}

// The broken copies the foundation issue names: each exits 1 and names the
// file, the key path and the rule.
func TestConfigCheckBroken(t *testing.T) {
	base, err := os.ReadFile(twoNode)
	require.NoError(t, err)
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown key", "    vcpus: 2\n", "    vcpus: 2\n    cpu_count: 2\n", `guests[0].cpu_count: unknown key "cpu_count"`},
		{"leg on undefined node", "legs: [node-a, node-b]", "legs: [node-a, node-c]", `guests[0].disks[0].legs[1]: node "node-c" is not defined`},
		{"upper-case name", "  - name: web1\n", "  - name: WEB1\n", `guests[0].name: "WEB1" has upper-case letters`},
		{"over-long name", "  - name: web1\n", "  - name: web1-" + strings.Repeat("x", 30) + "\n", "guests[0].name: \"web1-" + strings.Repeat("x", 30) + "\" is 35 characters, the limit is 31"},
		{"two legs on one node", "legs: [node-a, node-b]", "legs: [node-b, node-b]", `guests[0].disks[0].legs[1]: node "node-b" already holds legs[0] of this disk; the two legs must be on different nodes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "cluster.yaml")
			require.NoError(t, os.WriteFile(p, []byte(strings.Replace(string(base), tc.old, tc.new, 1)), 0o644))
			code, out, errs := run("config", "check", "--config", p)
			assert.Equal(t, ExitInvalid, code)
			assert.Empty(t, out, "nothing on stdout for an invalid config")
			assert.Contains(t, errs, p+": "+tc.want)

			code, out, _ = run("config", "check", "--config", p, "--json")
			assert.Equal(t, ExitInvalid, code)
			var r struct {
				Valid  bool
				Errors []struct{ File, Key, Rule string }
			}
			require.NoError(t, json.Unmarshal([]byte(out), &r), out)
			assert.False(t, r.Valid)
			require.NotEmpty(t, r.Errors)
			assert.Equal(t, p, r.Errors[0].File)
		})
	}
}

func TestConfigCheckMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.yaml")
	code, _, errs := run("config", "check", "--config", p)
	assert.Equal(t, ExitInvalid, code)
	assert.Equal(t, "mhcodi: "+p+": cannot read: no such file or directory\n", errs)
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("MHCODI_CONFIG", twoNode)
	code, out, errs := run("config", "check")
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, out, "Cluster prod")
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"config", "chek"}, {"config", "check", "--nope"}, {"config", "check", "extra"}} {
		code, _, errs := run(args...)
		assert.Equal(t, ExitUsage, code, args)
		assert.NotEmpty(t, errs, args)
	}
}
