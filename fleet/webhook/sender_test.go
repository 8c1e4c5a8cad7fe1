package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// clock is a fake clock the tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

// countMetrics counts Delivery reports.
type countMetrics struct {
	fleet.NopMetrics
	ok, failed atomic.Int64
}

func (m *countMetrics) Delivery(ok bool) {
	if ok {
		m.ok.Add(1)
	} else {
		m.failed.Add(1)
	}
}

// request is what a receiver got.
type request struct {
	at     time.Time
	header http.Header
	body   []byte
}

// receiver is a real HTTP server answering with answer(n) to its n-th
// request (from 0), recording each.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []request
}

func newReceiver(t testing.TB, now func() time.Time, answer func(n int, w http.ResponseWriter)) *receiver {
	t.Helper()
	rc := &receiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		n := len(rc.reqs)
		rc.reqs = append(rc.reqs, request{at: now(), header: r.Header.Clone(), body: body})
		rc.mu.Unlock()
		answer(n, w)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

func status(code int) func(int, http.ResponseWriter) {
	return func(_ int, w http.ResponseWriter) { w.WriteHeader(code) }
}

var testKey = []byte("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

// change makes one change of state of the agent name at `at`: the store
// queues one delivery per enabled endpoint.
func change(t testing.TB, st fleet.Store, name string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	a, err := st.Agent(ctx, name)
	if errors.Is(err, fleet.ErrNotFound) {
		a, err = st.AddAgent(ctx, fleet.Spec{Name: name, URL: "http://127.0.0.1:1", PCRs: []int{23}, Banks: []string{"sha256"}, Interval: time.Minute}, at)
	}
	if err != nil {
		t.Fatal(err)
	}
	to := fleet.Trusted
	if a.Status == fleet.Trusted {
		to = fleet.Untrusted
	}
	err = st.SaveResult(ctx, fleet.Result{AgentID: a.ID, Version: a.Version, At: at, Status: to, Reason: "test change",
		Findings: []byte(`[]`), NextDue: at.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
}

func deliveries(t testing.TB, st fleet.Store, endpoint string) []*fleet.Delivery {
	t.Helper()
	ds, err := st.Deliveries(context.Background(), endpoint, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func only(t testing.TB, st fleet.Store, endpoint string) *fleet.Delivery {
	t.Helper()
	ds := deliveries(t, st, endpoint)
	if len(ds) != 1 {
		t.Fatalf("%d deliveries to %s, want 1", len(ds), endpoint)
	}
	return ds[0]
}

func setEndpoints(t testing.TB, st fleet.Store, urls ...string) {
	t.Helper()
	if err := st.SetEndpoints(context.Background(), urls); err != nil {
		t.Fatal(err)
	}
}

func newTestSender(t *testing.T, o Options) *Sender {
	t.Helper()
	s, err := NewSender(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sweep runs passes until the outbox has nothing more due now and nothing
// is in line, waiting for every request it started (Run does the same on
// its own, woken by each finished request).
func sweep(s *Sender) {
	for {
		wait := s.pass(context.Background())
		s.wg.Wait()
		s.mu.Lock()
		queued := 0
		for _, ep := range s.eps {
			queued += len(ep.queue)
		}
		s.mu.Unlock()
		if wait != 0 && queued == 0 {
			return
		}
	}
}

func TestDeliverSigned(t *testing.T) {
	st := newStore(t)
	clk := &clock{t: t0}
	rc := newReceiver(t, clk.Now, status(http.StatusNoContent))
	setEndpoints(t, st, rc.URL)
	change(t, st, "a1", t0)
	m := &countMetrics{}
	s := newTestSender(t, Options{Store: st, Secrets: map[string][]byte{rc.URL: testKey}, Now: clk.Now, Metrics: m})
	clk.Add(3 * time.Second)
	sweep(s)

	reqs := rc.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	d := only(t, st, rc.URL)
	r := reqs[0]
	if got := r.header.Get(HeaderID); got != d.ID {
		t.Errorf("webhook-id = %q, want the delivery's id %q", got, d.ID)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if got, want := r.header.Get(HeaderTimestamp), "1795867203"; got != want { // t0+3s: the attempt's time
		t.Errorf("webhook-timestamp = %s, want %s", got, want)
	}
	if err := Verify(testKey, r.header, r.body, clk.Now(), 0); err != nil {
		t.Errorf("receiver's Verify = %v", err)
	}
	// The published algorithm, computed here from the spec's words
	// rather than by Sign: base64(HMAC-SHA256(key, "id.timestamp.body")).
	mac := hmac.New(sha256.New, testKey)
	mac.Write([]byte(r.header.Get(HeaderID) + "." + r.header.Get(HeaderTimestamp) + "."))
	mac.Write(r.body)
	if got, want := r.header.Get(HeaderSignature), "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)); got != want {
		t.Errorf("webhook-signature = %s, want %s", got, want)
	}
	var p fleet.Payload
	if err := json.Unmarshal(r.body, &p); err != nil || p.Type != fleet.EventStateChanged || p.Data.Agent != "a1" || p.Data.NewState != fleet.Trusted {
		t.Errorf("body %s: %+v, %v", r.body, p, err)
	}
	if d.State != StateDelivered || d.Attempts != 1 || d.LastStatus != http.StatusNoContent || d.LastError != "" {
		t.Errorf("delivery = %+v, want delivered after 1 attempt with 204", d)
	}
	if m.ok.Load() != 1 || m.failed.Load() != 0 {
		t.Errorf("metrics ok %d failed %d, want 1 0", m.ok.Load(), m.failed.Load())
	}
	// Delivered: never sent again.
	clk.Add(48 * time.Hour)
	sweep(s)
	if n := len(rc.requests()); n != 1 {
		t.Errorf("after delivery the receiver got %d requests, want 1", n)
	}
}

// TestRetryFor24Hours follows a delivery to an endpoint that always fails,
// on a fake clock, until it gives up.
func TestRetryFor24Hours(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(int, http.ResponseWriter)
	}{
		{"500", status(http.StatusInternalServerError)},
		{"404", status(http.StatusNotFound)},
		{"redirect", func(_ int, w http.ResponseWriter) {
			w.Header().Set("Location", "http://127.0.0.1:1/")
			w.WriteHeader(http.StatusTemporaryRedirect)
		}},
		{"503 without Retry-After", status(http.StatusServiceUnavailable)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			clk := &clock{t: t0}
			rc := newReceiver(t, clk.Now, tc.answer)
			setEndpoints(t, st, rc.URL)
			change(t, st, "a1", t0)
			m := &countMetrics{}
			s := newTestSender(t, Options{Store: st, Secrets: map[string][]byte{rc.URL: testKey}, Now: clk.Now, Metrics: m})
			var d *fleet.Delivery
			for i := 0; ; i++ {
				if i > 100 {
					t.Fatalf("still %s after 100 rounds: %+v", d.State, d)
				}
				sweep(s)
				d = only(t, st, rc.URL)
				if d.State != StatePending {
					break
				}
				if !d.Next.After(clk.Now()) {
					t.Fatalf("pending delivery due at %s, not after now %s", d.Next, clk.Now())
				}
				clk.Set(d.Next)
			}
			reqs := rc.requests()
			if d.State != StateFailed || d.Attempts != len(reqs) {
				t.Fatalf("delivery = %+v after %d requests, want failed with as many attempts", d, len(reqs))
			}
			if int(m.failed.Load()) != len(reqs) || m.ok.Load() != 0 {
				t.Errorf("metrics failed %d ok %d, want %d 0", m.failed.Load(), m.ok.Load(), len(reqs))
			}
			last, prev := reqs[len(reqs)-1].at, reqs[len(reqs)-2].at
			if last.Sub(d.Created) < 24*time.Hour || prev.Sub(d.Created) >= 24*time.Hour {
				t.Errorf("gave up after attempts at %s and %s from creation, want the last at or past 24h and the one before under",
					prev.Sub(d.Created), last.Sub(d.Created))
			}
			for i, r := range reqs {
				if r.header.Get(HeaderID) != d.ID {
					t.Errorf("attempt %d: webhook-id %q, want %q", i+1, r.header.Get(HeaderID), d.ID)
				}
				if err := Verify(testKey, r.header, r.body, r.at, time.Second); err != nil {
					t.Errorf("attempt %d: %v (each attempt is signed with its own time)", i+1, err)
				}
				if i == 0 {
					continue
				}
				gap, step := r.at.Sub(reqs[i-1].at), Backoff(i)
				if gap < step/2 || gap > step {
					t.Errorf("gap before attempt %d = %s, want within [%s, %s]", i+1, gap, step/2, step)
				}
			}
			t.Logf("%d attempts over %s", len(reqs), last.Sub(d.Created))
		})
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second}
	for i, w := range want {
		if got := Backoff(i + 1); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	if got := Backoff(1000); got != MaxBackoff {
		t.Errorf("Backoff(1000) = %s, want %s", got, MaxBackoff)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2015, 10, 21, 7, 20, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"Wed, 21 Oct 2015 07:28:00 GMT", 8 * time.Minute, true}, // RFC 9110's example
		{"Wednesday, 21-Oct-15 07:28:00 GMT", 8 * time.Minute, true},
		{"Wed Oct 21 07:28:00 2015", 8 * time.Minute, true},
		{"Wed, 21 Oct 2015 07:00:00 GMT", 0, true}, // in the past: now
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
	}
	for _, tc := range tests {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		code  int
		value string
		wait  time.Duration
	}{
		{"429 seconds", http.StatusTooManyRequests, "120", 120 * time.Second},
		{"503 date", http.StatusServiceUnavailable, t0.Add(time.Hour).Format(http.TimeFormat), time.Hour},
		{"429 longer than the backoff", http.StatusTooManyRequests, "7200", 2 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			clk := &clock{t: t0}
			rc := newReceiver(t, clk.Now, func(n int, w http.ResponseWriter) {
				if n == 0 {
					w.Header().Set("Retry-After", tc.value)
					w.WriteHeader(tc.code)
					return
				}
				w.WriteHeader(http.StatusOK)
			})
			setEndpoints(t, st, rc.URL)
			change(t, st, "a1", t0)
			s := newTestSender(t, Options{Store: st, Secrets: map[string][]byte{rc.URL: testKey}, Now: clk.Now})
			sweep(s)
			d := only(t, st, rc.URL)
			if d.State != StatePending || d.LastStatus != tc.code || !d.Next.Equal(t0.Add(tc.wait)) {
				t.Fatalf("after %d: %+v, want pending, next attempt at %s", tc.code, d, t0.Add(tc.wait))
			}
			// The endpoint asked for quiet: a new delivery waits too.
			clk.Set(t0.Add(tc.wait - time.Second))
			change(t, st, "a1", clk.Now())
			sweep(s)
			if n := len(rc.requests()); n != 1 {
				t.Fatalf("%d requests before Retry-After passed, want 1", n)
			}
			clk.Set(t0.Add(tc.wait + 2*time.Second))
			sweep(s)
			if n := len(rc.requests()); n != 3 {
				t.Fatalf("%d requests after Retry-After passed, want 3", n)
			}
			for _, d := range deliveries(t, st, rc.URL) {
				if d.State != StateDelivered {
					t.Errorf("delivery %s: %+v, want delivered", d.ID, d)
				}
			}
		})
	}
}

func TestGoneDisables(t *testing.T) {
	st := newStore(t)
	clk := &clock{t: t0}
	gone := newReceiver(t, clk.Now, status(http.StatusGone))
	ok := newReceiver(t, clk.Now, status(http.StatusOK))
	setEndpoints(t, st, gone.URL, ok.URL)
	change(t, st, "a1", t0)
	change(t, st, "a1", t0.Add(time.Second))
	clk.Add(2 * time.Second)
	s := newTestSender(t, Options{Store: st, Secrets: map[string][]byte{gone.URL: testKey, ok.URL: testKey}, Now: clk.Now, PerEndpoint: 1})
	sweep(s)
	if n := len(gone.requests()); n != 1 {
		t.Errorf("the 410 endpoint got %d requests, want 1 (the second delivery is not sent after a 410)", n)
	}
	for _, d := range deliveries(t, st, gone.URL) {
		if d.State != StateDisabled {
			t.Errorf("delivery to the 410 endpoint: %+v, want disabled", d)
		}
	}
	for _, d := range deliveries(t, st, ok.URL) {
		if d.State != StateDelivered {
			t.Errorf("delivery to the other endpoint: %+v, want delivered", d)
		}
	}
	// The store no longer queues for it.
	change(t, st, "a1", clk.Now())
	if n := len(deliveries(t, st, gone.URL)); n != 2 {
		t.Errorf("%d deliveries to the disabled endpoint after a new change, want still 2", n)
	}
	if n := len(deliveries(t, st, ok.URL)); n != 3 {
		t.Errorf("%d deliveries to the enabled endpoint, want 3", n)
	}
}

func TestNoSecretNotSent(t *testing.T) {
	st := newStore(t)
	clk := &clock{t: t0}
	rc := newReceiver(t, clk.Now, status(http.StatusOK))
	setEndpoints(t, st, rc.URL)
	change(t, st, "a1", t0)
	s := newTestSender(t, Options{Store: st, Now: clk.Now})
	sweep(s)
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("sent %d unsigned requests", n)
	}
	if d := only(t, st, rc.URL); d.State != StatePending || d.Attempts != 1 || d.LastError == "" {
		t.Fatalf("delivery = %+v, want a failed attempt saying why", d)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runSender(t *testing.T, s *Sender) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestHangingEndpointDoesNotDelayOthers: an endpoint that never answers,
// with a backlog larger than a batch, holds neither another endpoint's
// deliveries nor more than its share of requests. Its timeout (an hour)
// is far beyond the test's deadline: the other endpoint's deliveries can
// only arrive in time if they do not wait for it.
func TestHangingEndpointDoesNotDelayOthers(t *testing.T) {
	st := newStore(t)
	release := make(chan struct{})
	var hanging atomic.Int64
	hang := newReceiver(t, time.Now, func(int, http.ResponseWriter) {
		hanging.Add(1)
		<-release
	})
	t.Cleanup(func() { close(release) }) // runs before the server closes
	ok := newReceiver(t, time.Now, status(http.StatusOK))
	setEndpoints(t, st, hang.URL)
	now := time.Now()
	for i := range 30 {
		change(t, st, "a1", now.Add(time.Duration(i-60)*time.Second))
	}
	setEndpoints(t, st, hang.URL, ok.URL)
	for i := range 3 {
		change(t, st, "a1", now.Add(time.Duration(i-20)*time.Second))
	}
	s := newTestSender(t, Options{Store: st, Secrets: map[string][]byte{hang.URL: testKey, ok.URL: testKey},
		Timeout: time.Hour, Batch: 5, PerEndpoint: 2, Concurrency: 4})
	stop := runSender(t, s)
	waitFor(t, "the healthy endpoint's deliveries", func() bool {
		n := 0
		for _, d := range deliveries(t, st, ok.URL) {
			if d.State == StateDelivered {
				n++
			}
		}
		return n == 3
	})
	if n := hanging.Load(); n > 2 {
		t.Errorf("%d requests to the hanging endpoint at once, want at most PerEndpoint 2", n)
	}
	stop()
	// Shut down: what was claimed but not answered is pending again and
	// due as it was, not held by a lapsed claim.
	for _, d := range deliveries(t, st, hang.URL) {
		if d.State != StatePending || d.Attempts != 0 {
			t.Errorf("after shutdown: %+v, want pending, no attempt", d)
		}
		// A claim is a 6-hour lease here (6 x Timeout): none is left.
		if d.Next.After(time.Now().Add(time.Hour)) {
			t.Errorf("after shutdown: %s still claimed until %s", d.ID, d.Next)
		}
	}
}

func TestNotifyWakes(t *testing.T) {
	st := newStore(t)
	rc := newReceiver(t, time.Now, status(http.StatusOK))
	setEndpoints(t, st, rc.URL)
	cs := &countingStore{Store: st}
	s := newTestSender(t, Options{Store: cs, Secrets: map[string][]byte{rc.URL: testKey}, Poll: time.Hour})
	runSender(t, s)
	// Run's first pass reads an empty outbox; the next read is an hour
	// away unless Notify wakes it.
	waitFor(t, "the first read", func() bool { return cs.reads.Load() >= 1 })
	change(t, st, "a1", time.Now())
	s.Notify()
	waitFor(t, "delivery after Notify", func() bool { return len(rc.requests()) == 1 })
}

// countingStore counts reads and writes of the outbox.
type countingStore struct {
	fleet.Store
	reads, writes atomic.Int64
}

func (c *countingStore) UpdateDelivery(ctx context.Context, d *fleet.Delivery) error {
	c.writes.Add(1)
	return c.Store.UpdateDelivery(ctx, d)
}

func (c *countingStore) DueDeliveries(ctx context.Context, now time.Time, limit int) ([]*fleet.Delivery, error) {
	c.reads.Add(1)
	return c.Store.DueDeliveries(ctx, now, limit)
}

// TestBacklogDrains: a burst of deliveries to one fast endpoint, far more
// than its line holds, is delivered at the endpoint's pace, with a few
// writes per delivery (deferring the overflow by a fixed lease made each
// wait minutes, rewritten on every pass).
func TestBacklogDrains(t *testing.T) {
	st := newStore(t)
	cs := &countingStore{Store: st}
	rc := newReceiver(t, time.Now, status(http.StatusOK))
	setEndpoints(t, st, rc.URL)
	now := time.Now().Add(-time.Minute)
	const n = 400
	for i := range n {
		change(t, st, "a1", now.Add(time.Duration(i)*time.Millisecond))
	}
	s := newTestSender(t, Options{Store: cs, Secrets: map[string][]byte{rc.URL: testKey}, Poll: 10 * time.Millisecond})
	runSender(t, s)
	defer func() {
		if t.Failed() {
			c := map[string]int{}
			for _, d := range deliveries(t, st, rc.URL) {
				c[d.State]++
				if d.State == StatePending {
					t.Logf("pending %s next in %s attempts %d err %q", d.ID, time.Until(d.Next), d.Attempts, d.LastError)
				}
			}
			t.Logf("states %v; %d requests", c, len(rc.requests()))
		}
	}()
	waitFor(t, "the backlog delivered", func() bool { return len(rc.requests()) >= n })
	waitFor(t, "every outcome stored", func() bool {
		for _, d := range deliveries(t, st, rc.URL) {
			if d.State != StateDelivered {
				return false
			}
		}
		return true
	})
	if w := cs.writes.Load(); w > 6*n {
		t.Errorf("%d writes for %d deliveries, want at most %d", w, n, 6*n)
	}
	ids := map[string]bool{}
	for _, r := range rc.requests() {
		ids[r.header.Get(HeaderID)] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct webhook-ids received, want %d", len(ids), n)
	}
	t.Logf("%d requests, %d writes, %d reads for %d deliveries", len(rc.requests()), cs.writes.Load(), cs.reads.Load(), n)
}

// TestTimeoutHoldsEndpoint: a request without an answer within Timeout is
// a failed attempt; the endpoint's other deliveries wait for its next
// attempt instead of each waiting out a timeout of their own.
func TestTimeoutHoldsEndpoint(t *testing.T) {
	st := newStore(t)
	clk := &clock{t: t0}
	release := make(chan struct{})
	var calls atomic.Int64
	rc := newReceiver(t, clk.Now, func(int, http.ResponseWriter) {
		calls.Add(1)
		<-release
	})
	t.Cleanup(func() { close(release) })
	setEndpoints(t, st, rc.URL)
	for i := range 5 {
		change(t, st, "a1", t0.Add(time.Duration(i)*time.Millisecond))
	}
	clk.Add(time.Second)
	s := newTestSender(t, Options{Store: st, Secrets: map[string][]byte{rc.URL: testKey}, Now: clk.Now,
		Timeout: 100 * time.Millisecond, PerEndpoint: 1})
	sweep(s)
	if n := calls.Load(); n != 1 {
		t.Errorf("%d requests to an endpoint that does not answer, want 1 (the others wait for its next attempt)", n)
	}
	var attempted *fleet.Delivery
	for _, d := range deliveries(t, st, rc.URL) {
		if d.State != StatePending || !d.Next.After(clk.Now()) {
			t.Errorf("%+v: want pending, not due now", d)
		}
		if d.Attempts == 1 {
			attempted = d
		}
	}
	if attempted == nil || !strings.Contains(attempted.LastError, "no answer within 100ms") {
		t.Fatalf("attempted delivery %+v: want one attempt that timed out", attempted)
	}
}

// TestSlowEndpointDoesNotDelayOthers: an endpoint that answers, slowly,
// with a backlog larger than a read, does not make another endpoint wait
// for that backlog: a read that can move nothing defers the waiting
// deliveries and the next reads reach the other endpoint.
func TestSlowEndpointDoesNotDelayOthers(t *testing.T) {
	st := newStore(t)
	slow := newReceiver(t, time.Now, func(int, http.ResponseWriter) { time.Sleep(300 * time.Millisecond) })
	ok := newReceiver(t, time.Now, status(http.StatusOK))
	setEndpoints(t, st, slow.URL)
	now := time.Now()
	const backlog = 30
	for i := range backlog {
		change(t, st, "a1", now.Add(time.Duration(i-60)*time.Second))
	}
	setEndpoints(t, st, slow.URL, ok.URL)
	for i := range 3 {
		change(t, st, "a1", now.Add(time.Duration(i-20)*time.Second))
	}
	s := newTestSender(t, Options{Store: st, Secrets: map[string][]byte{slow.URL: testKey, ok.URL: testKey},
		Batch: 5, PerEndpoint: 1, Poll: time.Hour})
	runSender(t, s)
	waitFor(t, "the other endpoint's deliveries", func() bool {
		n := 0
		for _, d := range deliveries(t, st, ok.URL) {
			if d.State == StateDelivered {
				n++
			}
		}
		return n == 3
	})
	// Waiting for the backlog would have meant at least 22 of it sent
	// first (until fewer than a read's worth were left due).
	if n := len(slow.requests()); n > backlog-20 {
		t.Errorf("the slow endpoint got %d requests before the other endpoint's 3 were delivered, want at most %d", n, backlog-20)
	}
}
