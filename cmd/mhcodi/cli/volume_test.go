package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/targetd/volume"
)

const loopback = "../../../configs/examples/loopback.yaml"

// loopbackCopy copies the loopback example into a temp dir, with extra
// appended to its only guest's disks, and returns the copy and node-a's
// volume directory (relative to the copy, so inside the temp dir).
func loopbackCopy(t *testing.T, extraDisks string) (cfg, dirA string) {
	t.Helper()
	b, err := os.ReadFile(loopback)
	require.NoError(t, err)
	text := string(b)
	if extraDisks != "" {
		const anchor = "        legs: [node-a, node-b]\n"
		require.Contains(t, text, anchor)
		text = strings.Replace(text, anchor, anchor+extraDisks, 1)
	}
	tmp := t.TempDir()
	cfg = filepath.Join(tmp, "cluster.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(text), 0o644))
	return cfg, filepath.Join(tmp, "loopback-volumes", "node-a")
}

const dataDisk = "      - name: data\n        size: 64M\n        legs: [node-b, node-a]\n"

type listed struct {
	Node, Backend, Where string
	Volumes              []struct {
		Guest, Disk, Volume, Path, Status string
		ConfiguredBytes                   int64  `json:"configured_bytes"`
		ActualBytes                       *int64 `json:"actual_bytes"`
	}
}

func listJSON(t *testing.T, cfg string, extra ...string) listed {
	t.Helper()
	code, out, errs := run(append([]string{"volume", "list", "--config", cfg, "--node", "node-a", "--json"}, extra...)...)
	require.Equal(t, ExitOK, code, errs)
	var l listed
	require.NoError(t, json.Unmarshal([]byte(out), &l), out)
	return l
}

func TestVolumeCreateListRemove(t *testing.T) {
	cfg, dirA := loopbackCopy(t, "")

	code, out, errs := run("volume", "list", "--config", cfg, "--node", "node-a")
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, out, "node node-a ("+dirA+"): 1 leg(s): 0 ok, 1 missing, 0 wrong size; 0 orphan(s).")
	assert.Regexp(t, `(?m)^GUEST\s+DISK\s+VOLUME\s+SIZE\s+ACTUAL\s+STATUS$`, out)
	assert.Regexp(t, `(?m)^demo\s+root\s+mhc-demo-root\s+256M\s+-\s+missing$`, out)

	code, out, errs = run("volume", "create", "--config", cfg, "--node", "node-a")
	require.Equal(t, ExitOK, code, errs)
	assert.Equal(t, "created mhc-demo-root (256M) at "+filepath.Join(dirA, "mhc-demo-root")+"\n", out)
	st, err := os.Stat(filepath.Join(dirA, "mhc-demo-root"))
	require.NoError(t, err)
	assert.Equal(t, int64(256<<20), st.Size())
	_, err = os.Stat(filepath.Join(filepath.Dir(dirA), "node-b", "mhc-demo-root"))
	assert.ErrorIs(t, err, os.ErrNotExist, "only node-a's legs")

	code, out, errs = run("volume", "create", "--config", cfg, "--node", "node-a")
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, out, "mhc-demo-root (256M) is already there", "create is idempotent")

	l := listJSON(t, cfg)
	assert.Equal(t, "node-a", l.Node)
	assert.Equal(t, "file", l.Backend)
	assert.Equal(t, dirA, l.Where)
	require.Len(t, l.Volumes, 1)
	v := l.Volumes[0]
	assert.Equal(t, "demo", v.Guest)
	assert.Equal(t, "root", v.Disk)
	assert.Equal(t, "mhc-demo-root", v.Volume)
	assert.Equal(t, "ok", v.Status)
	assert.Equal(t, int64(256<<20), v.ConfiguredBytes)
	require.NotNil(t, v.ActualBytes)
	assert.Equal(t, int64(256<<20), *v.ActualBytes)

	code, out, errs = run("volume", "list", "--config", cfg, "--node", "node-a", "--check")
	assert.Equal(t, ExitOK, code, errs)
	assert.Regexp(t, `(?m)^demo\s+root\s+mhc-demo-root\s+256M\s+256M\s+ok$`, out)

	// remove without --yes says what it would do and refuses.
	code, out, errs = run("volume", "remove", "--config", cfg, "--node", "node-a", "--guest", "demo")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, out, "would remove from node node-a")
	assert.Regexp(t, `mhc-demo-root\s+256M\s+ok\s+`+filepath.Join(dirA, "mhc-demo-root"), out)
	assert.Equal(t, "mhcodi: refusing to remove 1 volume(s) without --yes: it destroys their data\n", errs)
	_, err = os.Stat(filepath.Join(dirA, "mhc-demo-root"))
	require.NoError(t, err, "nothing removed without --yes")

	code, out, errs = run("volume", "remove", "--config", cfg, "--node", "node-a", "--guest", "demo", "--yes")
	require.Equal(t, ExitOK, code, errs)
	assert.Equal(t, "removed mhc-demo-root (256M) from "+filepath.Join(dirA, "mhc-demo-root")+"\n", out)
	_, err = os.Stat(filepath.Join(dirA, "mhc-demo-root"))
	assert.ErrorIs(t, err, os.ErrNotExist)

	code, out, errs = run("volume", "remove", "--config", cfg, "--node", "node-a", "--guest", "demo", "--yes")
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, out, "mhc-demo-root is already gone")
	assert.Contains(t, out, "nothing to remove")
}

func TestVolumeListStatuses(t *testing.T) {
	cfg, dirA := loopbackCopy(t, dataDisk)
	require.NoError(t, os.MkdirAll(dirA, 0o700))
	// root: wrong size; data: missing; two orphans.
	require.NoError(t, os.WriteFile(filepath.Join(dirA, "mhc-demo-root"), make([]byte, 1<<20), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dirA, "mhc-old-root"), make([]byte, 2<<20), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dirA, "mhc-demo-swap"), make([]byte, 1<<20), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dirA, "unrelated.img"), nil, 0o600))

	code, out, errs := run("volume", "list", "--config", cfg, "--node", "node-a")
	require.Equal(t, ExitOK, code, errs)
	assert.Contains(t, out, "2 leg(s): 0 ok, 1 missing, 1 wrong size; 2 orphan(s).")
	assert.Regexp(t, `(?m)^demo\s+root\s+mhc-demo-root\s+256M\s+1M\s+wrong size$`, out)
	assert.Regexp(t, `(?m)^demo\s+data\s+mhc-demo-data\s+64M\s+-\s+missing$`, out)
	assert.Regexp(t, `(?m)^-\s+-\s+mhc-demo-swap\s+-\s+1M\s+orphan$`, out)
	assert.Regexp(t, `(?m)^-\s+-\s+mhc-old-root\s+-\s+2M\s+orphan$`, out)
	assert.NotContains(t, out, "unrelated")

	code, _, errs = run("volume", "list", "--config", cfg, "--node", "node-a", "--check")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errs, "4 volume(s) on node node-a ("+dirA+") are not ok: mhc-demo-root wrong size, mhc-demo-data missing, mhc-demo-swap orphan, mhc-old-root orphan")

	l := listJSON(t, cfg, "--guest", "demo")
	var got []string
	for _, v := range l.Volumes {
		got = append(got, v.Volume+" "+v.Status)
	}
	assert.Equal(t, []string{"mhc-demo-root wrong size", "mhc-demo-data missing", "mhc-demo-swap orphan"}, got,
		"--guest keeps that guest's legs and orphans")
	assert.Nil(t, l.Volumes[1].ActualBytes, "a missing volume has no actual size")
}

func TestVolumeCreatePartialFailure(t *testing.T) {
	cfg, dirA := loopbackCopy(t, dataDisk)
	require.NoError(t, os.MkdirAll(dirA, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dirA, "mhc-demo-root"), make([]byte, 1<<20), 0o600))

	code, out, errs := run("volume", "create", "--config", cfg, "--node", "node-a")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, out, "created mhc-demo-data (64M)")
	assert.Equal(t, "mhcodi: could not create 1 of 2 volume(s) on node node-a ("+dirA+"):\n"+
		"  not done: volume mhc-demo-root: exists with another size: it has 1M (1048576 bytes), the request is 256M (268435456 bytes)\n"+
		"  done: mhc-demo-data (created)\n", errs)
}

func TestVolumeRemovePartialFailure(t *testing.T) {
	cfg, dirA := loopbackCopy(t, dataDisk)
	code, _, errs := run("volume", "create", "--config", cfg, "--node", "node-a", "--guest", "demo")
	require.Equal(t, ExitOK, code, errs)

	// Something else (targetd, say) has mhc-demo-data open.
	other, err := volume.NewFile(dirA, nil)
	require.NoError(t, err)
	v, err := other.Open(context.Background(), "mhc-demo-data")
	require.NoError(t, err)
	defer v.Close()

	code, out, errs := run("volume", "remove", "--config", cfg, "--node", "node-a", "--all", "--yes")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, out, "removed mhc-demo-root")
	assert.Equal(t, "mhcodi: could not remove 1 of 2 volume(s) on node node-a ("+dirA+"):\n"+
		"  not done: volume mhc-demo-data: volume is in use: another process has it open (is mhcodi-targetd serving it?)\n"+
		"  done: mhc-demo-root\n", errs)
	_, err = os.Stat(filepath.Join(dirA, "mhc-demo-data"))
	assert.NoError(t, err, "the open volume is still there")
}

func TestVolumeRemoveOrphans(t *testing.T) {
	cfg, dirA := loopbackCopy(t, "")
	code, _, errs := run("volume", "create", "--config", cfg, "--node", "node-a")
	require.Equal(t, ExitOK, code, errs)
	require.NoError(t, os.WriteFile(filepath.Join(dirA, "mhc-gone-root"), make([]byte, 1<<20), 0o600))

	// A guest that left the file: its volumes are orphans, removed only
	// with --orphans.
	code, _, errs = run("volume", "remove", "--config", cfg, "--node", "node-a", "--guest", "gone", "--yes")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errs, `guest "gone" is not in `+cfg)
	code, out, errs := run("volume", "remove", "--config", cfg, "--node", "node-a", "--guest", "gone", "--orphans", "--yes")
	require.Equal(t, ExitOK, code, errs)
	assert.Equal(t, "removed mhc-gone-root (1M) from "+filepath.Join(dirA, "mhc-gone-root")+"\n", out)
	_, err := os.Stat(filepath.Join(dirA, "mhc-demo-root"))
	assert.NoError(t, err, "the configured leg stays")
}

func TestVolumeUsageAndScopeErrors(t *testing.T) {
	cfg, _ := loopbackCopy(t, "")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"volume", "list", "--config", cfg}, ExitUsage, `required flag(s) "node" not set`},
		{[]string{"volume", "remove", "--config", cfg, "--node", "node-a"}, ExitUsage, "remove needs --guest G, or --all to remove every leg of node node-a"},
		{[]string{"volume", "remove", "--config", cfg, "--node", "node-a", "--guest", "demo", "--all"}, ExitUsage, "give --guest or --all, not both"},
		{[]string{"volume", "create", "--config", cfg, "--node", "node-x"}, ExitInvalid, `node "node-x" is not in ` + cfg + " (its nodes: node-a, node-b)"},
		{[]string{"volume", "create", "--config", cfg, "--node", "node-a", "--guest", "web9"}, ExitInvalid, `guest "web9" is not in ` + cfg},
		{[]string{"volume", "list", "--config", filepath.Join(t.TempDir(), "none.yaml"), "--node", "node-a"}, ExitInvalid, "cannot read: no such file or directory"},
	} {
		code, _, errs := run(tc.args...)
		assert.Equal(t, tc.code, code, tc.args)
		assert.Contains(t, errs, tc.want, tc.args)
	}
}

func TestVolumeGuestWithoutLegOnNode(t *testing.T) {
	// A third storage node that keeps no leg of guest demo.
	cfg := filepath.Join(t.TempDir(), "cluster.yaml")
	base, err := os.ReadFile(loopback)
	require.NoError(t, err)
	withC := strings.Replace(string(base), "guests:\n",
		"  - name: node-c\n    san_address: 127.0.0.13\n    mgmt_address: 127.0.0.13:7440\n    storage:\n      backend: file\n      file:\n        dir: loopback-volumes/node-c\n\nguests:\n", 1)
	require.NoError(t, os.WriteFile(cfg, []byte(withC), 0o644))
	code, _, errs := run("volume", "create", "--config", cfg, "--node", "node-c", "--guest", "demo")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errs, "guest demo keeps no leg on node node-c (root on node-a and node-b)")

	code, out, errs := run("volume", "create", "--config", cfg, "--node", "node-c")
	assert.Equal(t, ExitOK, code, errs)
	assert.Contains(t, out, "keeps no legs: nothing to create")
}

// On an LVM node without its volume group (no device-mapper here, or no
// lvm2 at all) the commands fail with what lvm2, or exec, said.
func TestVolumeLVMErrors(t *testing.T) {
	t.Setenv("MHCODI_STORAGE_LVM_VG", "mhcodi-test-no-such-vg")
	code, out, errs := run("volume", "list", "--config", twoNode, "--node", "node-a")
	assert.Equal(t, ExitInvalid, code)
	assert.Empty(t, out)
	assert.Contains(t, errs, "mhcodi: node node-a: listing the LVs of volume group mhcodi-test-no-such-vg: lvs -o lv_name,vg_name,lv_size,lv_tags,lv_path --units b --nosuffix --reportformat json mhcodi-test-no-such-vg: ")

	code, _, errs = run("volume", "create", "--config", twoNode, "--node", "node-a", "--guest", "web1")
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errs, "could not create 2 of 2 volume(s) on node node-a (volume group mhcodi-test-no-such-vg):\n  not done: volume mhc-web1-root: ")
	assert.Contains(t, errs, "\n  done: none\n")
}
