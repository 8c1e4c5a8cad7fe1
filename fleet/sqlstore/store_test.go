package sqlstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rimon-dev/rimon/fleet"
)

var bg = context.Background()

func TestAddAgent(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		a := mustAdd(t, s, "web-1")
		if a.ID == 0 || a.Status != fleet.Pending || !a.Since.Equal(t0) || !a.NextDue.Equal(t0) || !a.LastPoll.IsZero() {
			t.Errorf("AddAgent = %+v, want pending since and due at %v", a, t0)
		}
		if diff := cmp.Diff([]int{23}, a.PCRs); diff != "" {
			t.Errorf("PCRs default (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"sha256"}, a.Banks); diff != "" {
			t.Errorf("Banks default (-want +got):\n%s", diff)
		}
		if a.Interval != fleet.DefaultInterval {
			t.Errorf("Interval = %v, want %v", a.Interval, fleet.DefaultInterval)
		}
		got := mustAgent(t, s, "web-1")
		if diff := cmp.Diff(a, got); diff != "" {
			t.Errorf("Agent after AddAgent (-added +read):\n%s", diff)
		}
		if _, err := s.AddAgent(bg, spec("web-1"), t0); !errors.Is(err, fleet.ErrExists) {
			t.Errorf("AddAgent twice = %v, want ErrExists", err)
		}
		if _, err := s.Agent(bg, "nope"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Agent(nope) = %v, want ErrNotFound", err)
		}
		sp := spec("web-2")
		sp.Reference = "missing"
		if _, err := s.AddAgent(bg, sp, t0); !errors.Is(err, fleet.ErrNotFound) || !strings.Contains(err.Error(), "missing") {
			t.Errorf("AddAgent with an unknown reference = %v, want ErrNotFound naming it", err)
		}
		full := fleet.Spec{Name: "Full_1.x", URL: "https://a.example:8443/", AgentCA: "ca", Azure: true, VMID: "vm",
			PCRs: []int{0, 23}, Banks: []string{"sha1", "sha256"}, Interval: time.Second, Push: true,
			PushTokenHash: strings.Repeat("ab", 32)}
		fa, err := s.AddAgent(bg, full, t0)
		if err != nil {
			t.Fatalf("AddAgent(full) = %v", err)
		}
		if diff := cmp.Diff(full, fa.Spec); diff != "" {
			t.Errorf("stored spec (-want +got):\n%s", diff)
		}
	})
}

func TestSpecValidation(t *testing.T) {
	s := openStore(t, sqliteBackend().dsn(t))
	tests := []struct {
		name string
		edit func(*fleet.Spec)
		want string
	}{
		{"empty_name", func(s *fleet.Spec) { s.Name = "" }, "agent name"},
		{"slash_in_name", func(s *fleet.Spec) { s.Name = "a/b" }, "agent name"},
		{"space_in_name", func(s *fleet.Spec) { s.Name = "a b" }, "agent name"},
		{"name_too_long", func(s *fleet.Spec) { s.Name = strings.Repeat("a", 129) }, "agent name"},
		{"no_url", func(s *fleet.Spec) { s.URL = "" }, "url"},
		{"ftp_url", func(s *fleet.Spec) { s.URL = "ftp://h/" }, "url"},
		{"url_without_host", func(s *fleet.Spec) { s.URL = "http:///x" }, "url"},
		{"interval_too_short", func(s *fleet.Spec) { s.Interval = 999 * time.Millisecond }, "interval"},
		{"negative_interval", func(s *fleet.Spec) { s.Interval = -time.Second }, "interval"},
		{"pcr_24", func(s *fleet.Spec) { s.PCRs = []int{24} }, "pcrs"},
		{"pcr_twice", func(s *fleet.Spec) { s.PCRs = []int{23, 23} }, "pcrs"},
		{"unknown_bank", func(s *fleet.Spec) { s.Banks = []string{"md5"} }, "banks"},
		{"ak_and_azure", func(s *fleet.Spec) { s.Azure = true }, "azure"},
		{"vmid_without_azure", func(s *fleet.Spec) { s.VMID = "x" }, "vm_id"},
		{"push_without_token", func(s *fleet.Spec) { s.Push = true }, "push"},
		{"push_token_not_hex", func(s *fleet.Spec) { s.Push = true; s.PushTokenHash = "zz" }, "push token"},
		{"bad_reference_name", func(s *fleet.Spec) { s.Reference = "../x" }, "reference name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := spec("ok")
			tc.edit(&sp)
			_, err := s.AddAgent(bg, sp, t0)
			if !errors.Is(err, fleet.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("AddAgent = %v, want ErrInvalid naming %q", err, tc.want)
			}
		})
	}
	if n, _ := s.ListAgents(bg, fleet.Filter{}); len(n) != 0 {
		t.Errorf("refused specs stored %d agents", len(n))
	}
	// Push without URL is fine.
	sp := fleet.Spec{Name: "pusher", AK: testAK, Push: true, PushTokenHash: strings.Repeat("0", 64)}
	if _, err := s.AddAgent(bg, sp, t0); err != nil {
		t.Errorf("AddAgent(push, no url) = %v", err)
	}
}

func TestListCountUpdateRemove(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		for _, n := range []string{"db-1", "web_1", "web-2", "WEBX"} {
			mustAdd(t, s, n)
		}
		w := mustAgent(t, s, "web-2")
		save(t, s, w, fleet.Trusted)
		names := func(f fleet.Filter) string {
			as, err := s.ListAgents(bg, f)
			if err != nil {
				t.Fatalf("ListAgents(%+v) = %v", f, err)
			}
			var n []string
			for _, a := range as {
				n = append(n, a.Name)
			}
			return strings.Join(n, ",")
		}
		for f, want := range map[fleet.Filter]string{
			{}:                                 "WEBX,db-1,web-2,web_1",
			{Name: "web"}:                      "WEBX,web-2,web_1",
			{Name: "b_"}:                       "web_1",
			{Name: "%"}:                        "",
			{Status: fleet.Trusted}:            "web-2",
			{Status: fleet.Pending}:            "WEBX,db-1,web_1",
			{Status: fleet.Pending, Name: "w"}: "WEBX,web_1",
		} {
			if got := names(f); got != want {
				t.Errorf("ListAgents(%+v) = %q, want %q", f, got, want)
			}
		}
		if _, err := s.ListAgents(bg, fleet.Filter{Status: "bad"}); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("ListAgents(bad state) = %v, want ErrInvalid", err)
		}
		counts, err := s.CountByStatus(bg)
		if err != nil {
			t.Fatal(err)
		}
		want := map[fleet.Status]int{fleet.Pending: 3, fleet.Trusted: 1, fleet.Untrusted: 0, fleet.Invalid: 0, fleet.Compromised: 0, fleet.Unreachable: 0}
		if diff := cmp.Diff(want, counts); diff != "" {
			t.Errorf("CountByStatus (-want +got):\n%s", diff)
		}

		// UpdateSpec: the state stays, the version moves, a push token is kept.
		before := mustAgent(t, s, "web-2")
		sp := before.Spec
		sp.Interval = 5 * time.Second
		sp.URL = ""
		sp.Push = true
		sp.PushTokenHash = strings.Repeat("cd", 32)
		if err := s.UpdateSpec(bg, "web-2", sp); err != nil {
			t.Fatalf("UpdateSpec = %v", err)
		}
		sp.PushTokenHash = ""
		if err := s.UpdateSpec(bg, "web-2", sp); err != nil {
			t.Fatalf("UpdateSpec without token = %v", err)
		}
		after := mustAgent(t, s, "web-2")
		if after.Status != fleet.Trusted || after.Interval != 5*time.Second || after.PushTokenHash != strings.Repeat("cd", 32) || after.Version != before.Version+2 {
			t.Errorf("after UpdateSpec: %+v", after)
		}
		sp.Name = "other"
		if err := s.UpdateSpec(bg, "web-2", sp); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("UpdateSpec(rename) = %v, want ErrInvalid", err)
		}
		if err := s.UpdateSpec(bg, "nope", spec("nope")); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("UpdateSpec(nope) = %v, want ErrNotFound", err)
		}

		if err := s.RemoveAgent(bg, "web-2"); err != nil {
			t.Fatalf("RemoveAgent = %v", err)
		}
		if err := s.RemoveAgent(bg, "web-2"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("RemoveAgent twice = %v, want ErrNotFound", err)
		}
		if _, err := s.History(bg, "web-2", 0); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("History(removed) = %v, want ErrNotFound", err)
		}
		if obs, err := s.Observations(bg, w.ID); err != nil || len(obs) != 0 {
			t.Errorf("Observations(removed) = %v, %v, want none", obs, err)
		}
		// A new agent never takes a removed one's ID.
		n := mustAdd(t, s, "web-2")
		if n.ID <= w.ID {
			t.Errorf("new agent ID %d reuses a removed one's (%d)", n.ID, w.ID)
		}
	})
}

// save stores a result moving a to st, and returns the agent as stored.
func save(t testing.TB, s *Store, a *fleet.Agent, st fleet.Status) *fleet.Agent {
	t.Helper()
	at := a.NextDue.Add(time.Second)
	if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: at, Status: st,
		Reason: "because " + string(st), NextDue: at.Add(time.Minute),
		Observations: []fleet.Observation{{Path: "/bin/" + string(st), Kind: "file", SHA256: "aa", Record: 1, Latest: true}}}); err != nil {
		t.Fatalf("SaveResult(%s → %s) = %v", a.Name, st, err)
	}
	return mustAgent(t, s, a.Name)
}

func TestClaimRelease(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		a := mustAdd(t, s, "a")
		if _, err := s.AddAgent(bg, spec("b"), t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		c := mustAdd(t, s, "c")
		if err := s.SaveResult(bg, fleet.Result{AgentID: c.ID, Version: c.Version, At: t0, Status: fleet.Compromised, NextDue: t0}); err != nil {
			t.Fatal(err)
		}
		claim := func(owner string, now time.Time, limit int) string {
			t.Helper()
			got, err := s.Claim(bg, owner, now, 10*time.Second, limit)
			if err != nil {
				t.Fatalf("Claim = %v", err)
			}
			var n []string
			for _, g := range got {
				if g.LeaseOwner != owner || !g.LeaseUntil.Equal(now.Add(10*time.Second)) {
					t.Errorf("claimed %s: lease %q until %v", g.Name, g.LeaseOwner, g.LeaseUntil)
				}
				if st := mustAgent(t, s, g.Name); st.LeaseOwner != owner || st.Version != g.Version {
					t.Errorf("claimed %s: stored lease %q version %d, returned version %d", g.Name, st.LeaseOwner, st.Version, g.Version)
				}
				n = append(n, g.Name)
			}
			return strings.Join(n, ",")
		}
		if got := claim("r1", t0, 10); got != "a" {
			t.Errorf("Claim at t0 = %q, want a (b not due, c compromised)", got)
		}
		if got := mustAgent(t, s, "a"); got.Version != a.Version+1 {
			t.Errorf("claim moved the version %d → %d, want +1", a.Version, got.Version)
		}
		if got := claim("r2", t0.Add(5*time.Second), 10); got != "" {
			t.Errorf("Claim under a live lease = %q, want none", got)
		}
		if got := claim("r2", t0.Add(time.Minute), 1); got != "a" {
			t.Errorf("Claim(limit 1) after the lease ran out = %q, want a (due first)", got)
		}
		if got := claim("r2", t0.Add(time.Minute), 10); got != "b" {
			t.Errorf("Claim = %q, want b", got)
		}
		if err := s.Release(bg, a.ID, "r1"); !errors.Is(err, fleet.ErrConflict) {
			t.Errorf("Release by a former owner = %v, want ErrConflict", err)
		}
		if err := s.Release(bg, a.ID, "r2"); err != nil {
			t.Errorf("Release = %v", err)
		}
		if err := s.Release(bg, 99999, "r2"); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Release(unknown) = %v, want ErrNotFound", err)
		}
		if got := claim("r3", t0.Add(time.Minute), 10); got != "a" {
			t.Errorf("Claim after Release = %q, want a", got)
		}
		cur := mustAgent(t, s, "a")
		// r2 lost the lease: even at the current version its result is refused.
		err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: cur.Version, Owner: "r2", At: t0.Add(time.Minute), Status: fleet.Trusted})
		if !errors.Is(err, fleet.ErrConflict) {
			t.Errorf("SaveResult by a lost lease = %v, want ErrConflict", err)
		}
		if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: cur.Version, Owner: "r3", At: t0.Add(time.Minute),
			Status: fleet.Trusted, NextDue: t0.Add(2 * time.Minute)}); err != nil {
			t.Fatalf("SaveResult by the lease's owner = %v", err)
		}
		got := mustAgent(t, s, "a")
		if got.LeaseOwner != "" || !got.LeaseUntil.IsZero() || got.Status != fleet.Trusted || !got.NextDue.Equal(t0.Add(2*time.Minute)) {
			t.Errorf("after SaveResult: lease %q until %v, state %s, due %v", got.LeaseOwner, got.LeaseUntil, got.Status, got.NextDue)
		}
		if _, err := s.Claim(bg, "", t0, time.Second, 1); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("Claim(no owner) = %v, want ErrInvalid", err)
		}
	})
}
