package engine

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// replicaOf is a second engine (another replica) on the fixture's
// database file, with its own store connection and the same clock.
func (f *fixture) replicaOf(owner string) *Engine {
	f.t.Helper()
	st, err := sqlstore.Open(context.Background(), f.dbPath)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { st.Close() })
	return New(st, Options{Owner: owner, Now: f.e.o.Now, PushGrace: f.e.o.PushGrace})
}

// TestPushAcrossReplicas: a challenge handed out by one replica is
// answered to another behind the same address (the nonces are in the
// database), still single use and per agent.
func TestPushAcrossReplicas(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	m.file("/bin/a", "v1")
	f := newFixture(t, Options{Owner: "r1", PushGrace: 30 * time.Second})
	f.add(fleet.Spec{Name: "a", Push: true, PushTokenHash: tokenHash("token-a"), AK: m.akPEM, Interval: time.Minute})
	f.add(fleet.Spec{Name: "b", Push: true, PushTokenHash: tokenHash("token-b"), AK: m.akPEM, Interval: time.Minute})
	r1 := httptest.NewServer(f.e.PushHandler())
	defer r1.Close()
	r2 := httptest.NewServer(f.replicaOf("r2").PushHandler())
	defer r2.Close()
	p1, p2 := &pushClient{t, r1.URL}, &pushClient{t, r2.URL}

	code, ch := p1.post("/v1/push/a/challenge", "token-a", nil)
	if code != 200 {
		t.Fatalf("challenge from r1: %d %v", code, ch)
	}
	ev := m.evidenceFor(ch)
	if code, out := p2.post("/v1/push/b/evidence", "token-b", ev); code != 409 {
		t.Errorf("a's nonce posted for b to r2: %d %v, want 409", code, out)
	}
	if code, out := p2.post("/v1/push/a/evidence", "token-a", ev); code != 200 || out["state"] != "trusted" {
		t.Fatalf("evidence to r2 for r1's challenge: %d %v, want 200 trusted", code, out)
	}
	if code, out := p1.post("/v1/push/a/evidence", "token-a", ev); code != 409 {
		t.Errorf("the same nonce again, to r1: %d %v, want 409 (single use)", code, out)
	}
	// Expiry holds across replicas too.
	_, ch = p2.post("/v1/push/a/challenge", "token-a", nil)
	ev = m.evidenceFor(ch)
	f.advance(NonceLifetime + time.Second)
	if code, out := p1.post("/v1/push/a/evidence", "token-a", ev); code != 409 {
		t.Errorf("an expired nonce: %d %v, want 409", code, out)
	}
}

// TestPushRightAfterClaim: the scheduler claiming a push agent between
// its challenge and its evidence (as it does for a push agent just
// registered, due at once) moves the row's version; the push is still
// stored, not refused with 503.
func TestPushRightAfterClaim(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	m.file("/bin/a", "v1")
	f := newFixture(t, Options{Owner: "r1", PushGrace: 30 * time.Second})
	f.add(fleet.Spec{Name: "a", Push: true, PushTokenHash: tokenHash("token-a"), AK: m.akPEM, Interval: time.Minute})
	ws := &claimOnRead{Store: f.store.(*sqlstore.Store), now: f.e.o.Now}
	e := New(ws, Options{Owner: "r1", Now: f.e.o.Now, PushGrace: 30 * time.Second})
	srv := httptest.NewServer(e.PushHandler())
	defer srv.Close()
	p := &pushClient{t, srv.URL}
	for i := range 3 {
		_, ch := p.post("/v1/push/a/challenge", "token-a", nil)
		ev := m.evidenceFor(ch)
		// The claim lands between the handler's read of the agent and
		// its save, as a scheduler's can on any replica.
		ws.armed.Store(true)
		ws.claimed.Store(false)
		code, out := p.post("/v1/push/a/evidence", "token-a", ev)
		ws.armed.Store(false)
		if code != 200 {
			t.Fatalf("push %d with a claim under it: %d %v, want 200", i, code, out)
		}
		if !ws.claimed.Load() {
			t.Fatalf("push %d: no claim was made under the push (the test tests nothing)", i)
		}
		f.advance(2 * time.Minute)
	}
	a, _ := f.store.Agent(context.Background(), "a")
	if a.Status != fleet.Trusted || a.LeaseOwner != "" {
		t.Errorf("after the pushes: %s (%s), lease %q; want trusted, no lease", a.Status, a.Reason, a.LeaseOwner)
	}
}

// claimOnRead is a store whose first read of an agent is followed by the
// scheduler's claim of it (as a replica's scheduler would at that moment):
// the reader then holds a version that is already gone.
type claimOnRead struct {
	*sqlstore.Store
	now     func() time.Time
	armed   atomic.Bool
	claimed atomic.Bool
}

func (c *claimOnRead) Agent(ctx context.Context, name string) (*fleet.Agent, error) {
	a, err := c.Store.Agent(ctx, name)
	if err != nil || !c.armed.Load() || c.claimed.Load() {
		return a, err
	}
	c.claimed.Store(true)
	if _, err := c.Store.ClaimAgent(ctx, name, "scheduler", c.now(), time.Minute); err != nil {
		return nil, err
	}
	return a, nil
}

// TestWakeTakesALease: an agent woken out of turn is leased before its
// round, so that no other replica can claim and poll it meanwhile.
func TestWakeTakesALease(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	m.file("/bin/a", "v1")
	f := newFixture(t, Options{Owner: "r1"})
	f.add(fleet.Spec{Name: "a", URL: m.srv.URL, AK: m.akPEM})
	ctx := context.Background()
	jobs := make(chan job, 1)
	f.e.Wake("a")
	f.e.wakeUp(ctx, jobs)
	j := <-jobs
	if j.owner != "r1" {
		t.Fatalf("woken round's owner %q, want r1 (a leased round)", j.owner)
	}
	got, err := f.store.Claim(ctx, "r2", f.e.o.Now(), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("another replica claimed %s during a woken round", got[0].Name)
	}
	f.e.round(ctx, j)
	a, _ := f.store.Agent(ctx, "a")
	if a.Status != fleet.Trusted || a.LeaseOwner != "" {
		t.Errorf("after the woken round: %s (%s), lease %q", a.Status, a.Reason, a.LeaseOwner)
	}
}
