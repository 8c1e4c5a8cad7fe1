package web_test

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// BenchmarkFleetPage: GET /ui/ (counts and the first 1,000 rows, worst
// first) of a fleet of 10,000 agents over HTTPS on SQLite.
func BenchmarkFleetPage(b *testing.B) {
	f := newFixture(b)
	for i := range 10000 {
		if _, err := f.store.AddAgent(bg, fleet.Spec{Name: fmt.Sprintf("agent-%05d", i), URL: "http://10.0.0.1:8443", Interval: time.Minute}, f.now); err != nil {
			b.Fatal(err)
		}
	}
	c := f.srv.Client()
	b.ResetTimer()
	var n int64
	for range b.N {
		req, _ := http.NewRequest("GET", f.srv.URL+"/ui/", nil)
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
	b.ReportMetric(float64(n), "bytes/page")
}
