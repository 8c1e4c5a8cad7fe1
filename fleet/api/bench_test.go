package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/rimon-dev/rimon/fleet"
)

// BenchmarkListAgents: GET /v1/agents of a fleet of 10,000 agents over a
// real HTTP server on SQLite, what rimon fleet list asks for.
func BenchmarkListAgents(b *testing.B) {
	e := newEnvTB(b)
	ak := akPEM(b)
	ctx := context.Background()
	for i := range 10000 {
		if _, err := e.store.AddAgent(ctx, fleet.Spec{Name: fmt.Sprintf("agent-%05d", i), URL: "http://10.0.0.1:8443", AK: ak}, e.now); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var n int64
	for range b.N {
		req, _ := http.NewRequest("GET", e.url+"/v1/agents", nil)
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
	b.ReportMetric(float64(n), "bytes/list")
}
