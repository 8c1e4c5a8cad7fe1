package sqlstore

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// TestPushNonces: a nonce put by one replica is taken by another, once;
// it is refused after its expiry, for another agent (and stays its
// owner's), and an agent holds at most MaxNoncesPerAgent at once.
func TestPushNonces(t *testing.T) {
	eachDB(t, func(t *testing.T, s1 *Store, dsn string) {
		s2 := openStore(t, dsn)
		a, b := mustAdd(t, s1, "a"), mustAdd(t, s1, "b")
		n1 := bytes.Repeat([]byte{1}, 32)
		if err := s1.PutNonce(bg, a.ID, n1, 7, t0, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := s2.TakeNonce(bg, b.ID, n1, t0); err != nil || ok {
			t.Errorf("b takes a's nonce: ok %v, %v; want refused", ok, err)
		}
		since, ok, err := s2.TakeNonce(bg, a.ID, n1, t0.Add(time.Second))
		if err != nil || !ok || since != 7 {
			t.Errorf("a takes its nonce on another replica: since %d, ok %v, %v; want 7, true", since, ok, err)
		}
		if _, ok, err := s1.TakeNonce(bg, a.ID, n1, t0.Add(time.Second)); err != nil || ok {
			t.Errorf("a takes its nonce again: ok %v, %v; want refused (single use)", ok, err)
		}
		n2 := bytes.Repeat([]byte{2}, 32)
		if err := s1.PutNonce(bg, a.ID, n2, 0, t0, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := s2.TakeNonce(bg, a.ID, n2, t0.Add(time.Minute)); err != nil || ok {
			t.Errorf("a takes an expired nonce: ok %v, %v; want refused", ok, err)
		}
		// Bounded per agent: the oldest go.
		var ns [][]byte
		for i := range MaxNoncesPerAgent + 3 {
			n := bytes.Repeat([]byte{byte(10 + i)}, 32)
			ns = append(ns, n)
			if err := s1.PutNonce(bg, b.ID, n, 0, t0, t0.Add(time.Minute+time.Duration(i)*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		var rows int
		if err := s1.r.QueryRow(`SELECT COUNT(*) FROM push_nonces WHERE agent_id = $1`, b.ID).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != MaxNoncesPerAgent {
			t.Errorf("b holds %d nonces, want %d", rows, MaxNoncesPerAgent)
		}
		if _, ok, _ := s2.TakeNonce(bg, b.ID, ns[0], t0); ok {
			t.Errorf("b's oldest nonce past the bound is still usable")
		}
		if _, ok, _ := s2.TakeNonce(bg, b.ID, ns[len(ns)-1], t0); !ok {
			t.Errorf("b's newest nonce is not usable")
		}
	})
}

// TestPushNonceTakenOnce: replicas racing for one nonce: exactly one
// gets it.
func TestPushNonceTakenOnce(t *testing.T) {
	eachDB(t, func(t *testing.T, s1 *Store, dsn string) {
		stores := []*Store{s1, openStore(t, dsn), openStore(t, dsn)}
		a := mustAdd(t, s1, "a")
		for round := range 20 {
			n := []byte(fmt.Sprintf("nonce-%02d-................................", round))
			if err := s1.PutNonce(bg, a.ID, n, 0, t0, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			got := 0
			for _, s := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, ok, err := s.TakeNonce(bg, a.ID, n, t0)
					if err != nil {
						t.Error(err)
					}
					if ok {
						mu.Lock()
						got++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if got != 1 {
				t.Fatalf("round %d: %d replicas took the nonce, want 1", round, got)
			}
		}
	})
}

// TestClaimAgent: an agent leased out of turn is not claimed by another
// replica while the lease lives, is taken over after it, and a stalled
// holder's result is refused once another has claimed it.
func TestClaimAgent(t *testing.T) {
	eachDB(t, func(t *testing.T, s1 *Store, dsn string) {
		s2 := openStore(t, dsn)
		mustAdd(t, s1, "a")
		got, err := s1.ClaimAgent(bg, "a", "r1", t0, time.Minute)
		if err != nil || got == nil || got.LeaseOwner != "r1" {
			t.Fatalf("ClaimAgent = %+v, %v", got, err)
		}
		if again, err := s2.ClaimAgent(bg, "a", "r2", t0.Add(59*time.Second), time.Minute); err != nil || again != nil {
			t.Errorf("r2 claims a live lease: %v, %v; want nil", again, err)
		}
		if ds, _ := s2.Claim(bg, "r2", t0.Add(59*time.Second), time.Minute, 10); len(ds) != 0 {
			t.Errorf("r2's scheduler claims a live lease")
		}
		if _, err := s2.ClaimAgent(bg, "nobody", "r2", t0, time.Minute); err == nil {
			t.Errorf("ClaimAgent of an unknown agent: no error")
		}
		// Past the lease, r2 takes it; r1's late result is refused.
		took, err := s2.ClaimAgent(bg, "a", "r2", t0.Add(time.Minute), time.Minute)
		if err != nil || took == nil {
			t.Fatalf("r2 after the lease: %v, %v", took, err)
		}
		late := fleet.Result{AgentID: got.ID, Version: got.Version, Owner: "r1", Status: fleet.Trusted, At: t0.Add(70 * time.Second), NextDue: t0.Add(2 * time.Minute)}
		if err := s1.SaveResult(bg, late); err == nil {
			t.Errorf("a stalled replica's result was stored over another's lease")
		}
		if a := mustAgent(t, s1, "a"); a.Status != fleet.Pending || a.LeaseOwner != "r2" {
			t.Errorf("after the refused result: %s, lease %q; want pending, r2", a.Status, a.LeaseOwner)
		}
	})
}
