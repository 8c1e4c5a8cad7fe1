package sqlstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rimon-dev/rimon/fleet"
)

func TestSaveResult(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		if err := s.SetEndpoints(bg, []string{"https://hooks.example/a", "http://127.0.0.1:1/b"}); err != nil {
			t.Fatal(err)
		}
		a := mustAdd(t, s, "a")
		at := t0.Add(3 * time.Second)
		findings := []byte(`[{"path":"/bin/x","problem":"unexpected digest"}]`)
		r := fleet.Result{AgentID: a.ID, Version: a.Version, At: at, Status: fleet.Untrusted, Reason: "1 file not approved",
			Findings: findings, Checks: []byte(`[{"name":"signature","ok":true}]`), Failures: 0, NextDue: at.Add(time.Minute),
			Boot:   &fleet.Boot{Known: true, ResetCount: 7, RestartCount: 1, Clock: 1<<63 + 5, State: []byte(`{"records":3}`)},
			Events: []fleet.Transition{{Event: "reboot", Reason: "resetCount 6 → 7"}},
			Observations: []fleet.Observation{
				{Path: "/bin/x", Kind: "file", SHA256: "01", Record: 1, Latest: false},
				{Path: "/bin/x", Kind: "file", SHA256: "02", Record: 2, Latest: true},
				{Path: "/opt/app", Kind: "unmeasured", Cause: "vanished", Error: "gone", Record: 1<<63 + 1, Latest: true},
			}}
		if err := s.SaveResult(bg, r); err != nil {
			t.Fatalf("SaveResult = %v", err)
		}
		got := mustAgent(t, s, "a")
		if got.Status != fleet.Untrusted || got.Reason != r.Reason || !got.Since.Equal(at) || !got.LastPoll.Equal(at) ||
			!got.NextDue.Equal(r.NextDue) || string(got.Findings) != string(findings) || string(got.Checks) != string(r.Checks) ||
			got.Version != a.Version+1 {
			t.Errorf("agent after SaveResult = %+v", got)
		}
		if diff := cmp.Diff(*r.Boot, got.Boot); diff != "" {
			t.Errorf("boot (-want +got):\n%s", diff)
		}
		if l, err := s.ListAgents(bg, fleet.Filter{}); err != nil || len(l) != 1 || l[0].Boot.State != nil || !l[0].Boot.Known || l[0].Status != fleet.Untrusted {
			t.Errorf("ListAgents = %+v, %v, want the agent without its boot state", l, err)
		}
		h, err := s.History(bg, "a", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 2 || h[0].Event != "state" || h[0].From != fleet.Pending || h[0].To != fleet.Untrusted ||
			string(h[0].Findings) != string(findings) || h[1].Event != "reboot" || h[1].Reason != "resetCount 6 → 7" ||
			h[1].From != fleet.Pending || h[1].To != fleet.Untrusted || !h[0].At.Equal(at) || h[0].Agent != "a" {
			t.Errorf("History = %+v", h)
		}
		ds, err := s.Deliveries(bg, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || ds[0].Endpoint == ds[1].Endpoint {
			t.Fatalf("Deliveries = %+v, want one per endpoint", ds)
		}
		for _, d := range ds {
			if !strings.HasPrefix(d.ID, "msg_") || len(d.ID) < 20 || d.State != "pending" || d.Attempts != 0 || !d.Next.Equal(at) || !d.Created.Equal(at) {
				t.Errorf("delivery = %+v", d)
			}
			var p fleet.Payload
			if err := json.Unmarshal(d.Payload, &p); err != nil {
				t.Fatalf("payload %s: %v", d.Payload, err)
			}
			want := fleet.Payload{Type: fleet.EventStateChanged, Timestamp: at, Data: fleet.PayloadData{Agent: "a",
				OldState: fleet.Pending, NewState: fleet.Untrusted, Reason: r.Reason, Findings: findings, Time: at}}
			if diff := cmp.Diff(want, p); diff != "" {
				t.Errorf("payload (-want +got):\n%s", diff)
			}
		}
		if ds[0].ID == ds[1].ID {
			t.Errorf("two deliveries share the id %s", ds[0].ID)
		}
		obs, err := s.Observations(bg, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r.Observations, obs); diff != "" {
			t.Errorf("observations (-want +got):\n%s", diff)
		}

		// Same state: since stays, no transition, no delivery; an
		// observation seen again moves its record and takes the Latest
		// mark back.
		at2 := at.Add(time.Minute)
		r2 := fleet.Result{AgentID: a.ID, Version: got.Version, At: at2, Status: fleet.Untrusted, Reason: "still", NextDue: at2.Add(time.Minute),
			Failures:     0,
			Observations: []fleet.Observation{{Path: "/bin/x", Kind: "file", SHA256: "01", Record: 3, Latest: true}}}
		if err := s.SaveResult(bg, r2); err != nil {
			t.Fatalf("SaveResult(same state) = %v", err)
		}
		got2 := mustAgent(t, s, "a")
		if !got2.Since.Equal(at) || got2.Reason != "still" || got2.Findings != nil || got2.Boot.ResetCount != 7 {
			t.Errorf("after a result in the same state: since %v reason %q findings %s boot %+v", got2.Since, got2.Reason, got2.Findings, got2.Boot)
		}
		if h, _ := s.History(bg, "a", 0); len(h) != 2 {
			t.Errorf("History after no change has %d entries, want 2", len(h))
		}
		if ds, _ := s.Deliveries(bg, "", 0); len(ds) != 2 {
			t.Errorf("Deliveries after no change: %d, want 2", len(ds))
		}
		obs, _ = s.Observations(bg, a.ID)
		want := []fleet.Observation{
			{Path: "/bin/x", Kind: "file", SHA256: "02", Record: 2, Latest: false},
			{Path: "/bin/x", Kind: "file", SHA256: "01", Record: 3, Latest: true},
			r.Observations[2],
		}
		if diff := cmp.Diff(want, obs); diff != "" {
			t.Errorf("observations after the second result (-want +got):\n%s", diff)
		}

		// A stale version is refused and stores nothing.
		stale := r2
		stale.Status = fleet.Trusted
		stale.Observations = []fleet.Observation{{Path: "/new", Kind: "file", SHA256: "03", Record: 9, Latest: true}}
		if err := s.SaveResult(bg, stale); !errors.Is(err, fleet.ErrConflict) {
			t.Errorf("SaveResult(stale version) = %v, want ErrConflict", err)
		}
		if got3 := mustAgent(t, s, "a"); got3.Status != fleet.Untrusted || got3.Version != got2.Version {
			t.Errorf("a refused result changed the agent: %+v", got3)
		}
		if o, _ := s.Observations(bg, a.ID); len(o) != 3 {
			t.Errorf("a refused result stored observations: %+v", o)
		}

		// NewBoot clears the observations first.
		r3 := fleet.Result{AgentID: a.ID, Version: got2.Version, At: at2.Add(time.Minute), Status: fleet.Trusted, NewBoot: true,
			Observations: []fleet.Observation{{Path: "/bin/y", Kind: "file", SHA256: "04", Record: 1, Latest: true}}}
		if err := s.SaveResult(bg, r3); err != nil {
			t.Fatal(err)
		}
		obs, _ = s.Observations(bg, a.ID)
		if diff := cmp.Diff(r3.Observations, obs); diff != "" {
			t.Errorf("observations after a new boot (-want +got):\n%s", diff)
		}
		if _, err := s.Agent(bg, "a"); err != nil {
			t.Fatal(err)
		}

		// Unknown agent, bad input.
		if err := s.SaveResult(bg, fleet.Result{AgentID: 12345, At: at, Status: fleet.Trusted}); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("SaveResult(unknown agent) = %v, want ErrNotFound", err)
		}
		for name, bad := range map[string]fleet.Result{
			"state":       {AgentID: a.ID, At: at, Status: "fine"},
			"no_time":     {AgentID: a.ID, Status: fleet.Trusted},
			"findings":    {AgentID: a.ID, At: at, Status: fleet.Trusted, Findings: []byte("{")},
			"event":       {AgentID: a.ID, At: at, Status: fleet.Trusted, Events: []fleet.Transition{{}}},
			"observation": {AgentID: a.ID, At: at, Status: fleet.Trusted, Observations: []fleet.Observation{{Kind: "file"}}},
		} {
			if err := s.SaveResult(bg, bad); !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("SaveResult(bad %s) = %v, want ErrInvalid", name, err)
			}
		}
	})
}

func TestObservationLimit(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s, err := OpenOptions(bg, b.dsn(t), Options{MaxObservations: 5})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			a := mustAdd(t, s, "a")
			obs := func(from, n int) []fleet.Observation {
				var o []fleet.Observation
				for i := from; i < from+n; i++ {
					o = append(o, fleet.Observation{Path: fmt.Sprintf("/f%d", i), Kind: "file", SHA256: "aa", Record: uint64(i), Latest: true})
				}
				return o
			}
			if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0, Status: fleet.Trusted, Observations: obs(0, 4)}); err != nil {
				t.Fatal(err)
			}
			a = mustAgent(t, s, "a")
			// 4 stored + 2 new = 6 > 5: refused, nothing stored.
			err = s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0.Add(time.Second), Status: fleet.Untrusted, Observations: obs(4, 2)})
			if !errors.Is(err, fleet.ErrLimit) || !strings.Contains(err.Error(), "bound is 5") {
				t.Errorf("SaveResult past the bound = %v, want ErrLimit naming the bound", err)
			}
			if got := mustAgent(t, s, "a"); got.Status != fleet.Trusted || got.Version != a.Version {
				t.Errorf("refused result changed the agent: %s v%d", got.Status, got.Version)
			}
			if o, _ := s.Observations(bg, a.ID); len(o) != 4 {
				t.Errorf("refused result left %d observations, want 4", len(o))
			}
			// Seeing stored observations again does not count twice.
			if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0.Add(time.Second), Status: fleet.Trusted, Observations: obs(0, 5)}); err != nil {
				t.Errorf("SaveResult at the bound = %v", err)
			}
			// One batch larger than the bound.
			a = mustAgent(t, s, "a")
			if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0, Status: fleet.Trusted, NewBoot: true, Observations: obs(0, 6)}); !errors.Is(err, fleet.ErrLimit) {
				t.Errorf("SaveResult(6 in one batch) = %v, want ErrLimit", err)
			}
		})
	}
}

func TestClearHistory(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		if err := s.SetEndpoints(bg, []string{"https://hooks.example/a"}); err != nil {
			t.Fatal(err)
		}
		mustAdd(t, s, "a")
		if err := s.Clear(bg, "a", "nothing to clear", t0); err != nil {
			t.Fatalf("Clear(pending) = %v", err)
		}
		a := mustAgent(t, s, "a")
		if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0.Add(time.Second), Status: fleet.Compromised,
			Reason: "log rewritten", NextDue: t0.Add(time.Hour), Failures: 2,
			Boot:         &fleet.Boot{Known: true, ResetCount: 3, State: []byte(`{}`)},
			Observations: []fleet.Observation{{Path: "/x", Kind: "file", SHA256: "aa", Latest: true}}}); err != nil {
			t.Fatal(err)
		}
		// A result in flight when the operator clears is refused.
		inflight, err := s.Claim(bg, "r1", t0.Add(2*time.Hour), time.Minute, 10)
		if err != nil || len(inflight) != 0 {
			t.Fatalf("Claim of a compromised agent = %v, %v, want none", inflight, err)
		}
		c := mustAgent(t, s, "a")
		now := t0.Add(time.Minute)
		if err := s.Clear(bg, "a", "reimaged by ops", now); err != nil {
			t.Fatalf("Clear = %v", err)
		}
		got := mustAgent(t, s, "a")
		if got.Status != fleet.Pending || got.Reason != "reimaged by ops" || !got.Since.Equal(now) || !got.NextDue.Equal(now) ||
			got.Boot.Known || got.Boot.State != nil || got.Failures != 0 || got.Version <= c.Version || got.Findings != nil {
			t.Errorf("after Clear: %+v", got)
		}
		if o, _ := s.Observations(bg, a.ID); len(o) != 0 {
			t.Errorf("Clear kept %d observations", len(o))
		}
		if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: c.Version, At: now, Status: fleet.Trusted}); !errors.Is(err, fleet.ErrConflict) {
			t.Errorf("SaveResult over a cleared agent = %v, want ErrConflict", err)
		}
		h, err := s.History(bg, "a", 0)
		if err != nil {
			t.Fatal(err)
		}
		var evs []string
		for _, x := range h {
			evs = append(evs, fmt.Sprintf("%s:%s>%s:%s", x.Event, x.From, x.To, x.Reason))
		}
		wantEvs := []string{"clear:compromised>pending:reimaged by ops", "state:pending>compromised:log rewritten", "clear:pending>pending:nothing to clear"}
		if diff := cmp.Diff(wantEvs, evs); diff != "" {
			t.Errorf("History, newest first (-want +got):\n%s", diff)
		}
		if h1, _ := s.History(bg, "a", 1); len(h1) != 1 || h1[0].Event != "clear" || h1[0].ID != h[0].ID {
			t.Errorf("History(limit 1) = %+v", h1)
		}
		ds, _ := s.Deliveries(bg, "", 0)
		if len(ds) != 2 {
			t.Fatalf("Deliveries = %d, want 2 (compromised, cleared)", len(ds))
		}
		var p fleet.Payload
		if err := json.Unmarshal(ds[0].Payload, &p); err != nil || p.Data.OldState != fleet.Compromised || p.Data.NewState != fleet.Pending || string(p.Data.Findings) != "null" {
			t.Errorf("clear payload = %s (%v)", ds[0].Payload, err)
		}
		if err := s.Clear(bg, "nope", "", now); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Clear(nope) = %v, want ErrNotFound", err)
		}
		if got, err := s.Claim(bg, "r1", now, time.Minute, 10); err != nil || len(got) != 1 {
			t.Errorf("Claim after Clear = %v, %v, want the agent", got, err)
		}
	})
}

func TestReferences(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		ref := fleet.Reference{Name: "base", Body: []byte("files: {}\n"), Fingerprint: "fp1", Updated: t0}
		if err := s.PutReference(bg, ref, true); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("PutReference(replace absent) = %v, want ErrNotFound", err)
		}
		if err := s.PutReference(bg, ref, false); err != nil {
			t.Fatal(err)
		}
		if err := s.PutReference(bg, ref, false); !errors.Is(err, fleet.ErrExists) {
			t.Errorf("PutReference(add twice) = %v, want ErrExists", err)
		}
		if err := s.PutReference(bg, fleet.Reference{Name: "other", Body: []byte("x")}, false); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"a", "b"} {
			sp := spec(n)
			sp.Reference = "base"
			if _, err := s.AddAgent(bg, sp, t0); err != nil {
				t.Fatal(err)
			}
		}
		mustAdd(t, s, "c")
		got, err := s.Reference(bg, "base")
		if err != nil {
			t.Fatal(err)
		}
		want := ref
		want.Agents = 2
		if diff := cmp.Diff(&want, got); diff != "" {
			t.Errorf("Reference (-want +got):\n%s", diff)
		}
		repl := fleet.Reference{Name: "base", Body: []byte("files: {a: b}\n"), Fingerprint: "fp2", Updated: t0.Add(time.Hour)}
		if err := s.PutReference(bg, repl, true); err != nil {
			t.Fatal(err)
		}
		all, err := s.ListReferences(bg)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 || all[0].Name != "base" || all[0].Fingerprint != "fp2" || string(all[0].Body) != string(repl.Body) ||
			all[0].Agents != 2 || all[1].Name != "other" || all[1].Agents != 0 || len(all[1].Fingerprint) != 64 || all[1].Updated.IsZero() {
			t.Errorf("ListReferences = %+v %+v", all[0], all[1])
		}
		us, err := s.AgentsUsing(bg, "base")
		if err != nil || len(us) != 2 || us[0].Name != "a" || us[1].Name != "b" {
			t.Errorf("AgentsUsing = %v, %v", us, err)
		}
		if us, _ := s.AgentsUsing(bg, "other"); len(us) != 0 {
			t.Errorf("AgentsUsing(other) = %v", us)
		}
		if _, err := s.Reference(bg, "nope"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Reference(nope) = %v", err)
		}
		for _, bad := range []fleet.Reference{{Name: "a b", Body: []byte("x")}, {Name: "x"}} {
			if err := s.PutReference(bg, bad, false); !errors.Is(err, fleet.ErrInvalid) {
				t.Errorf("PutReference(%q, %d bytes) = %v, want ErrInvalid", bad.Name, len(bad.Body), err)
			}
		}
	})
}

func TestOutbox(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		const e1, e2, e3 = "https://one.example/h", "https://two.example/h", "https://three.example/h"
		if err := s.SetEndpoints(bg, []string{e1, e2}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetEndpoints(bg, []string{"not a url"}); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("SetEndpoints(bad) = %v, want ErrInvalid", err)
		}
		a := mustAdd(t, s, "a")
		a = save(t, s, a, fleet.Trusted)   // 2 deliveries at t0+1s
		a = save(t, s, a, fleet.Untrusted) // 2 at t0+1m+1s
		if err := s.DisableEndpoint(bg, e2); err != nil {
			t.Fatal(err)
		}
		if err := s.DisableEndpoint(bg, e3); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("DisableEndpoint(unknown) = %v, want ErrNotFound", err)
		}
		a = save(t, s, a, fleet.Invalid) // 1 (e1 only) at t0+2m+1s
		d2, _ := s.Deliveries(bg, e2, 0)
		if len(d2) != 2 || d2[0].State != "disabled" || d2[1].State != "disabled" {
			t.Errorf("deliveries of the disabled endpoint = %+v", d2)
		}
		due, err := s.DueDeliveries(bg, t0.Add(90*time.Second), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(due) != 2 || !due[0].Created.Before(due[1].Created) || due[0].Endpoint != e1 {
			t.Fatalf("DueDeliveries = %+v, want e1's first two, oldest first", due)
		}
		if d, _ := s.DueDeliveries(bg, t0.Add(time.Hour), 1); len(d) != 1 || d[0].ID != due[0].ID {
			t.Errorf("DueDeliveries(limit 1) = %+v", d)
		}
		// A failed attempt, retried later; a delivered one.
		f := *due[0]
		f.Attempts, f.Next, f.LastStatus, f.LastError = 1, t0.Add(time.Hour), 503, "service unavailable"
		if err := s.UpdateDelivery(bg, &f); err != nil {
			t.Fatal(err)
		}
		ok := *due[1]
		ok.Attempts, ok.State, ok.LastStatus = 1, "delivered", 204
		if err := s.UpdateDelivery(bg, &ok); err != nil {
			t.Fatal(err)
		}
		due, _ = s.DueDeliveries(bg, t0.Add(50*time.Minute), 10)
		if len(due) != 1 || due[0].Endpoint != e1 || due[0].Created.Before(ok.Created) {
			t.Errorf("DueDeliveries after updates = %+v, want only the third", due)
		}
		all, _ := s.Deliveries(bg, e1, 0)
		if len(all) != 3 || all[2].ID != f.ID || all[2].Attempts != 1 || all[2].LastStatus != 503 || all[2].LastError != "service unavailable" ||
			!all[2].Next.Equal(f.Next) || all[1].State != "delivered" {
			t.Errorf("Deliveries(e1), newest first = %+v", all)
		}
		if got, _ := s.Deliveries(bg, "", 2); len(got) != 2 {
			t.Errorf("Deliveries(all, 2) = %d", len(got))
		}
		bad := f
		bad.State = "lost"
		if err := s.UpdateDelivery(bg, &bad); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("UpdateDelivery(bad state) = %v", err)
		}
		bad = f
		bad.ID = "msg_none"
		if err := s.UpdateDelivery(bg, &bad); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("UpdateDelivery(unknown) = %v", err)
		}
		// An endpoint no longer declared gets nothing new and its queue waits;
		// declared again, the queue is due again. An endpoint disabled by a
		// 410 and declared again is enabled: its old deliveries stay
		// disabled, new ones are queued.
		if err := s.SetEndpoints(bg, []string{e2, e3}); err != nil {
			t.Fatal(err)
		}
		if d, _ := s.DueDeliveries(bg, t0.Add(2*time.Hour), 10); len(d) != 0 {
			t.Errorf("DueDeliveries with e1 undeclared, e2 disabled = %+v", d)
		}
		save(t, s, a, fleet.Trusted)
		if d, _ := s.Deliveries(bg, e3, 0); len(d) != 1 {
			t.Errorf("deliveries for e3 = %d, want 1", len(d))
		}
		if d, _ := s.Deliveries(bg, e2, 0); len(d) != 3 || d[0].State != "pending" || d[1].State != "disabled" {
			t.Errorf("deliveries for e2 declared again after a 410 = %+v, want a new pending one and the two disabled", d)
		}
		if err := s.SetEndpoints(bg, []string{e1}); err != nil {
			t.Fatal(err)
		}
		if d, _ := s.DueDeliveries(bg, t0.Add(2*time.Hour), 10); len(d) != 2 {
			t.Errorf("DueDeliveries with e1 declared again = %d, want 2", len(d))
		}
	})
}

// TestConcurrentWriters: many goroutines write at once (results, claims,
// new agents, deliveries); none sees "database is locked" or any error.
func TestConcurrentWriters(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		if err := s.SetEndpoints(bg, []string{"https://hooks.example/a"}); err != nil {
			t.Fatal(err)
		}
		const workers, rounds = 16, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers*rounds*3)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				// Due after the claims' now: they take nothing, but write.
				a, err := s.AddAgent(bg, spec(fmt.Sprintf("w%d", w)), t0.Add(time.Hour))
				if err != nil {
					errs <- err
					return
				}
				v := a.Version
				for i := 0; i < rounds; i++ {
					st := fleet.Trusted
					if i%2 == 1 {
						st = fleet.Untrusted
					}
					if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: v, At: t0.Add(time.Duration(i) * time.Second),
						Status: st, NextDue: t0.Add(time.Hour), Failures: i,
						Observations: []fleet.Observation{{Path: fmt.Sprintf("/f%d", i), Kind: "file", SHA256: "aa", Latest: true}}}); err != nil {
						errs <- err
						return
					}
					v++
					if _, err := s.Claim(bg, fmt.Sprintf("r%d", w), t0, time.Second, 5); err != nil {
						errs <- err
					}
					if _, err := s.ListAgents(bg, fleet.Filter{}); err != nil {
						errs <- err
					}
				}
			}(w)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		ds, _ := s.Deliveries(bg, "", 0)
		if len(ds) != workers*rounds {
			t.Errorf("deliveries = %d, want %d", len(ds), workers*rounds)
		}
	})
}

func TestReopen(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			dsn := b.dsn(t)
			s, err := Open(bg, dsn)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetEndpoints(bg, []string{"https://hooks.example/a"}); err != nil {
				t.Fatal(err)
			}
			if err := s.PutReference(bg, fleet.Reference{Name: "r", Body: []byte("x"), Updated: t0}, false); err != nil {
				t.Fatal(err)
			}
			sp := spec("a")
			sp.Reference = "r"
			a, err := s.AddAgent(bg, sp, t0)
			if err != nil {
				t.Fatal(err)
			}
			a = save(t, s, a, fleet.Untrusted)
			obs1, _ := s.Observations(bg, a.ID)
			h1, _ := s.History(bg, "a", 0)
			d1, _ := s.Deliveries(bg, "", 0)
			r1, _ := s.ListReferences(bg)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				s2 := openStore(t, dsn)
				a2 := mustAgent(t, s2, "a")
				if diff := cmp.Diff(a, a2); diff != "" {
					t.Errorf("agent after reopening (-before +after):\n%s", diff)
				}
				obs2, _ := s2.Observations(bg, a.ID)
				h2, _ := s2.History(bg, "a", 0)
				d2, _ := s2.Deliveries(bg, "", 0)
				r2, _ := s2.ListReferences(bg)
				if diff := cmp.Diff([]any{obs1, h1, d1, r1}, []any{obs2, h2, d2, r2}); diff != "" {
					t.Errorf("after reopening (-before +after):\n%s", diff)
				}
				var v int
				if err := s2.r.QueryRow(`SELECT MAX(version) FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion() {
					t.Errorf("schema version = %d, %v, want %d", v, err, SchemaVersion())
				}
				s2.Close()
			}
		})
	}
}

// TestNewerSchema: a database written by a newer rimon is refused, not
// used.
func TestNewerSchema(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			dsn := b.dsn(t)
			s := openStore(t, dsn)
			if _, err := s.w.Exec(`INSERT INTO schema_version (version, applied) VALUES ($1, 0)`, SchemaVersion()+1); err != nil {
				t.Fatal(err)
			}
			s.Close()
			_, err := Open(bg, dsn)
			if err == nil || !strings.Contains(err.Error(), "newer than this rimon") {
				t.Errorf("Open(newer schema) = %v, want a refusal", err)
			}
		})
	}
}

// TestObservationBatches: a result with more observations than one
// statement writes, the same observation twice, and two latest records of
// one path (the last wins).
func TestObservationBatches(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		a := mustAdd(t, s, "a")
		var obs []fleet.Observation
		for i := 0; i < 40; i++ {
			obs = append(obs, fleet.Observation{Path: fmt.Sprintf("/f%02d", i%20), Kind: "file", SHA256: fmt.Sprintf("%02d", i), Record: uint64(i), Latest: true})
		}
		obs = append(obs, obs[39]) // again: one row
		obs[40].Record = 99
		if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0, Status: fleet.Trusted, Observations: obs}); err != nil {
			t.Fatal(err)
		}
		got, err := s.Observations(bg, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 40 {
			t.Fatalf("%d observations, want 40", len(got))
		}
		for _, o := range got {
			var i int
			fmt.Sscanf(o.SHA256, "%d", &i)
			wantLatest := i >= 20
			if o.Latest != wantLatest {
				t.Errorf("%s %s: latest %v, want %v", o.Path, o.SHA256, o.Latest, wantLatest)
			}
			if i == 39 && o.Record != 99 {
				t.Errorf("the repeated observation has record %d, want 99 (the last)", o.Record)
			}
		}
	})
}
