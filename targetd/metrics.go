package targetd

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mhcodi/mhcodi/targetd/iscsi"
	"github.com/mhcodi/mhcodi/targetd/scsi"
	"github.com/mhcodi/mhcodi/targetd/volume"
)

// metrics are targetd's Prometheus metrics, on a registry of the daemon's
// own (no global state: two daemons can live in one test process).
type metrics struct {
	reg      *prometheus.Registry
	commands *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	ioErrors *prometheus.CounterVec

	mu     sync.Mutex
	byExpo map[string]*exportMetrics // per target, so the hot path does no label lookups
}

type exportMetrics struct {
	reads, writes, others     prometheus.Counter
	readBytes, writeBytes     prometheus.Counter
	readLatency, writeLatency prometheus.Observer
	errors                    prometheus.Counter
}

func newMetrics(d *Daemon) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mhcodi", Subsystem: "targetd", Name: "commands_total",
			Help: "SCSI commands finished, by export, kind (read, write, other) and result (ok, error).",
		}, []string{"target", "kind", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mhcodi", Subsystem: "targetd", Name: "bytes_total",
			Help: "Bytes moved by SCSI commands, by export and direction (read, write).",
		}, []string{"target", "direction"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "mhcodi", Subsystem: "targetd", Name: "command_duration_seconds",
			Help:    "Time from a command's arrival to its status, by export and kind.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16), // 25 µs .. 0.8 s
		}, []string{"target", "kind"}),
		ioErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mhcodi", Subsystem: "targetd", Name: "io_errors_total",
			Help: "Failed volume operations, by export, operation (read, write, sync, discard) and cause (no_space: the filesystem or thin pool is full; sync_failed: refused since an earlier fdatasync failed; io: any other device error).",
		}, []string{"target", "op", "cause"}),
		byExpo: map[string]*exportMetrics{},
	}
	m.reg.MustRegister(m.commands, m.bytes, m.latency, m.ioErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{d: d})
	return m
}

func (m *metrics) export(target string) *exportMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.byExpo[target]
	if !ok {
		e = &exportMetrics{
			reads:        m.commands.WithLabelValues(target, "read", "ok"),
			writes:       m.commands.WithLabelValues(target, "write", "ok"),
			others:       m.commands.WithLabelValues(target, "other", "ok"),
			errors:       m.commands.WithLabelValues(target, "any", "error"),
			readBytes:    m.bytes.WithLabelValues(target, "read"),
			writeBytes:   m.bytes.WithLabelValues(target, "write"),
			readLatency:  m.latency.WithLabelValues(target, "read"),
			writeLatency: m.latency.WithLabelValues(target, "write"),
		}
		m.byExpo[target] = e
	}
	return e
}

func (m *metrics) observe(ev iscsi.Event) {
	e := m.export(ev.Target)
	if ev.Aborted || ev.Status != scsi.StatusGood {
		e.errors.Inc()
		return
	}
	switch {
	case ev.Write && ev.Bytes > 0:
		e.writes.Inc()
		e.writeBytes.Add(float64(ev.Bytes))
		e.writeLatency.Observe(ev.Duration.Seconds())
	case !ev.Write && ev.Bytes > 0 && isRead(ev.Opcode):
		e.reads.Inc()
		e.readBytes.Add(float64(ev.Bytes))
		e.readLatency.Observe(ev.Duration.Seconds())
	default:
		e.others.Inc()
	}
}

// ioError counts one failed volume operation; failures are rare, so the
// label lookup is no burden.
func (m *metrics) ioError(target string, op volume.Op, cause string) {
	m.ioErrors.WithLabelValues(target, string(op), cause).Inc()
}

// isRead reports whether a CDB opcode is a READ(6/10/12/16).
func isRead(op byte) bool { return op == 0x08 || op == 0x28 || op == 0xa8 || op == 0x88 }

// stateCollector reports sessions and fencing state at scrape time.
type stateCollector struct{ d *Daemon }

var (
	sessionsDesc = prometheus.NewDesc("mhcodi_targetd_sessions", "Logged-in sessions, by export.", []string{"target"}, nil)
	epochDesc    = prometheus.NewDesc("mhcodi_targetd_fence_epoch", "Fencing epoch of each export (0: never fenced).", []string{"target", "owner"}, nil)
	sizeDesc     = prometheus.NewDesc("mhcodi_targetd_export_size_bytes", "Size of each exported leg.", []string{"target"}, nil)
	syncDesc     = prometheus.NewDesc("mhcodi_targetd_export_sync_failed", "1 once an fdatasync of the export's volume failed: it fails every write and sync until targetd restarts.", []string{"target"}, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- epochDesc
	ch <- sizeDesc
	ch <- syncDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.d.Exports() {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(e.Sessions), e.Target)
		ch <- prometheus.MustNewConstMetric(epochDesc, prometheus.GaugeValue, float64(e.Fence.Epoch), e.Target, e.Fence.Owner)
		ch <- prometheus.MustNewConstMetric(sizeDesc, prometheus.GaugeValue, float64(e.Size), e.Target)
		failed := 0.0
		if e.SyncError != "" {
			failed = 1
		}
		ch <- prometheus.MustNewConstMetric(syncDesc, prometheus.GaugeValue, failed, e.Target)
	}
}

// Registry is the daemon's metrics registry, for the /metrics handler.
func (d *Daemon) Registry() *prometheus.Registry { return d.metrics.reg }
