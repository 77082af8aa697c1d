package guesttest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/hypervisor"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// console is a piece of a real guest console (kernel lines, the workload's
// and guestraid's).
const console = `init: 2026/11/21 11:04:44 Setting console log level to 5...
time=2026-11-21T11:04:45.066Z level=INFO msg="guestraid event" disk=root event=assembled array_bytes=66060288 detail="assembled md0 from vda vdb (superblock of vda decided)"
[    2.942183] md/raid1:md0: Disk failure on vdb, disabling device.
workload: start {"blocks":2048,"device":"/dev/md0","offset":0}
time=2026-11-21T11:04:45.540Z level=INFO msg="guestraid event" disk=root event=wipe leg=node-b array_bytes=66060288 detail="the host marks vdb stale: superblock and first 4 MiB zeroed, never re-added through the bitmap"
workload: progress {"gen":1,"next":1316,"writes":1316,"errors":0,"elapsed_ns":2010575618,"max_latency_ns":29204786}
time=2026-11-21T11:04:48.156Z level=INFO msg="guestraid event" disk=root event=resync-done leg=node-b resync_bytes=68180992 array_bytes=66060288 detail="vdb is in sync after a \"wipe\" and full resync"
time=2026-11-21T11:04:48.287Z level=WARN msg="channel: write failed" err="write /dev/vport2p1: unexpected EOF"
`

func TestConsoleEvents(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, hypervisor.ConsoleLog), []byte(console), 0o644))
	g := &Guest{Name: "demo", Spec: hypervisor.GuestSpec{RunDir: dir}}
	evs := g.ConsoleEvents()
	require.Len(t, evs, 3)
	assert.Equal(t, channel.Event{Type: channel.TypeEvent, Time: "2026-11-21T11:04:45.54Z", Disk: "root", Event: channel.EventWipe, Leg: "node-b",
		ArrayBytes: 66060288, Detail: "the host marks vdb stale: superblock and first 4 MiB zeroed, never re-added through the bitmap"}, evs[1])
	assert.Equal(t, channel.EventResyncDone, evs[2].Event)
	assert.EqualValues(t, 68180992, evs[2].ResyncBytes)
	assert.Equal(t, `vdb is in sync after a "wipe" and full resync`, evs[2].Detail)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	e, next, err := g.WaitConsoleEvent(ctx, 0, "root", channel.EventResyncDone)
	require.NoError(t, err)
	assert.Equal(t, 3, next)
	assert.Equal(t, "node-b", e.Leg)
	_, _, err = g.WaitConsoleEvent(ctx, next, "root", channel.EventResyncDone)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	_, err = g.WaitProgress(ctx, 0)
	assert.NoError(t, err)
	assert.Len(t, g.WorkloadLines("progress"), 1)
}

func TestLogfmt(t *testing.T) {
	assert.Equal(t, map[string]string{"time": "x", "msg": "a b", "k": "", "n": "1"}, logfmt(`time=x msg="a b" k="" n=1`))
	assert.Equal(t, map[string]string{"a": "1"}, logfmt(`[ 1.0] noise a=1 trailing`))
	assert.Equal(t, map[string]string{"a": "unterminated"}, logfmt(`a="unterminated`))
}
