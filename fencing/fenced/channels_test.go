package fenced

import (
	"bufio"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

func serialOf(t *testing.T, s *Server, guest, disk, node string) string {
	for _, l := range s.cfg.Legs() {
		if l.Guest == guest && l.Disk == disk && l.Node == node {
			return l.Serial
		}
	}
	t.Fatalf("no leg %s/%s on %s", guest, disk, node)
	return ""
}

func TestChannelClearsStaleAfterResync(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, store, drv, _ := newTestServer(t, cfg, "node-b")
	// db runs on node-b since epoch 5; node-a's legs were unreachable
	// then, so they are stale.
	store.put(ledger.Record{Guest: "db", Owner: "node-b", Epoch: 5, Desired: ledger.DesiredRunning, Stale: map[string]uint64{"node-a": 5}})
	require.NoError(t, s.started.set("db", 5))
	drv.run("db")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.MonitorOnce(ctx)
	defer s.channels.Close()
	g := drv.waitChannel(t)
	require.Equal(t, "db", g.guest)
	in := bufio.NewReader(g.conn)
	send := func(v any) {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		_, err = g.conn.Write(append(b, '\n'))
		require.NoError(t, err)
	}
	staleOf := func() map[string]uint64 {
		r, err := store.Get(ctx, "db")
		require.NoError(t, err)
		return r.Stale
	}

	// root: node-a's leg recovering; then its resync done. data is not
	// done yet, so the mark stays (it covers every leg on node-a).
	send(channel.State{Type: channel.TypeState, Disk: "root", MD: "md0", Degraded: 1, SyncAction: "recover",
		Legs: []channel.LegState{{Node: "node-b", State: "in_sync"}, {Node: "node-a", State: "spare"}}})
	send(channel.Event{Type: channel.TypeEvent, Disk: "root", Event: channel.EventResyncDone, Leg: "node-a"})
	send(channel.Event{Type: channel.TypeEvent, Disk: "data", Event: channel.EventAdd, Leg: "node-a"})
	require.Eventually(t, func() bool { return len(s.channels.Events("db")) == 2 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, map[string]uint64{"node-a": 5}, staleOf())
	assert.Equal(t, "recover", s.channels.Legs()["db"]["root"].SyncAction)

	// data's resync done, the leg named by its serial: the mark goes and
	// the guest is told.
	send(channel.Event{Type: channel.TypeEvent, Disk: "data", Event: channel.EventResyncDone, Leg: serialOf(t, s, "db", "data", "node-a")})
	require.NoError(t, g.conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := in.ReadBytes('\n')
	require.NoError(t, err)
	v, err := channel.Decode(line)
	require.NoError(t, err)
	h, ok := v.(*channel.Host)
	require.True(t, ok, "%s", line)
	assert.Equal(t, "node-b", h.Node)
	assert.EqualValues(t, 5, h.Epoch)
	require.Len(t, h.Disks, 2)
	for _, d := range h.Disks {
		for _, l := range d.Legs {
			assert.False(t, l.Stale, "disk %s leg %s", d.Name, l.Node)
		}
	}
	assert.Empty(t, staleOf())
	r, _ := store.Get(ctx, "db")
	assert.Equal(t, "node-b", r.By)

	// A mark made at a later epoch than the run's survives a resync.
	store.put(ledger.Record{Guest: "db", Owner: "node-b", Epoch: 6, Desired: ledger.DesiredRunning, Stale: map[string]uint64{"node-a": 6}})
	send(channel.State{Type: channel.TypeState, Disk: "root", MD: "md0", SyncAction: "idle",
		Legs: []channel.LegState{{Node: "node-b", State: "in_sync"}, {Node: "node-a", State: "in_sync"}}})
	time.Sleep(100 * time.Millisecond)
	assert.Equal(t, map[string]uint64{"node-a": 6}, staleOf())
}

func TestChannelReconnectsWhenGuestRestarts(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, _, drv, _ := newTestServer(t, cfg, "node-a")
	drv.run("web")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer s.channels.Close()
	s.channels.Sync(ctx, mustList(t, drv))
	first := <-drv.chans

	// The guest goes away and comes back (a new start time).
	first.conn.Close()
	time.Sleep(10 * time.Millisecond)
	drv.run("web")
	s.channels.Sync(ctx, mustList(t, drv))
	select {
	case g := <-drv.chans:
		assert.Equal(t, "web", g.guest)
	case <-time.After(5 * time.Second):
		t.Fatal("no new connection after the restart")
	}
	// Gone: the keeper forgets it.
	require.NoError(t, drv.Destroy(ctx, "web"))
	s.channels.Sync(ctx, mustList(t, drv))
	assert.Empty(t, s.channels.Legs())
}
