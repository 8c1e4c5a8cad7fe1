package engine

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// TestRoundsAgreeWithOneShot runs sequences of evidence from a real agent
// (simulator, real log, real HTTP) through the engine's incremental
// rounds and through a one-shot verifier.Verify of the whole log, and
// checks both give the same verdict at every step; then replaces the
// reference and checks the re-evaluation from stored observations, and
// the next round (the whole log under continuity), against a one-shot
// verify with the new reference.
func TestRoundsAgreeWithOneShot(t *testing.T) {
	const ref1 = "files:\n  /bin/*: [%v1, %v2]\nrequired: [/bin/a]\n"
	const ref2 = "files:\n  /bin/*: [%v1, %bad]\n  /opt/*: [%v1]\nrequired: [/bin/a]\nunmeasured: warn\n"
	type step struct {
		name string
		do   func(m *machine)
	}
	file := func(p, c string) func(m *machine) { return func(m *machine) { m.file(p, c) } }
	for _, seq := range []struct {
		name  string
		steps []step
	}{
		{"files changed", []step{
			{"first files", func(m *machine) { m.file("/bin/a", "v1"); m.file("/bin/b", "v1") }},
			{"an allowed change", file("/bin/b", "v2")},
			{"an unlisted file", file("/opt/x", "v1")},
			{"more records", func(m *machine) { m.file("/bin/b", "v1"); m.file("/bin/a", "v2") }},
		}},
		{"unmeasured then measured", []step{
			{"first files", file("/bin/a", "v1")},
			{"unmeasured", func(m *machine) { m.unmeasured("/bin/b") }},
			{"measured", file("/bin/b", "v1")},
			{"unmeasured again", func(m *machine) { m.unmeasured("/bin/a") }},
		}},
		{"bad digest later fixed", []step{
			{"first files", file("/bin/a", "v1")},
			{"bad digest", file("/bin/a", "bad")},
			{"fixed", file("/bin/a", "v1")},
			{"another", file("/bin/c", "v2")},
		}},
		{"trailing records", []step{
			{"first files", file("/bin/a", "v1")},
			{"one record not extended", func(m *machine) { m.pcrs.skip.Store(true); m.file("/bin/b", "v1") }},
			{"two records not extended", file("/bin/b", "v2")},
		}},
		{"changed and changed back", []step{
			{"first files", file("/bin/a", "v1")},
			{"changed", file("/bin/a", "v2")},
			{"changed back", file("/bin/a", "v1")},
		}},
		{"required never measured", []step{
			{"other files", file("/bin/b", "v1")},
			{"the required file", file("/bin/a", "v2")},
		}},
	} {
		t.Run(seq.name, func(t *testing.T) {
			m := newMachine(t, testtpm.Open(t))
			f := newFixture(t, Options{})
			f.putRef("r", expand(ref1), false)
			f.add(fleet.Spec{Name: "m", URL: m.srv.URL, AK: m.akPEM, Reference: "r"})
			agree := func(when string, got *fleet.Agent, yaml string) {
				t.Helper()
				one := m.oneShot(mustRef(t, expand(yaml)))
				want := fleet.Untrusted
				if one.Verdict.Trusted {
					want = fleet.Trusted
				}
				if got.Status != want {
					t.Fatalf("%s: engine %s (%s), one-shot %s (%d failures: %v)", when, got.Status, got.Reason, want, one.Verdict.FailureTotal, one.Verdict.Failures)
				}
			}
			for _, st := range seq.steps {
				st.do(m)
				agree(st.name, f.poll("m"), ref1)
			}
			f.putRef("r", expand(ref2), true)
			if err := f.e.ReferenceReplaced(context.Background(), "r"); err != nil {
				t.Fatal(err)
			}
			a, _ := f.store.Agent(context.Background(), "m")
			if !a.Boot.Refresh {
				t.Error("the reference was replaced, and the next round is not asked to replay the whole log")
			}
			agree("re-evaluated with the new reference", a, ref2)
			a = f.poll("m")
			agree("the next round with the new reference", a, ref2)
			if a.Boot.Refresh {
				t.Error("Refresh still set after a round replayed the whole log")
			}
			m.file("/bin/a", "v2")
			agree("an incremental round after it", f.poll("m"), ref2)
		})
	}
}

// expand writes the digests of the contents %v1, %v2 and %bad.
func expand(s string) string {
	for _, c := range []string{"v1", "v2", "bad"} {
		s = strings.ReplaceAll(s, "%"+c, digest(c))
	}
	return s
}

// TestReferenceReplacedManyAgents: every agent that uses a replaced
// reference is re-evaluated (with a "reference" event), an agent that
// uses another is not, and a compromised one keeps its state.
func TestReferenceReplacedManyAgents(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	m.file("/bin/a", "v1")
	f := newFixture(t, Options{})
	f.putRef("r", expand("files:\n  /bin/a: [%v1]\n"), false)
	f.putRef("other", expand("files:\n  /bin/a: [%v1]\n"), false)
	names := []string{"m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "x"}
	for _, n := range names {
		ref := "r"
		if n == "x" {
			ref = "other"
		}
		f.add(fleet.Spec{Name: n, URL: m.srv.URL, AK: m.akPEM, Reference: ref})
		if a := f.poll(n); a.Status != fleet.Trusted {
			t.Fatalf("%s: %s (%s)", n, a.Status, a.Reason)
		}
	}
	// m9 is compromised (its stored clock far ahead of the TPM's).
	a, _ := f.store.Agent(context.Background(), "m9")
	boot := a.Boot
	boot.Clock += 1 << 40
	if err := f.store.SaveResult(context.Background(), fleet.Result{AgentID: a.ID, Version: a.Version, At: f.e.o.Now(), Status: a.Status, Boot: &boot, NextDue: a.NextDue}); err != nil {
		t.Fatal(err)
	}
	if a := f.poll("m9"); a.Status != fleet.Compromised {
		t.Fatalf("m9: %s", a.Status)
	}
	f.putRef("r", expand("files:\n  /bin/a: [%v2]\n"), true)
	if err := f.e.ReferenceReplaced(context.Background(), "r"); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		a, _ := f.store.Agent(context.Background(), n)
		want := fleet.Untrusted
		switch n {
		case "x":
			want = fleet.Trusted
		case "m9":
			want = fleet.Compromised
		}
		h := f.history(n)
		if a.Status != want || (want == fleet.Untrusted) != slices.Contains(h, EventReference) {
			t.Errorf("%s: %s (%s), history %v; want %s", n, a.Status, a.Reason, h, want)
		}
	}
}
