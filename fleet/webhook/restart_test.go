package webhook

import (
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestRestartLosesNothing: a sender stops with a delivery pending (its
// receiver was down); a new sender over the same database file delivers
// it, with the same webhook-id.
func TestRestartLosesNothing(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "verifier.db")
	var up atomic.Bool
	rc := newReceiver(t, time.Now, func(_ int, w http.ResponseWriter) {
		if up.Load() {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	st1 := openStore(t, dsn)
	setEndpoints(t, st1, rc.URL)
	change(t, st1, "a1", time.Now())
	s1 := newTestSender(t, Options{Store: st1, Secrets: map[string][]byte{rc.URL: testKey}})
	stop := runSender(t, s1)
	waitFor(t, "the first attempt stored", func() bool { return only(t, st1, rc.URL).Attempts == 1 })
	stop()
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}

	st2 := openStore(t, dsn)
	d := only(t, st2, rc.URL)
	if d.State != StatePending || d.LastStatus != http.StatusServiceUnavailable {
		t.Fatalf("after restart: %+v, want pending after a 503", d)
	}
	up.Store(true)
	// The restarted sender's clock is past the backoff.
	later := func() time.Time { return time.Now().Add(time.Minute) }
	s2 := newTestSender(t, Options{Store: st2, Secrets: map[string][]byte{rc.URL: testKey}, Now: later})
	runSender(t, s2)
	waitFor(t, "delivery after restart", func() bool { return only(t, st2, rc.URL).State == StateDelivered })
	d = only(t, st2, rc.URL)
	reqs := rc.requests()
	if d.Attempts != 2 || len(reqs) != 2 {
		t.Fatalf("%+v after %d requests, want 2 attempts", d, len(reqs))
	}
	for _, r := range reqs {
		if r.header.Get(HeaderID) != d.ID {
			t.Errorf("webhook-id %q, want %q on every attempt", r.header.Get(HeaderID), d.ID)
		}
	}
}

// TestCrashWithClaimHeld: a sender dies (its database handle gone) while
// a request it claimed is unanswered; once the claim lapses, the next
// sender sends it again (at least once: the receiver sees the id twice).
func TestCrashWithClaimHeld(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "verifier.db")
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	rc := newReceiver(t, time.Now, func(n int, w http.ResponseWriter) {
		if n == 0 {
			arrived <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusOK)
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	st1 := openStore(t, dsn)
	setEndpoints(t, st1, rc.URL)
	change(t, st1, "a1", time.Now())
	s1 := newTestSender(t, Options{Store: st1, Secrets: map[string][]byte{rc.URL: testKey}, Timeout: time.Hour})
	stop1 := runSender(t, s1)
	<-arrived
	claimed := only(t, st1, rc.URL)
	if claimed.State != StatePending || claimed.Next.Before(time.Now().Add(time.Hour)) {
		t.Fatalf("in flight: %+v, want pending and claimed for hours", claimed)
	}
	// The process dies: nothing more of it reaches the database.
	if err := st1.Close(); err != nil {
		t.Fatal(err)
	}

	st2 := openStore(t, dsn)
	afterLease := func() time.Time { return time.Now().Add(s1.lease + time.Minute) }
	s2 := newTestSender(t, Options{Store: st2, Secrets: map[string][]byte{rc.URL: testKey}, Now: afterLease})
	runSender(t, s2)
	waitFor(t, "delivery by the next sender", func() bool { return only(t, st2, rc.URL).State == StateDelivered })
	close(release)
	stop1()
	reqs := rc.requests()
	if len(reqs) != 2 || reqs[0].header.Get(HeaderID) != claimed.ID || reqs[1].header.Get(HeaderID) != claimed.ID {
		t.Fatalf("receiver got %d requests, want the same webhook-id %s twice", len(reqs), claimed.ID)
	}
	if d := only(t, st2, rc.URL); d.State != StateDelivered || d.Attempts != 1 {
		t.Errorf("stored %+v, want delivered with the one attempt that was recorded", d)
	}
}
