package fenced

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mhcodi/mhcodi/fencing/ledger"
	"github.com/mhcodi/mhcodi/guestraid/channel"
)

func TestTrackResync(t *testing.T) {
	recover := func(p float64) channel.State { return channel.State{SyncAction: "recover", Progress: p} }
	var tr ResyncTrack
	tr = TrackResync(tr, recover(0.5), t0)
	assert.Equal(t, ResyncTrack{Action: "recover", Progress: 0.5, Since: t0}, tr)
	assert.Zero(t, tr.Stalled(t0))

	tr = TrackResync(tr, recover(0.5), t0.Add(10*time.Second))
	assert.Equal(t, 20*time.Second, tr.Stalled(t0.Add(20*time.Second)), "no progress since t0")

	tr = TrackResync(tr, recover(0.97), t0.Add(30*time.Second))
	assert.Zero(t, tr.Stalled(t0.Add(30*time.Second)), "progress moved")
	tr = TrackResync(tr, recover(0.97), t0.Add(35*time.Second))
	assert.Equal(t, 10*time.Minute, tr.Stalled(t0.Add(30*time.Second+10*time.Minute)), "stuck at 97 %")

	tr = TrackResync(tr, channel.State{SyncAction: "idle"}, t0.Add(time.Hour))
	assert.Zero(t, tr.Stalled(t0.Add(2*time.Hour)), "idle is never stalled")
	tr = TrackResync(tr, channel.State{SyncAction: "frozen"}, t0.Add(time.Hour))
	assert.Zero(t, tr.Stalled(t0.Add(2*time.Hour)), "frozen is md's own pause")
	assert.Zero(t, ResyncTrack{}.Stalled(t0))
}

func TestArrayCollectorFromChannelReports(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, store, drv, _ := newTestServer(t, cfg, "node-b")
	store.put(ledger.Record{Guest: "db", Owner: "node-b", Epoch: 5, Desired: ledger.DesiredRunning})
	require.NoError(t, s.started.set("db", 5))
	clk := &fakeClock{now: t0}
	s.channels.clock = clk
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(newArrayCollector(s.channels.Arrays, clk)))
	drv.run("db")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.MonitorOnce(ctx)
	defer s.channels.Close()
	g := drv.waitChannel(t)
	go func() { _, _ = bufio.NewReader(g.conn).ReadBytes(0) }() // what fenced sends
	send := func(v any) {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		_, err = g.conn.Write(append(b, '\n'))
		require.NoError(t, err)
	}
	count := func() int {
		n := 0
		for k := range gauges(t, reg) {
			if strings.HasPrefix(k, "mhcodi_fenced_array_degraded{") {
				n++
			}
		}
		return n
	}
	assert.Zero(t, count(), "no report, no series")

	// root recovers node-a's leg and stands still at 97 %; data is whole
	// and a check found mismatches.
	send(channel.State{Type: channel.TypeState, Disk: "root", MD: "md0", Degraded: 1, SyncAction: "recover", Progress: 0.97})
	send(channel.State{Type: channel.TypeState, Disk: "data", MD: "md1", SyncAction: "idle", MismatchCnt: 128})
	require.Eventually(t, func() bool { return count() == 2 }, 5*time.Second, 10*time.Millisecond)
	clk.add(40 * time.Second)
	send(channel.State{Type: channel.TypeState, Disk: "root", MD: "md0", Degraded: 1, SyncAction: "recover", Progress: 0.97})
	require.Eventually(t, func() bool {
		return s.channels.Arrays()["db"]["root"].Received.Equal(t0.Add(40 * time.Second))
	}, 5*time.Second, 10*time.Millisecond)
	clk.add(20 * time.Second)

	assert.Equal(t, map[string]float64{
		`mhcodi_fenced_array_degraded{disk="data",guest="db"}`:                     0,
		`mhcodi_fenced_array_degraded{disk="root",guest="db"}`:                     1,
		`mhcodi_fenced_array_degraded_legs{disk="data",guest="db"}`:                0,
		`mhcodi_fenced_array_degraded_legs{disk="root",guest="db"}`:                1,
		`mhcodi_fenced_array_mismatch_cnt{disk="data",guest="db"}`:                 128,
		`mhcodi_fenced_array_mismatch_cnt{disk="root",guest="db"}`:                 0,
		`mhcodi_fenced_array_report_age_seconds{disk="data",guest="db"}`:           60,
		`mhcodi_fenced_array_report_age_seconds{disk="root",guest="db"}`:           20,
		`mhcodi_fenced_array_sync_action{action="idle",disk="data",guest="db"}`:    1,
		`mhcodi_fenced_array_sync_action{action="recover",disk="root",guest="db"}`: 1,
		`mhcodi_fenced_array_sync_progress_ratio{disk="data",guest="db"}`:          0,
		`mhcodi_fenced_array_sync_progress_ratio{disk="root",guest="db"}`:          0.97,
		`mhcodi_fenced_array_sync_stalled_seconds{disk="data",guest="db"}`:         0,
		`mhcodi_fenced_array_sync_stalled_seconds{disk="root",guest="db"}`:         60,
	}, gauges(t, reg))

	// Its node's status says which sync stands still (verify's input).
	s.clock = clk
	ns, err := s.NodeStatus(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]map[string]float64{"db": {"root": 60}}, ns.Stalled)

	// The guest stops: its series go with it.
	drv.mu.Lock()
	delete(drv.running, "db")
	drv.mu.Unlock()
	s.MonitorOnce(ctx)
	assert.Zero(t, count())
}

func TestServerRegistersArrayMetrics(t *testing.T) {
	cfg := testConfig(t, false, "")
	s, _, _, _ := newTestServer(t, cfg, "node-b")
	// A second registration of the same series is refused: the Server's
	// registry already has them.
	err := s.reg.Register(newArrayCollector(s.channels.Arrays, s.clock))
	var already prometheus.AlreadyRegisteredError
	assert.ErrorAs(t, err, &already)
}

// gauges are reg's gauge values by name{label="value",…} (labels sorted,
// as the registry gives them).
func gauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

func TestNewRefusesARegistryThatHasTheArrayMetrics(t *testing.T) {
	cfg := testConfig(t, false, "")
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(newArrayCollector(func() map[string]map[string]arrayReport { return nil }, realClock{})))
	st := newFakeStore("node-b")
	_, err := New(Options{
		Config: cfg, Node: "node-b", Driver: newFakeDriver(), Targetd: &fakeTargetd{},
		Ledger:   LedgerStarterFunc(func(context.Context) (Member, ledger.Store, error) { return nil, st, nil }),
		StateDir: t.TempDir(), Logger: testLogger(t), Registry: reg,
	})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "array metrics")
}
