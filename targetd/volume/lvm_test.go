package volume

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeRunner stands in for lvm2: it records every argv and answers each
// command with its handler (or success and no output).
type fakeRunner struct {
	mu       sync.Mutex
	calls    [][]string
	handlers map[string]func(args []string) (stdout, stderr string, err error)
}

func (f *fakeRunner) Run(_ context.Context, name string, args ...string) ([]byte, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, append([]string{name}, args...))
	if h := f.handlers[name]; h != nil {
		out, errb, err := h(args)
		return []byte(out), []byte(errb), err
	}
	return nil, nil, nil
}

func (f *fakeRunner) argvs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		out = append(out, strings.Join(c, " "))
	}
	return out
}

// vmEnv enables the LVM test on real device-mapper (lvm_vm_test.go).
const vmEnv = "MHCODI_VM_LVM"

const lvsArgv = "lvs -o lv_name,vg_name,lv_size,lv_tags,lv_path --units b --nosuffix --reportformat json vg0"
const vgsArgv = "vgs -o vg_name,vg_extent_size --units b --nosuffix --reportformat json vg0"

// lvsOutput is what lvm2 2.03.16 (Debian 12) prints for
// `lvs -o lv_name,vg_name,lv_size,lv_tags,lv_path --units b --nosuffix --reportformat json vg0`.
const lvsOutput = `  {
      "report": [
          {
              "lv": [
                  {"lv_name":"mhc-web1-root", "vg_name":"vg0", "lv_size":"10737418240", "lv_tags":"mhcodi", "lv_path":"/dev/vg0/mhc-web1-root"},
                  {"lv_name":"home", "vg_name":"vg0", "lv_size":"21474836480", "lv_tags":"", "lv_path":"/dev/vg0/home"},
                  {"lv_name":"mhc-old-disk", "vg_name":"vg0", "lv_size":"1073741824", "lv_tags":"", "lv_path":"/dev/vg0/mhc-old-disk"},
                  {"lv_name":"mhc-db1-data", "vg_name":"vg0", "lv_size":"54525952", "lv_tags":"backup,mhcodi", "lv_path":"/dev/vg0/mhc-db1-data"}
              ]
          }
      ]
  }
`

// vgsOutput is `vgs -o vg_name,vg_extent_size --units b --nosuffix --reportformat json vg0`.
const vgsOutput = `  {
      "report": [
          {
              "vg": [
                  {"vg_name":"vg0", "vg_extent_size":"4194304"}
              ]
          }
      ]
  }
`

func newLVM(t *testing.T, stripes int) (*LVMBackend, *fakeRunner) {
	t.Helper()
	f := &fakeRunner{handlers: map[string]func([]string) (string, string, error){
		"lvs": func([]string) (string, string, error) { return lvsOutput, "", nil },
		"vgs": func([]string) (string, string, error) { return vgsOutput, "", nil },
	}}
	b, err := NewLVM("vg0", stripes, f, quiet)
	require.NoError(t, err)
	return b, f
}

func TestLVMList(t *testing.T) {
	b, f := newLVM(t, 1)
	list, err := b.List(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []string{lvsArgv}, f.argvs())
	assert.Equal(t, []Info{
		{Name: "mhc-db1-data", Path: "/dev/vg0/mhc-db1-data", Size: 52 * mib, Tags: []string{"backup", "mhcodi"}},
		{Name: "mhc-old-disk", Path: "/dev/vg0/mhc-old-disk", Size: 1024 * mib},
		{Name: "mhc-web1-root", Path: "/dev/vg0/mhc-web1-root", Size: 10240 * mib, Tags: []string{"mhcodi"}},
	}, list, "only mhc- volumes, sorted")
}

func TestLVMCreate(t *testing.T) {
	ctx := context.Background()
	b, f := newLVM(t, 1)
	created, err := b.Create(ctx, "mhc-web2-root", 10*1024*mib)
	require.NoError(t, err)
	assert.True(t, created)
	assert.Equal(t, []string{
		lvsArgv,
		"lvcreate -n mhc-web2-root -L 10737418240b --addtag mhcodi -y --wipesignatures y vg0",
	}, f.argvs())

	b, f = newLVM(t, 3)
	_, err = b.Create(ctx, "mhc-web2-root", 10*1024*mib)
	require.NoError(t, err)
	assert.Equal(t, "lvcreate -n mhc-web2-root -L 10737418240b -i 3 --addtag mhcodi -y --wipesignatures y vg0", f.argvs()[1])
}

func TestLVMCreateExisting(t *testing.T) {
	ctx := context.Background()
	b, f := newLVM(t, 1)
	created, err := b.Create(ctx, "mhc-web1-root", 10*1024*mib)
	require.NoError(t, err, "same size: no-op")
	assert.False(t, created)
	assert.Equal(t, []string{lvsArgv}, f.argvs(), "nothing is created")

	// mhc-db1-data is 52M: a request of 50M rounds up to 52M in 4M extents.
	created, err = b.Create(ctx, "mhc-db1-data", 50*mib)
	require.NoError(t, err, "a size lvm2 rounded up to whole extents is the right size")
	assert.False(t, created)
	assert.Contains(t, f.argvs(), vgsArgv)

	_, err = b.Create(ctx, "mhc-db1-data", 40*mib)
	require.ErrorIs(t, err, ErrWrongSize)
	assert.EqualError(t, err, "volume mhc-db1-data: exists with another size: it has 52M (54525952 bytes), the request is 40M (41943040 bytes, 40M rounded up to whole extents of volume group vg0)")
	for _, a := range f.argvs() {
		assert.NotContains(t, a, "lvcreate")
	}
	n := 0
	for _, a := range f.argvs() {
		if a == vgsArgv {
			n++
		}
	}
	assert.Equal(t, 1, n, "the extent size is read once")
}

func TestSizeFits(t *testing.T) {
	const ext = 4 * mib
	for _, tc := range []struct {
		want, actual int64
		stripes      int
		ok           bool
	}{
		{10 * mib, 10 * mib, 1, true},
		{10 * mib, 12 * mib, 1, true},
		{10 * mib, 16 * mib, 1, false},
		{10 * mib, 8 * mib, 1, false},
		{10 * mib, 12 * mib, 3, true},  // 3 extents: already whole stripes
		{10 * mib, 24 * mib, 3, false}, // one stripe too many
		{13 * mib, 24 * mib, 3, true},  // 4 extents → 6 (two stripes of 3) = 24M
		{13 * mib, 16 * mib, 3, true},  // plain extent rounding still accepted
		{13 * mib, 20 * mib, 3, false},
	} {
		assert.Equal(t, tc.ok, sizeFits(tc.want, tc.actual, ext, tc.stripes), "%+v", tc)
	}
}

func TestLVMExtend(t *testing.T) {
	ctx := context.Background()
	b, f := newLVM(t, 1)
	require.NoError(t, b.Extend(ctx, "mhc-web1-root", 20*1024*mib))
	assert.Equal(t, []string{lvsArgv, "lvextend -L 21474836480b vg0/mhc-web1-root"}, f.argvs())

	b, f = newLVM(t, 1)
	require.NoError(t, b.Extend(ctx, "mhc-db1-data", 50*mib), "already that size after rounding")
	require.NoError(t, b.Extend(ctx, "mhc-db1-data", 52*mib))
	for _, a := range f.argvs() {
		assert.NotContains(t, a, "lvextend")
	}
	err := b.Extend(ctx, "mhc-db1-data", 40*mib)
	require.ErrorIs(t, err, ErrShrink)
	assert.ErrorContains(t, err, "it has 52M (54525952 bytes) and 40M (41943040 bytes) would cut off the end")
	assert.ErrorIs(t, b.Extend(ctx, "mhc-gone-disk", 40*mib), ErrNotFound)
}

func TestLVMRemove(t *testing.T) {
	ctx := context.Background()
	b, f := newLVM(t, 1)
	require.NoError(t, b.Remove(ctx, "mhc-web1-root"))
	assert.Equal(t, []string{lvsArgv, "lvremove -y vg0/mhc-web1-root"}, f.argvs())

	err := b.Remove(ctx, "mhc-old-disk")
	assert.ErrorContains(t, err, `LV vg0/mhc-old-disk has no "mhcodi" tag, so mhcodi did not create it and will not remove it`)
	assert.ErrorIs(t, b.Remove(ctx, "mhc-gone-disk"), ErrNotFound)
	assert.ErrorIs(t, b.Remove(ctx, "home"), ErrInvalidName)

	b.open.add("mhc-web1-root")
	err = b.Remove(ctx, "mhc-web1-root")
	assert.ErrorIs(t, err, ErrInUse)
	assert.ErrorContains(t, err, "open in this process")
	b.open.done("mhc-web1-root")
	assert.Zero(t, b.open.count("mhc-web1-root"))
}

func TestLVMErrorsCarryStderr(t *testing.T) {
	ctx := context.Background()
	b, f := newLVM(t, 1)
	f.handlers["lvcreate"] = func([]string) (string, string, error) {
		return "", "  Volume group \"vg0\" has insufficient free space (10 extents): 2560 required.\n", errors.New("exit status 5")
	}
	_, err := b.Create(ctx, "mhc-web2-root", 10*1024*mib)
	require.Error(t, err)
	assert.EqualError(t, err, `volume mhc-web2-root: creating it in volume group vg0: lvcreate -n mhc-web2-root -L 10737418240b --addtag mhcodi -y --wipesignatures y vg0: exit status 5: Volume group "vg0" has insufficient free space (10 extents): 2560 required.`)
	var ce *CommandError
	require.ErrorAs(t, err, &ce)
	assert.Contains(t, ce.Stderr, "insufficient free space")

	f.handlers["lvs"] = func([]string) (string, string, error) {
		return "", "  Volume group \"vg0\" not found\n  Cannot process volume group vg0\n", errors.New("exit status 5")
	}
	_, err = b.List(ctx)
	assert.EqualError(t, err, `listing the LVs of volume group vg0: lvs -o lv_name,vg_name,lv_size,lv_tags,lv_path --units b --nosuffix --reportformat json vg0: exit status 5: Volume group "vg0" not found | Cannot process volume group vg0`)
	_, err = b.Stat(ctx, "mhc-web1-root")
	assert.NotErrorIs(t, err, ErrNotFound, "a failing lvs is not a missing volume")

	f.handlers["lvs"] = func([]string) (string, string, error) { return "not json", "", nil }
	_, err = b.List(ctx)
	assert.ErrorContains(t, err, "reading lvs' JSON report")
}

func TestExecRunner(t *testing.T) {
	ctx := context.Background()
	_, err := run(ctx, ExecRunner{}, "mhcodi-no-such-command-xyz", "--help")
	assert.ErrorIs(t, err, exec.ErrNotFound)

	out, err := run(ctx, ExecRunner{}, "sh", "-c", "echo $LC_ALL; echo oops >&2; exit 3")
	assert.Equal(t, "C\n", string(out))
	assert.EqualError(t, err, "sh -c echo $LC_ALL; echo oops >&2; exit 3: exit status 3: oops")
}

func TestLVMReportFormats(t *testing.T) {
	// json_std: numbers as numbers, lists as arrays.
	rows, err := parseLVs([]byte(`{"report":[{"lv":[{"lv_name":"mhc-a-b","vg_name":"vg0","lv_size":4194304,"lv_tags":["mhcodi","x"],"lv_path":"/dev/vg0/mhc-a-b"}]}]}`))
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, lvmNumber(4194304), rows[0].Size)
	assert.Equal(t, lvmList{"mhcodi", "x"}, rows[0].Tags)

	// A suffix that --nosuffix should have dropped is tolerated.
	rows, err = parseLVs([]byte(`{"report":[{"lv":[{"lv_name":"mhc-a-b","vg_name":"vg0","lv_size":"4194304B","lv_tags":"","lv_path":""}]}]}`))
	require.NoError(t, err)
	assert.Equal(t, lvmNumber(4194304), rows[0].Size)
	assert.Empty(t, rows[0].Tags)

	// Human units are not: the size would be wrong.
	_, err = parseLVs([]byte(`{"report":[{"lv":[{"lv_name":"mhc-a-b","lv_size":"4.00m"}]}]}`))
	assert.ErrorContains(t, err, "is not a byte count")

	// An empty VG.
	rows, err = parseLVs([]byte(`{"report":[{"lv":[]}]}`))
	require.NoError(t, err)
	assert.Empty(t, rows)

	vgs, err := parseVGs([]byte(vgsOutput))
	require.NoError(t, err)
	assert.Equal(t, []vgRow{{Name: "vg0", ExtentSize: 4 * mib}}, vgs)
}

func TestLVMEmptyPathFilledIn(t *testing.T) {
	b, f := newLVM(t, 1)
	f.handlers["lvs"] = func([]string) (string, string, error) {
		return `{"report":[{"lv":[{"lv_name":"mhc-a-b","vg_name":"vg0","lv_size":"4194304","lv_tags":"mhcodi","lv_path":""},{"lv_name":"mhc-c-d","vg_name":"vg1","lv_size":"4194304","lv_tags":"mhcodi","lv_path":"/dev/vg1/mhc-c-d"}]}]}`, "", nil
	}
	list, err := b.List(context.Background())
	require.NoError(t, err)
	assert.Equal(t, []Info{{Name: "mhc-a-b", Path: "/dev/vg0/mhc-a-b", Size: 4 * mib, Tags: []string{"mhcodi"}}}, list, "rows of another VG are dropped")
}

func TestLVMVGMissingFromVGS(t *testing.T) {
	b, f := newLVM(t, 1)
	f.handlers["vgs"] = func([]string) (string, string, error) { return `{"report":[{"vg":[]}]}`, "", nil }
	_, err := b.SizeOK(context.Background(), 10*mib, 12*mib)
	assert.EqualError(t, err, "vgs did not report volume group vg0")
	ok, err := b.SizeOK(context.Background(), 10*mib, 10*mib)
	require.NoError(t, err)
	assert.True(t, ok, "an exact size needs no extent size")
}

func TestLVMOpenMissingDevice(t *testing.T) {
	// The LV is in the report but its device node is not there (inactive
	// LV; here: no device-mapper at all).
	b, _ := newLVM(t, 1)
	_, err := b.Open(context.Background(), "mhc-web1-root")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is the LV active? (lvchange -ay vg0/mhc-web1-root)")
	assert.Zero(t, b.open.count("mhc-web1-root"))
}
