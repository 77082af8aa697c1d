package fenced

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mhcodi/mhcodi/guestraid/channel"
)

// ResyncTrack is what the stall detector keeps of one array: its sync
// action and progress as last reported, and since when neither moved.
type ResyncTrack struct {
	Action   string
	Progress float64
	Since    time.Time
}

// Syncing reports whether md's sync_action is work that should progress
// (resync, recover, check, repair, reshape), not idle or frozen.
func Syncing(action string) bool {
	switch action {
	case "", "idle", "frozen":
		return false
	}
	return true
}

// TrackResync folds a state report received at now into t: Since moves
// to now whenever the action or the progress changed, so that now−Since
// is how long a resync has been standing still ("stuck at 97 %").
func TrackResync(t ResyncTrack, st channel.State, now time.Time) ResyncTrack {
	if t.Since.IsZero() || st.SyncAction != t.Action || st.Progress != t.Progress {
		return ResyncTrack{Action: st.SyncAction, Progress: st.Progress, Since: now}
	}
	return t
}

// Stalled is how long t's resync has not progressed at now; zero when
// the array is not syncing.
func (t ResyncTrack) Stalled(now time.Time) time.Duration {
	if !Syncing(t.Action) || t.Since.IsZero() {
		return 0
	}
	return max(now.Sub(t.Since), 0)
}

// arrayReport is one disk's last state report and its stall track.
type arrayReport struct {
	State    channel.State
	Received time.Time
	Track    ResyncTrack
}

// arrayCollector exports the arrays' states that the running guests'
// guestraid report on their channels, per guest and disk.
type arrayCollector struct {
	arrays func() map[string]map[string]arrayReport
	clock  Clock

	degraded, degradedLegs, progress, action, mismatch, stalled, age *prometheus.Desc
}

func newArrayCollector(arrays func() map[string]map[string]arrayReport, clock Clock) *arrayCollector {
	l := []string{"guest", "disk"}
	return &arrayCollector{arrays: arrays, clock: clock,
		degraded: prometheus.NewDesc("mhcodi_fenced_array_degraded",
			"1 when the guest's md array of the disk runs with fewer legs than it has slots (guestraid's report).", l, nil),
		degradedLegs: prometheus.NewDesc("mhcodi_fenced_array_degraded_legs",
			"md's degraded count: legs missing from the guest's array of the disk.", l, nil),
		progress: prometheus.NewDesc("mhcodi_fenced_array_sync_progress_ratio",
			"Progress of the array's current sync action (0..1; 0 when idle).", l, nil),
		action: prometheus.NewDesc("mhcodi_fenced_array_sync_action",
			"1 for the array's current md sync_action (idle, resync, recover, check, repair, frozen).", []string{"guest", "disk", "action"}, nil),
		mismatch: prometheus.NewDesc("mhcodi_fenced_array_mismatch_cnt",
			"md's mismatch_cnt of the array (after a check: blocks that differ between the legs).", l, nil),
		stalled: prometheus.NewDesc("mhcodi_fenced_array_sync_stalled_seconds",
			"Seconds since the array's sync progress last moved while it syncs (0 when idle): a resync stuck at 97 % grows without bound.", l, nil),
		age: prometheus.NewDesc("mhcodi_fenced_array_report_age_seconds",
			"Seconds since guestraid last reported the array's state (it reports every few seconds while the guest runs).", l, nil),
	}
}

func (c *arrayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.degraded, c.degradedLegs, c.progress, c.action, c.mismatch, c.stalled, c.age} {
		ch <- d
	}
}

func (c *arrayCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.clock.Now()
	for guest, disks := range c.arrays() {
		for disk, r := range disks {
			gauge := func(d *prometheus.Desc, v float64, extra ...string) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{guest, disk}, extra...)...)
			}
			gauge(c.degraded, b2f(r.State.Degraded > 0))
			gauge(c.degradedLegs, float64(r.State.Degraded))
			gauge(c.progress, r.State.Progress)
			action := r.State.SyncAction
			if action == "" {
				action = "idle"
			}
			gauge(c.action, 1, action)
			gauge(c.mismatch, float64(r.State.MismatchCnt))
			gauge(c.stalled, r.Track.Stalled(now).Seconds())
			gauge(c.age, max(now.Sub(r.Received), 0).Seconds())
		}
	}
}
