package cli

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/initiator"
)

func writeImportState(t *testing.T, updated time.Time, legs ...initiator.LegStatus) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, initiator.WriteState(initiator.StatePath(dir, "node-a"), &initiator.StateFile{
		Node: "node-a", Backend: "open-iscsi", LinkDir: "/dev/mhcodi", PID: 42,
		Started: updated.Add(-time.Minute), Updated: updated, IntervalMS: 1000, Legs: legs,
	}))
	return dir
}

func TestImportStatus(t *testing.T) {
	now := time.Now()
	up := initiator.LegStatus{Leg: "web1/root/node-a", Local: true, Link: "/dev/mhcodi/web1/root/node-a", Device: "/dev/vg0/mhc-web1-root", State: initiator.StateUp, Since: now.Add(-time.Hour)}
	down := initiator.LegStatus{Leg: "web1/root/node-b", Link: "/dev/mhcodi/web1/root/node-b", Device: "/dev/sdb", State: initiator.StateDown, Since: now.Add(-42 * time.Second), Reason: "session 2 is FAILED"}

	dir := writeImportState(t, now, up)
	var out, errb bytes.Buffer
	code := Main([]string{"import", "status", "--node", "node-a", "--state-dir", dir}, &out, &errb)
	assert.Equal(t, ExitOK, code, errb.String())
	assert.Regexp(t, `web1/root/node-a\s+/dev/mhcodi/web1/root/node-a\s+/dev/vg0/mhc-web1-root\s+up`, out.String())

	dir = writeImportState(t, now, up, down)
	out.Reset()
	errb.Reset()
	code = Main([]string{"import", "status", "--node", "node-a", "--state-dir", dir}, &out, &errb)
	assert.Equal(t, ExitInvalid, code)
	assert.Regexp(t, `web1/root/node-b\s+/dev/mhcodi/web1/root/node-b\s+/dev/sdb\s+down\s+\S+ \S+ \(42s ago\)\s+session 2 is FAILED`, out.String())
	assert.Contains(t, errb.String(), "1 leg(s) not up: web1/root/node-b down")

	out.Reset()
	code = Main([]string{"import", "status", "--node", "node-a", "--state-dir", dir, "--json"}, &out, &errb)
	assert.Equal(t, ExitInvalid, code)
	var st initiator.StateFile
	require.NoError(t, json.Unmarshal(out.Bytes(), &st))
	require.Len(t, st.Legs, 2)
	assert.Equal(t, initiator.StateDown, st.Legs[1].State)

	// A daemon that stopped updating.
	dir = writeImportState(t, now.Add(-time.Minute), up)
	out.Reset()
	errb.Reset()
	code = Main([]string{"import", "status", "--node", "node-a", "--state-dir", dir}, &out, &errb)
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, out.String(), "stale")

	// No daemon at all.
	errb.Reset()
	code = Main([]string{"import", "status", "--node", "node-a", "--state-dir", filepath.Join(t.TempDir(), "none")}, &out, &errb)
	assert.Equal(t, ExitInvalid, code)
	assert.Contains(t, errb.String(), "is mhcodi-initiator --node node-a running")
}
