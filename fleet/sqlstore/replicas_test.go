package sqlstore

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// TestReplicasClaim: three stores on one database (three replicas),
// claiming and storing concurrently, never hold the same agent at once:
// a claim is never given while another replica's lease lives, and so no
// result of a lease holder is ever refused.
func TestReplicasClaim(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			dsn := b.dsn(t)
			const replicas, workers, agents, saves = 3, 3, 60, 900
			stores := make([]*Store, replicas)
			for i := range stores {
				stores[i] = openStore(t, dsn)
			}
			for i := 0; i < agents; i++ {
				mustAdd(t, stores[0], fmt.Sprintf("agent-%02d", i))
			}
			var (
				mu      sync.Mutex
				holder  = map[int64]string{}
				claimed = map[[2]int64]string{} // (agent, version) → owner
				done    atomic.Int64
				wg      sync.WaitGroup
			)
			fail := func(format string, a ...any) {
				t.Errorf(format, a...)
				done.Store(saves) // stop everyone
			}
			for r := 0; r < replicas; r++ {
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func(s *Store, owner string) {
						defer wg.Done()
						for done.Load() < saves {
							now := time.Now()
							got, err := s.Claim(bg, owner, now, time.Hour, 4)
							if err != nil {
								fail("%s: Claim = %v", owner, err)
								return
							}
							mu.Lock()
							for _, a := range got {
								if h, ok := holder[a.ID]; ok {
									fail("%s claimed %s, held by %s", owner, a.Name, h)
								}
								k := [2]int64{a.ID, a.Version}
								if o, ok := claimed[k]; ok {
									fail("%s and %s both claimed %s at version %d", owner, o, a.Name, a.Version)
								}
								holder[a.ID], claimed[k] = owner, owner
							}
							mu.Unlock()
							for _, a := range got {
								mu.Lock()
								delete(holder, a.ID) // still leased until the save commits
								mu.Unlock()
								err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, Owner: owner, At: now,
									Status: fleet.Trusted, NextDue: now})
								if err != nil {
									fail("%s: SaveResult(%s v%d) = %v", owner, a.Name, a.Version, err)
									return
								}
								done.Add(1)
							}
						}
					}(stores[r], fmt.Sprintf("replica-%d/%d", r, w))
				}
			}
			wg.Wait()
			per := map[string]int{}
			for _, o := range claimed {
				per[o[:len("replica-0")]]++
			}
			t.Logf("claims per replica: %v", per)
			if len(per) < 2 {
				t.Errorf("only %v claimed: the test did not run replicas side by side", per)
			}
		})
	}
}

// TestLeaseTakeover: a replica that stalls past its lease loses the agent
// to another, and its late result is refused.
func TestLeaseTakeover(t *testing.T) {
	eachDB(t, func(t *testing.T, s1 *Store, dsn string) {
		s2 := openStore(t, dsn)
		a := mustAdd(t, s1, "a")
		got, err := s1.Claim(bg, "r1", t0, time.Minute, 10)
		if err != nil || len(got) != 1 {
			t.Fatalf("Claim r1 = %v, %v", got, err)
		}
		if g, err := s2.Claim(bg, "r2", t0.Add(59*time.Second), time.Minute, 10); err != nil || len(g) != 0 {
			t.Fatalf("Claim r2 under r1's lease = %v, %v, want none", g, err)
		}
		g2, err := s2.Claim(bg, "r2", t0.Add(61*time.Second), time.Minute, 10)
		if err != nil || len(g2) != 1 || g2[0].ID != a.ID {
			t.Fatalf("Claim r2 after the lease = %v, %v, want a", g2, err)
		}
		err = s1.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: got[0].Version, Owner: "r1", At: t0.Add(70 * time.Second), Status: fleet.Untrusted})
		if !errors.Is(err, fleet.ErrConflict) {
			t.Errorf("late SaveResult of r1 = %v, want ErrConflict", err)
		}
		if err := s2.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: g2[0].Version, Owner: "r2", At: t0.Add(70 * time.Second), Status: fleet.Trusted}); err != nil {
			t.Errorf("SaveResult of r2 = %v", err)
		}
		if st := mustAgent(t, s1, "a"); st.Status != fleet.Trusted {
			t.Errorf("state %s, want trusted (r2's)", st.Status)
		}
	})
}

// TestConcurrentMigrations: replicas opening a new database at the same
// time all succeed, and the schema is applied once.
func TestConcurrentMigrations(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			dsn := b.dsn(t)
			const n = 6
			var wg sync.WaitGroup
			stores := make([]*Store, n)
			errs := make([]error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					stores[i], errs[i] = Open(bg, dsn)
				}(i)
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Open %d = %v", i, err)
					continue
				}
				defer stores[i].Close()
			}
			if t.Failed() {
				return
			}
			var rows, max int
			if err := stores[0].r.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_version`).Scan(&rows, &max); err != nil {
				t.Fatal(err)
			}
			if rows != SchemaVersion() || max != SchemaVersion() {
				t.Errorf("schema_version: %d rows, max %d, want %d once each", rows, max, SchemaVersion())
			}
		})
	}
}
