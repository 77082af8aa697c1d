package fenced

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// exportedMetrics are the names of every series fenced exports.
func exportedMetrics(t *testing.T) map[string]bool {
	cfg := testConfig(t, false, "")
	s, _, _, _ := newTestServer(t, cfg, "node-a")
	exported := map[string]bool{}
	mfs, err := s.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		exported[mf.GetName()] = true
	}
	// Collectors without series yet (no guest runs): their descriptions.
	descs := make(chan *prometheus.Desc, 64)
	newArrayCollector(s.channels.Arrays, s.clock).Describe(descs)
	s.met.foreign.Describe(descs)
	close(descs)
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range descs {
		m := fq.FindStringSubmatch(d.String())
		require.Len(t, m, 2, d.String())
		exported[m[1]] = true
	}
	return exported
}

var metricName = regexp.MustCompile(`mhcodi_[a-z_]+`)

// TestDashboardUsesExportedMetrics: the Grafana dashboard is JSON whose
// panels query only series fenced exports.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "scripts", "monitoring", "mhcodi-dashboard.json"))
	require.NoError(t, err)
	var d struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	require.NoError(t, json.Unmarshal(b, &d))
	require.NotEmpty(t, d.Panels)
	exported := exportedMetrics(t)
	for _, p := range d.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			ms := metricName.FindAllString(tg.Expr, -1)
			assert.NotEmpty(t, ms, p.Title)
			for _, m := range ms {
				assert.True(t, exported[m], "%s: fenced exports no %s", p.Title, m)
			}
		}
	}
}

// TestAlertRulesUseExportedMetrics: every rule of the shipped Prometheus
// alert rules is complete and names only series fenced exports (promtool
// checks the PromQL where Debian's prometheus package is installed).
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "scripts", "monitoring", "mhcodi-alerts.yml"))
	require.NoError(t, err)
	var f struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr, For string
				Labels           map[string]string
				Annotations      map[string]string
			}
		}
	}
	require.NoError(t, yaml.Unmarshal(b, &f))
	require.NotEmpty(t, f.Groups)

	exported := exportedMetrics(t)
	seen := map[string]bool{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			assert.NotEmpty(t, r.Alert)
			assert.NotEmpty(t, r.Expr, r.Alert)
			assert.NotEmpty(t, r.Labels["severity"], r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], r.Alert)
			assert.False(t, seen[r.Alert], "alert %s twice", r.Alert)
			seen[r.Alert] = true
			ms := metricName.FindAllString(r.Expr, -1)
			assert.NotEmpty(t, ms, r.Alert)
			for _, m := range ms {
				assert.True(t, exported[m], "%s: fenced exports no %s", r.Alert, m)
			}
		}
	}
}
