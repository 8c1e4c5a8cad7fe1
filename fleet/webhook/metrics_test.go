package webhook

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rimon-dev/rimon/fleet/metrics"
)

// TestPrometheusCounts: attempts reach rimon_webhook_deliveries_total
// through the fleet's Prometheus metrics: one failure (a 500), then one
// success.
func TestPrometheusCounts(t *testing.T) {
	st := newStore(t)
	clk := &clock{t: t0}
	rc := newReceiver(t, clk.Now, func(n int, w http.ResponseWriter) {
		if n == 0 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	setEndpoints(t, st, rc.URL)
	change(t, st, "a1", t0)
	reg := prometheus.NewRegistry()
	s := newTestSender(t, Options{Store: st, Secrets: map[string][]byte{rc.URL: testKey}, Now: clk.Now, Metrics: metrics.New(reg, st)})
	sweep(s)
	clk.Set(only(t, st, rc.URL).Next)
	sweep(s)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP rimon_webhook_deliveries_total Webhook delivery attempts by result: success (a 2xx answer) or failure.
# TYPE rimon_webhook_deliveries_total counter
rimon_webhook_deliveries_total{result="failure"} 1
rimon_webhook_deliveries_total{result="success"} 1
`), "rimon_webhook_deliveries_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "rimon_db_operation_duration_seconds"); n < 2 {
		t.Errorf("%d rimon_db_operation_duration_seconds series, want due_deliveries and update_delivery at least", n)
	}
}
