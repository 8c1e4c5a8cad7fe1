package sqlstore

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// benchStore opens a store with agents agents for benchmarks.
func benchStore(b *testing.B, dsn string, agents int) (*Store, []*fleet.Agent) {
	b.Helper()
	s := openStore(b, dsn)
	if err := s.SetEndpoints(bg, []string{"https://hooks.example/a"}); err != nil {
		b.Fatal(err)
	}
	as := make([]*fleet.Agent, agents)
	for i := range as {
		a, err := s.AddAgent(bg, spec(fmt.Sprintf("agent-%05d", i)), t0)
		if err != nil {
			b.Fatal(err)
		}
		as[i] = a
	}
	return s, as
}

// pollResult is one incremental poll's result: a ~2 KB state, 10
// observations (new records over 500 paths), the state unchanged except
// for one poll in 100.
func pollResult(a *fleet.Agent, version int64, n int) fleet.Result {
	at := t0.Add(time.Duration(n) * time.Second)
	st := fleet.Trusted
	if n%100 == 99 {
		st = fleet.Untrusted
	}
	r := fleet.Result{AgentID: a.ID, Version: version, At: at, Status: st, Reason: "all files approved",
		Checks:  []byte(`[{"name":"signature","ok":true},{"name":"nonce","ok":true},{"name":"replay","ok":true}]`),
		NextDue: at.Add(time.Minute),
		Boot: &fleet.Boot{Known: true, ResetCount: 1, Clock: uint64(n),
			State: []byte(`{"records":` + fmt.Sprint(n*10) + `,"pcrs":{"sha256":{"23":"` + strings.Repeat("ab", 32) + `"}},"prefix":"` + strings.Repeat("0", 1900) + `"}`)}}
	for j := 0; j < 10; j++ {
		rec := n*10 + j
		r.Observations = append(r.Observations, fleet.Observation{Path: fmt.Sprintf("/usr/lib/app/file-%03d", rec%500), Kind: "file",
			SHA256: fmt.Sprintf("%064x", rec), Record: uint64(rec), Latest: true})
	}
	return r
}

// BenchmarkSaveResult stores incremental polls one after another (1,000
// agents, in turn); saves/s is the store's attestation throughput.
func BenchmarkSaveResult(b *testing.B) {
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			s, as := benchStore(b, be.dsn(b), 1000)
			versions := make([]int64, len(as))
			for i, a := range as {
				versions[i] = a.Version
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				k := i % len(as)
				if err := s.SaveResult(bg, pollResult(as[k], versions[k], i/len(as)+1)); err != nil {
					b.Fatal(err)
				}
				versions[k]++
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "saves/s")
		})
	}
}

// BenchmarkSaveResultParallel stores polls from many goroutines at once
// (as the engine's pollers do).
func BenchmarkSaveResultParallel(b *testing.B) {
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			s, as := benchStore(b, be.dsn(b), 1000)
			var next atomic.Int64
			b.SetParallelism(4)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				// Each goroutine owns the agents it takes.
				var mine []*fleet.Agent
				var versions []int64
				for len(mine) < 50 {
					k := next.Add(1) - 1
					if int(k) >= len(as) {
						break
					}
					mine = append(mine, as[k])
					versions = append(versions, as[k].Version)
				}
				i := 0
				for pb.Next() {
					k := i % len(mine)
					if err := s.SaveResult(bg, pollResult(mine[k], versions[k], i/len(mine)+1)); err != nil {
						b.Error(err)
						return
					}
					versions[k]++
					i++
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "saves/s")
		})
	}
}
