package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/rimon-dev/rimon/fleet"
)

func TestLintAndValues(t *testing.T) {
	st := newStore(t)
	addAgents(t, st, map[fleet.Status]int{fleet.Trusted: 3, fleet.Untrusted: 1, fleet.Pending: 2})
	reg := prometheus.NewPedanticRegistry()
	m := New(reg, st)

	m.Attestation(fleet.Trusted, 20*time.Millisecond)
	m.Attestation(fleet.Trusted, 30*time.Millisecond)
	m.Attestation(fleet.Untrusted, 2*time.Second)
	m.Attestation(fleet.Status("nonsense"), time.Second)
	m.Lag(1500 * time.Millisecond)
	m.Lag(-time.Second) // early: 0
	m.Records(10)
	m.Records(5)
	m.Records(-3) // ignored
	m.Delivery(true)
	m.Delivery(false)
	m.Delivery(false)
	m.DB("save", 3*time.Millisecond)
	m.DB("claim", time.Millisecond)

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	want := `
# HELP rimon_agents Registered agents by state, counted by the store at scrape time.
# TYPE rimon_agents gauge
rimon_agents{state="compromised"} 0
rimon_agents{state="invalid"} 0
rimon_agents{state="pending"} 2
rimon_agents{state="trusted"} 3
rimon_agents{state="unreachable"} 0
rimon_agents{state="untrusted"} 1
# HELP rimon_attestations_total Attestations of agents by outcome: the resulting state, or error when nothing could be stored.
# TYPE rimon_attestations_total counter
rimon_attestations_total{result="compromised"} 0
rimon_attestations_total{result="error"} 1
rimon_attestations_total{result="invalid"} 0
rimon_attestations_total{result="pending"} 0
rimon_attestations_total{result="trusted"} 2
rimon_attestations_total{result="unreachable"} 0
rimon_attestations_total{result="untrusted"} 1
# HELP rimon_records_verified_total Log records verified.
# TYPE rimon_records_verified_total counter
rimon_records_verified_total 15
# HELP rimon_webhook_deliveries_total Webhook delivery attempts by result: success (a 2xx answer) or failure.
# TYPE rimon_webhook_deliveries_total counter
rimon_webhook_deliveries_total{result="failure"} 2
rimon_webhook_deliveries_total{result="success"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"rimon_agents", "rimon_attestations_total", "rimon_records_verified_total", "rimon_webhook_deliveries_total"); err != nil {
		t.Error(err)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf
		if !strings.HasPrefix(mf.GetName(), "rimon_") || strings.HasPrefix(mf.GetName(), "rimon_rimon") {
			t.Errorf("metric %s: want exactly one rimon_ prefix", mf.GetName())
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "agent" || l.GetName() == "name" {
					t.Errorf("metric %s has a per-agent label %s", mf.GetName(), l.GetName())
				}
			}
		}
	}
	hist := func(name string, labels ...string) *dto.Histogram {
		t.Helper()
		mf := got[name]
		if mf == nil || mf.GetType() != dto.MetricType_HISTOGRAM {
			t.Fatalf("%s: missing or not a histogram", name)
		}
		for _, mt := range mf.GetMetric() {
			match := true
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, l := range mt.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				match = match && found
			}
			if match {
				return mt.GetHistogram()
			}
		}
		t.Fatalf("%s%v: no such series", name, labels)
		return nil
	}
	check := func(name string, h *dto.Histogram, count uint64, sum float64) {
		t.Helper()
		if h.GetSampleCount() != count || abs(h.GetSampleSum()-sum) > 1e-9 {
			t.Errorf("%s: count %d sum %g, want %d %g", name, h.GetSampleCount(), h.GetSampleSum(), count, sum)
		}
	}
	check("rimon_attestation_duration_seconds", hist("rimon_attestation_duration_seconds"), 4, 3.05)
	check("rimon_schedule_lag_seconds", hist("rimon_schedule_lag_seconds"), 2, 1.5)
	check("rimon_db_operation_duration_seconds{op=save}", hist("rimon_db_operation_duration_seconds", "op", "save"), 1, 0.003)
	check("rimon_db_operation_duration_seconds{op=claim}", hist("rimon_db_operation_duration_seconds", "op", "claim"), 1, 0.001)
	// The scrape itself is a store operation.
	if h := hist("rimon_db_operation_duration_seconds", "op", "count_by_status"); h.GetSampleCount() < 1 {
		t.Errorf("count_by_status observed %d times, want at least 1", h.GetSampleCount())
	}
	// 1.5 s of lag lies in the (1, 2] bucket.
	for _, b := range hist("rimon_schedule_lag_seconds").GetBucket() {
		want := uint64(1)
		if b.GetUpperBound() >= 2 {
			want = 2
		}
		if b.GetUpperBound() < 1.5 && b.GetUpperBound() >= 0.01 {
			want = 1 // the 0 of the early start
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("lag bucket le=%g: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// TestAgentsFollowStore: the gauge is read at scrape time, not cached.
func TestAgentsFollowStore(t *testing.T) {
	st := newStore(t)
	reg := prometheus.NewRegistry()
	New(reg, st)
	addAgents(t, st, map[fleet.Status]int{fleet.Trusted: 1})
	if n := testutil.ToFloat64(gauge(t, reg, "trusted")); n != 1 {
		t.Fatalf("rimon_agents{state=trusted} = %g, want 1", n)
	}
	addAgents(t, st, map[fleet.Status]int{fleet.Trusted: 2, fleet.Compromised: 1})
	if n := testutil.ToFloat64(gauge(t, reg, "trusted")); n != 3 {
		t.Errorf("rimon_agents{state=trusted} = %g, want 3", n)
	}
	if n := testutil.ToFloat64(gauge(t, reg, "compromised")); n != 1 {
		t.Errorf("rimon_agents{state=compromised} = %g, want 1", n)
	}
}

// gauge returns a collector of one rimon_agents series, read from reg.
func gauge(t *testing.T, reg *prometheus.Registry, state string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rimon_agents" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == state {
				g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
				g.Set(m.GetGauge().GetValue())
				return g
			}
		}
	}
	t.Fatalf("no rimon_agents{state=%q}", state)
	return nil
}

// TestScrapeFailsWhenStoreFails: a store that errs or does not answer in
// time makes the scrape fail (HTTP 500 from promhttp), never stale or
// zero numbers.
func TestScrapeFailsWhenStoreFails(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	for _, tc := range []struct {
		name  string
		store fleet.Store
	}{
		{"error", errStore{err: errors.New("database is locked")}},
		{"hangs", hangStore{release: release}},
		{"closed database", closed(t)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := New(reg, tc.store)
			m.SetScrapeTimeout(50 * time.Millisecond)
			m.Attestation(fleet.Trusted, time.Second)
			if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "rimon_agents") {
				t.Fatalf("Gather = %v, want an error naming rimon_agents", err)
			}
			srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			defer srv.Close()
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusInternalServerError {
				t.Fatalf("scrape: HTTP %d, want 500; body:\n%s", resp.StatusCode, body)
			}
			if strings.Contains(string(body), "rimon_agents{") {
				t.Errorf("failed scrape shows agent counts:\n%s", body)
			}
		})
	}
}

// TestTwoOnOneRegistry: a second Metrics on the same registry shares the
// collectors instead of failing.
func TestTwoOnOneRegistry(t *testing.T) {
	st := newStore(t)
	reg := prometheus.NewRegistry()
	a := New(reg, st)
	b, err := Register(reg, st)
	if err != nil {
		t.Fatal(err)
	}
	a.Records(2)
	b.Records(3)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP rimon_records_verified_total Log records verified.
# TYPE rimon_records_verified_total counter
rimon_records_verified_total 5
`), "rimon_records_verified_total"); err != nil {
		t.Error(err)
	}
	// A different collector under a rimon_ name is refused.
	other := prometheus.NewRegistry()
	other.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "rimon_records_verified_total", Help: "x"}))
	if _, err := Register(other, st); err == nil {
		t.Error("Register over a clashing collector succeeded")
	}
}

type errStore struct {
	fleet.Store
	err error
}

func (s errStore) CountByStatus(context.Context) (map[fleet.Status]int, error) { return nil, s.err }

// hangStore does not answer until released, whatever its context says.
type hangStore struct {
	fleet.Store
	release chan struct{}
}

func (s hangStore) CountByStatus(context.Context) (map[fleet.Status]int, error) {
	<-s.release
	return map[fleet.Status]int{fleet.Trusted: 1}, nil
}

// closed is a real store whose database is closed.
func closed(t *testing.T) fleet.Store {
	st := newStore(t)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return st
}
