package engine

import (
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// TestBackoff: an unreachable agent waits its interval, then twice, four
// times... that, capped at MaxBackoff (or the interval when longer), each
// wait jittered by ±10%.
func TestBackoff(t *testing.T) {
	e := New(nil, Options{MaxBackoff: 10 * time.Minute})
	a := &fleet.Agent{Spec: fleet.Spec{Interval: time.Minute}}
	for _, c := range []struct {
		n    int
		want time.Duration
	}{{1, time.Minute}, {2, 2 * time.Minute}, {3, 4 * time.Minute}, {4, 8 * time.Minute}, {5, 10 * time.Minute}, {40, 10 * time.Minute}} {
		for range 50 {
			if got := e.backoff(a, c.n); got < c.want*9/10 || got > c.want*11/10 {
				t.Fatalf("backoff after %d failures = %v, want %v ±10%%", c.n, got, c.want)
			}
		}
	}
	long := &fleet.Agent{Spec: fleet.Spec{Interval: time.Hour}}
	if got := e.backoff(long, 3); got < 54*time.Minute || got > 66*time.Minute {
		t.Errorf("an hourly agent's backoff = %v, want its interval", got)
	}
	// Jitter spreads a fleet added at once.
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[jitter(time.Minute)/time.Second] = true
	}
	if len(seen) < 5 {
		t.Errorf("jitter(1m) took %d distinct second values in 100 draws", len(seen))
	}
}
