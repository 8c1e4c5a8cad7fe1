package webhook

import (
	"context"
	"net/http"
	"testing"
	"time"
)

// BenchmarkDeliver: deliveries per second from a SQLite outbox to one
// local receiver that answers 200 at once (the sender's own cost: claim,
// sign, request, outcome, two writes per delivery).
func BenchmarkDeliver(b *testing.B) {
	const n = 200
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st := newStore(b)
		rc := newReceiver(b, time.Now, status(http.StatusOK))
		setEndpoints(b, st, rc.URL)
		now := time.Now().Add(-time.Minute)
		for j := range n {
			change(b, st, "a1", now.Add(time.Duration(j)*time.Millisecond))
		}
		s, err := NewSender(Options{Store: st, Secrets: map[string][]byte{rc.URL: testKey}, Poll: 10 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- s.Run(ctx) }()
		for len(rc.requests()) < n {
			time.Sleep(time.Millisecond)
		}
		// Delivered means stored as delivered.
		for {
			pending := 0
			for _, d := range deliveries(b, st, rc.URL) {
				if d.State != StateDelivered {
					pending++
				}
			}
			if pending == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
		b.StopTimer()
		cancel()
		<-done
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "deliveries/s")
}
