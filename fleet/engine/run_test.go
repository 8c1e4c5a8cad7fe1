package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// recMetrics records what the engine reports.
type recMetrics struct {
	mu       sync.Mutex
	outcomes map[fleet.Status]int
	lags     int
	records  int
}

func (r *recMetrics) Attestation(s fleet.Status, _ time.Duration) {
	r.mu.Lock()
	r.outcomes[s]++
	r.mu.Unlock()
}
func (r *recMetrics) Lag(time.Duration) { r.mu.Lock(); r.lags++; r.mu.Unlock() }
func (r *recMetrics) Records(n int)     { r.mu.Lock(); r.records += n; r.mu.Unlock() }
func (r *recMetrics) Delivery(bool)     {}
func (r *recMetrics) DB(string, time.Duration) {
}

// TestRunSchedules: under Run, agents with a one-second interval are
// attested again and again (each round only after the previous one's
// jittered interval), more agents than workers all get their turn, a woken
// agent whose next round is an hour away is attested at once, and the
// metrics see every round.
func TestRunSchedules(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	m.file("/bin/a", "v1")
	met := &recMetrics{outcomes: map[fleet.Status]int{}}
	f := newFixture(t, Options{Owner: "replica-7", Now: time.Now, Concurrency: 3, ClaimEvery: 50 * time.Millisecond, Metrics: met})
	const n = 12
	var names []string
	for i := range n {
		name := fmt.Sprintf("m%02d", i)
		f.add(fleet.Spec{Name: name, URL: m.srv.URL, AK: m.akPEM, Interval: time.Second})
		names = append(names, name)
	}
	f.add(fleet.Spec{Name: "hourly", URL: m.srv.URL, AK: m.akPEM, Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.e.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	first := waitFor(t, f.store, append(names, "hourly")...)
	// Every agent is attested again, after about its interval.
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range names {
		for {
			a, _ := f.store.Agent(ctx, name)
			if a.LastPoll.After(first[name].LastPoll) {
				if gap := a.LastPoll.Sub(first[name].LastPoll); gap < 900*time.Millisecond {
					t.Errorf("%s attested again after %v, before its interval (1 s, -10%%)", name, gap)
				}
				if a.Status != fleet.Trusted {
					t.Errorf("%s: %s (%s)", name, a.Status, a.Reason)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not attested a second time", name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	h, _ := f.store.Agent(ctx, "hourly")
	if h.NextDue.Sub(h.LastPoll) < 50*time.Minute {
		t.Fatalf("hourly agent due again after %v", h.NextDue.Sub(h.LastPoll))
	}
	f.e.Wake("hourly")
	for {
		a, _ := f.store.Agent(ctx, "hourly")
		if a.LastPoll.After(h.LastPoll) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a woken agent was not attested")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := m.verifier.Load(); got != "replica-7" {
		t.Errorf("Rimon-Verifier header %q, want the owner replica-7", got)
	}
	met.mu.Lock()
	defer met.mu.Unlock()
	if met.outcomes[fleet.Trusted] < 2*n+2 || met.lags < 2*n+2 || met.records == 0 {
		t.Errorf("metrics: %v attestations, %d lags, %d records", met.outcomes, met.lags, met.records)
	}
}
