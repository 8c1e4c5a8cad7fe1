package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// TestGroupCommit queues writes behind a slow one so that they form one
// group (one SQLite transaction): a refused write (stale version) and a
// write failing with a database error do not take the others down.
func TestGroupCommit(t *testing.T) {
	s := openStore(t, sqliteBackend().dsn(t))
	if err := s.SetEndpoints(bg, []string{"https://hooks.example/a"}); err != nil {
		t.Fatal(err)
	}
	const n = 12
	agents := make([]*fleet.Agent, n)
	for i := range agents {
		agents[i] = mustAdd(t, s, fmt.Sprintf("a%d", i))
	}
	queued := func() int {
		s.group.mu.Lock()
		defer s.group.mu.Unlock()
		return len(s.group.queue)
	}
	// The slow write holds the lead until the n+2 others are queued.
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := s.write(bg, "slow", func(ctx context.Context, tx *txn) error {
			<-release
			return nil
		})
		if err != nil {
			t.Errorf("slow write = %v", err)
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for !func() bool { s.group.mu.Lock(); defer s.group.mu.Unlock(); return s.group.leading }() {
		if time.Now().After(deadline) {
			t.Fatal("the slow write never led")
		}
		time.Sleep(time.Millisecond)
	}
	errs := make([]error, n+2)
	for i := 0; i < n+2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			switch {
			case i == n: // a database error
				errs[i] = s.write(bg, "bad", func(ctx context.Context, tx *txn) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO no_such_table VALUES (1)`)
					return err
				})
			case i == n+1: // a stale version
				a := agents[0]
				errs[i] = s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version - 1, At: t0, Status: fleet.Invalid})
			default:
				a := agents[i]
				errs[i] = s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0.Add(time.Second), Status: fleet.Trusted,
					Observations: []fleet.Observation{{Path: "/x", Kind: "file", SHA256: "aa", Latest: true}}})
			}
		}(i)
	}
	for queued() < n+2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", queued(), n+2)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Errorf("write %d = %v", i, errs[i])
		}
		a := mustAgent(t, s, agents[i].Name)
		if a.Status != fleet.Trusted || a.Version != agents[i].Version+1 {
			t.Errorf("%s: %s v%d, want trusted v%d", a.Name, a.Status, a.Version, agents[i].Version+1)
		}
		if h, _ := s.History(bg, a.Name, 0); len(h) != 1 {
			t.Errorf("%s: %d transitions, want 1", a.Name, len(h))
		}
		if o, _ := s.Observations(bg, a.ID); len(o) != 1 {
			t.Errorf("%s: %d observations, want 1", a.Name, len(o))
		}
	}
	if errs[n] == nil || !strings.Contains(errs[n].Error(), "no_such_table") {
		t.Errorf("write with a database error = %v, want it reported", errs[n])
	}
	if !errors.Is(errs[n+1], fleet.ErrConflict) {
		t.Errorf("stale write = %v, want ErrConflict", errs[n+1])
	}
	if ds, _ := s.Deliveries(bg, "", 0); len(ds) != n {
		t.Errorf("%d deliveries, want %d", len(ds), n)
	}
}

// TestGroupCancel: a write whose context ends while it waits in the queue
// is not run, and returns the context's error.
func TestGroupCancel(t *testing.T) {
	s := openStore(t, sqliteBackend().dsn(t))
	a := mustAdd(t, s, "a")
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.write(bg, "slow", func(ctx context.Context, tx *txn) error { <-release; return nil })
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		s.group.mu.Lock()
		l := s.group.leading
		s.group.mu.Unlock()
		if l {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow write never led")
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(bg)
	res := make(chan error, 1)
	go func() {
		res <- s.SaveResult(ctx, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0, Status: fleet.Trusted})
	}()
	for {
		s.group.mu.Lock()
		q := len(s.group.queue)
		s.group.mu.Unlock()
		if q == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the save never queued")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled SaveResult = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := mustAgent(t, s, "a"); got.Status != fleet.Pending {
		t.Errorf("a canceled save was stored: %s", got.Status)
	}
	// The store still writes.
	save(t, s, a, fleet.Trusted)
}
