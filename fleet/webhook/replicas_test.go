package webhook

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet/sqlstore/sqltest"
)

func TestMain(m *testing.M) { os.Exit(sqltest.Main(m)) }

// TestSendersShareOutbox: three senders (three replicas) on one
// database send each delivery once: they claim deliveries in the
// database instead of each reading what is due. A slow receiver keeps
// every request in flight long enough for the others to read the outbox.
func TestSendersShareOutbox(t *testing.T) {
	for _, b := range sqltest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			dsn := b.DSN(t)
			st := openStore(t, dsn)
			// A slow receiver (not a timed assertion).
			rc := newReceiver(t, time.Now, func(_ int, w http.ResponseWriter) { time.Sleep(20 * time.Millisecond) })
			setEndpoints(t, st, rc.URL)
			const n = 60
			now := time.Now()
			for i := range n {
				change(t, st, fmt.Sprintf("a%02d", i), now.Add(-time.Minute))
			}
			for range 3 {
				runSender(t, newTestSender(t, Options{Store: openStore(t, dsn), Secrets: map[string][]byte{rc.URL: testKey},
					Batch: 5, Poll: 10 * time.Millisecond}))
			}
			waitFor(t, "every delivery delivered", func() bool {
				for _, d := range deliveries(t, st, rc.URL) {
					if d.State != StateDelivered {
						return false
					}
				}
				return true
			})
			seen := map[string]int{}
			for _, r := range rc.requests() {
				seen[r.header.Get("webhook-id")]++
			}
			if len(seen) != n {
				t.Errorf("%d distinct deliveries received, want %d", len(seen), n)
			}
			for id, c := range seen {
				if c != 1 {
					t.Errorf("delivery %s sent %d times by the replicas, want once", id, c)
				}
			}
		})
	}
}

// TestDeadSendersDeliveryIsSent: a delivery claimed by a sender that died
// (its claim never answered) is sent by another sender once the claim's
// hold has passed: not lost.
func TestDeadSendersDeliveryIsSent(t *testing.T) {
	dsn := sqltest.Postgres(t)
	st := openStore(t, dsn)
	rc := newReceiver(t, time.Now, status(http.StatusOK))
	setEndpoints(t, st, rc.URL)
	c := &clock{t: time.Now()}
	change(t, st, "a", c.Now().Add(-time.Minute))
	// The dead replica's claim: held for a minute, never answered.
	got, err := st.ClaimDeliveries(context.Background(), c.Now(), time.Minute, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("the dead sender's claim: %d, %v", len(got), err)
	}
	s := newTestSender(t, Options{Store: openStore(t, dsn), Secrets: map[string][]byte{rc.URL: testKey}, Now: c.Now})
	sweep(s)
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("sent during another sender's claim: %d requests", n)
	}
	c.Add(time.Minute + time.Second)
	sweep(s)
	if d := only(t, st, rc.URL); d.State != StateDelivered || len(rc.requests()) != 1 {
		t.Errorf("after the claim's hold: %s, %d requests; want delivered once", d.State, len(rc.requests()))
	}
}
