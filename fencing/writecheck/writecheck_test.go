package writecheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/targetd/controlapi"
)

const (
	tgtA = "iqn.2026-11.org.mhcodi:test.node-a.demo.root"
	tgtB = "iqn.2026-11.org.mhcodi:test.node-b.demo.root"
	iniA = "iqn.2026-11.org.mhcodi:test.node-a"
	iniB = "iqn.2026-11.org.mhcodi:test.node-b"
)

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func rec(sec int, target, initiator string, epoch uint64) controlapi.WriteRecord {
	return controlapi.WriteRecord{Time: t0.Add(time.Duration(sec) * time.Second), Target: target, Initiator: initiator, Epoch: epoch}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		logs   map[string][]controlapi.WriteRecord
		errs   []string // substrings, one per violation, in order
		epochs map[string][]uint64
	}{
		{name: "no logs", logs: nil},
		{
			// The guest runs on node-a at epoch 1 (its remote leg on
			// node-b), fails over to node-b at epoch 2 (its remote leg
			// now on node-a), and a restarted targetd logs epoch 2 again.
			name: "clean failover",
			logs: map[string][]controlapi.WriteRecord{
				"node-b": {rec(1, tgtB, iniA, 1)},
				"node-a": {rec(20, tgtA, iniB, 2), rec(40, tgtA, iniB, 2)},
			},
			epochs: map[string][]uint64{tgtA: {2}, tgtB: {1}},
		},
		{
			name: "epoch grows, one writer each",
			logs: map[string][]controlapi.WriteRecord{
				"node-b": {rec(1, tgtB, iniA, 0), rec(2, tgtB, iniA, 1), rec(9, tgtB, iniB, 2), rec(12, tgtB, iniA, 3)},
			},
			epochs: map[string][]uint64{tgtB: {0, 1, 2, 3}},
		},
		{
			name: "initiator names differ only in case",
			logs: map[string][]controlapi.WriteRecord{
				"node-b": {rec(1, tgtB, iniA, 1), rec(2, tgtB, "IQN.2026-11.org.mhcodi:test.NODE-A", 1)},
			},
			epochs: map[string][]uint64{tgtB: {1}},
		},
		{
			// The old owner, cut off, still got a write in after the
			// target was fenced to the new owner at epoch 2.
			name: "two writers in one epoch",
			logs: map[string][]controlapi.WriteRecord{
				"node-b": {rec(1, tgtB, iniA, 1), rec(10, tgtB, iniB, 2), rec(11, tgtB, iniA, 2)},
			},
			errs:   []string{tgtB + " took writes from 2 initiators at epoch 2: " + iniB + " (first 10:00:10.000), " + iniA + " (first 10:00:11.000)"},
			epochs: map[string][]uint64{tgtB: {1, 2}},
		},
		{
			// The target's fencing state went back from 3 to 2 (restored
			// from an old copy) and the writer of epoch 2 wrote again.
			name: "epoch went down",
			logs: map[string][]controlapi.WriteRecord{
				"node-a": {rec(1, tgtA, iniB, 2), rec(5, tgtA, iniA, 3), rec(8, tgtA, iniB, 2)},
			},
			errs:   []string{tgtA + " on node-a: epoch went down: " + iniB + " wrote at epoch 2 at 10:00:08.000, after " + iniA + " wrote at epoch 3 at 10:00:05.000"},
			epochs: map[string][]uint64{tgtA: {2, 3}},
		},
		{
			// Log order rules, not the clock: a write whose time is
			// earlier (the clock stepped back) but which came later in the
			// log is still later.
			name: "log order, not time",
			logs: map[string][]controlapi.WriteRecord{
				"node-a": {rec(5, tgtA, iniB, 3), rec(1, tgtA, iniB, 2)},
			},
			errs:   []string{"epoch went down"},
			epochs: map[string][]uint64{tgtA: {2, 3}},
		},
		{
			name: "both violations",
			logs: map[string][]controlapi.WriteRecord{
				"node-a": {rec(1, tgtA, iniB, 4), rec(2, tgtA, iniB, 3)},
				"node-b": {rec(1, tgtB, iniA, 1), rec(2, tgtB, iniB, 1)},
			},
			errs:   []string{tgtA + " on node-a: epoch went down", tgtB + " took writes from 2 initiators at epoch 1"},
			epochs: map[string][]uint64{tgtA: {3, 4}, tgtB: {1}},
		},
		{
			name: "one target in two nodes' logs",
			logs: map[string][]controlapi.WriteRecord{
				"node-a": {rec(1, tgtA, iniB, 1)},
				"node-b": {rec(2, tgtA, iniB, 1)},
			},
			errs:   []string{tgtA + " is in the write logs of 2 nodes (node-a, node-b)"},
			epochs: map[string][]uint64{tgtA: {1}},
		},
		{
			name: "malformed record",
			logs: map[string][]controlapi.WriteRecord{"node-a": {{Time: t0, Target: tgtA}}},
			errs: []string{"node-a: record 1 names no target or no initiator"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check(tc.logs)
			require.Len(t, r.Errors, len(tc.errs), "errors: %q", r.Errors)
			for i, e := range tc.errs {
				assert.Contains(t, r.Errors[i], e)
			}
			assert.Equal(t, len(tc.errs) == 0, r.OK())
			got := map[string][]uint64{}
			for _, tg := range r.Targets {
				for _, e := range tg.Epochs {
					got[tg.Name] = append(got[tg.Name], e.Epoch)
				}
			}
			if tc.epochs == nil {
				tc.epochs = map[string][]uint64{}
			}
			assert.Equal(t, tc.epochs, got)
			assert.NotEmpty(t, r.String())
		})
	}
}

func TestReportDetail(t *testing.T) {
	r := Check(map[string][]controlapi.WriteRecord{
		"node-b": {rec(1, tgtB, iniA, 1), rec(30, tgtB, iniA, 1), rec(40, tgtB, iniB, 2)},
	})
	require.True(t, r.OK(), r.String())
	tg, ok := r.Target(tgtB)
	require.True(t, ok)
	assert.Equal(t, []string{"node-b"}, tg.Nodes)
	require.Len(t, tg.Epochs, 2)
	assert.Equal(t, Writer{Initiator: iniA, Records: 2, First: t0.Add(time.Second), Last: t0.Add(30 * time.Second)}, tg.Epochs[0].Writers[0])
	assert.Equal(t, uint64(2), tg.Latest().Epoch)
	assert.Equal(t, []string{iniB}, r.Writers(tgtB, 2))
	assert.Nil(t, r.Writers(tgtB, 7))
	assert.Nil(t, r.Writers("nosuch", 1))
	assert.Equal(t, "write logs OK: 1 targets, one writer per epoch, epochs never went down\n"+
		"  "+tgtB+" (on node-b)\n"+
		"    epoch 1: "+iniA+", 2 records, 10:00:01.000 .. 10:00:30.000\n"+
		"    epoch 2: "+iniB+", 1 records, 10:00:40.000 .. 10:00:40.000\n", r.String())

	bad := Check(map[string][]controlapi.WriteRecord{"node-b": {rec(1, tgtB, iniA, 2), rec(2, tgtB, iniB, 2)}})
	assert.Contains(t, bad.String(), "write logs: 1 violations\n  VIOLATION: "+tgtB+" took writes from 2 initiators at epoch 2")
}

func writeLog(t *testing.T, dir, node string, recs ...controlapi.WriteRecord) string {
	t.Helper()
	p := filepath.Join(dir, "targetd-"+node+"-writes.jsonl")
	var b []byte
	for _, r := range recs {
		l, err := json.Marshal(r)
		require.NoError(t, err)
		b = append(append(b, l...), '\n')
	}
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

func TestCheckFilesAndDirs(t *testing.T) {
	da, db := t.TempDir(), t.TempDir()
	pa := writeLog(t, da, "node-a", rec(20, tgtA, iniB, 2))
	pb := writeLog(t, db, "node-b", rec(1, tgtB, iniA, 1), rec(21, tgtB, iniB, 1))
	assert.Equal(t, "node-a", NodeOf(pa))
	assert.Equal(t, "/x/other.jsonl", NodeOf("/x/other.jsonl"))

	r, err := CheckFiles(pa, pb)
	require.NoError(t, err)
	assert.False(t, r.OK())
	require.Len(t, r.Errors, 1)
	assert.Contains(t, r.Errors[0], tgtB+" took writes from 2 initiators at epoch 1")

	r2, err := CheckDirs(da, db, t.TempDir())
	require.NoError(t, err)
	assert.Equal(t, r, r2)

	_, err = CheckDirs(t.TempDir())
	assert.ErrorContains(t, err, "no targetd-*-writes.jsonl in")
	_, err = CheckFiles()
	assert.Error(t, err)
	_, err = CheckFiles(filepath.Join(da, "missing.jsonl"))
	assert.ErrorIs(t, err, os.ErrNotExist)

	// A corrupt line is an error, not a silently shorter log.
	require.NoError(t, os.WriteFile(pa, []byte("{not json\n"), 0o600))
	_, err = CheckFiles(pa)
	assert.ErrorContains(t, err, pa)
}

// TestRealWriteLog checks a log that targetd itself wrote, so the checker
// and the writer agree on the format.
func TestRealWriteLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "targetd-node-b-writes.jsonl")
	recs := []controlapi.WriteRecord{rec(1, tgtB, iniA, 1), rec(2, tgtB, iniB, 2)}
	writeLog(t, filepath.Dir(p), "node-b", recs...)
	got, err := controlapi.ReadWriteLog(p)
	require.NoError(t, err)
	assert.Equal(t, recs, got)
	r, err := CheckFiles(p)
	require.NoError(t, err)
	assert.True(t, r.OK(), r.String())
}
