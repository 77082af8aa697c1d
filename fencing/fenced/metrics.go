package fenced

import "github.com/prometheus/client_golang/prometheus"

// metrics are fenced's Prometheus series.
type metrics struct {
	foreign   *prometheus.CounterVec
	selfFence prometheus.Counter
	refused   prometheus.Counter
	quorum    prometheus.Gauge
	leaseAge  prometheus.Gauge
	running   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		foreign: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mhcodi_fenced_foreign_guests_destroyed_total",
			Help: "Guests found running on this node that the ledger gives to another node (or another epoch), destroyed by the monitor.",
		}, []string{"guest"}),
		selfFence: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mhcodi_fenced_self_fence_guests_destroyed_total",
			Help: "Guests destroyed because this node could not renew its lease.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mhcodi_fenced_refused_requests_total",
			Help: "API requests refused because the client certificate is not a cluster member's.",
		}),
		quorum: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mhcodi_fenced_ledger_quorum",
			Help: "1 when this node's ledger could be written at the last monitor round.",
		}),
		leaseAge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mhcodi_fenced_lease_renewal_age_seconds",
			Help: "Seconds since this node's lease was last renewed (quorum mode).",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mhcodi_fenced_guests_running",
			Help: "Guests the local hypervisor runs.",
		}),
	}
	reg.MustRegister(m.foreign, m.selfFence, m.refused, m.quorum, m.leaseAge, m.running)
	return m
}
