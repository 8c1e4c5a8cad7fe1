package engine

import (
	"context"
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
