package verifier_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/policy"
	"github.com/rimon-dev/rimon/tpm"
)

var banks256 = []crypto.Hash{crypto.SHA256}

func hexSum(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

// machine is an attested machine: a TPM (opened for each step, so that
// tpm2-tools can reach a swtpm in between) and its log.
type machine struct {
	t    *testing.T
	open func() (*tpm.TPM, func())
	log  string
	ak   crypto.PublicKey
	n    int // nonces drawn
}

func newMachine(t *testing.T, open func() (*tpm.TPM, func()), log string) *machine {
	m := &machine{t: t, open: open, log: log}
	tp, done := open()
	defer done()
	ak, _, err := tp.ProvisionAK(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m.ak = ak.Key
	return m
}

func (m *machine) append(evs ...eventlog.Event) {
	m.t.Helper()
	ctx := context.Background()
	tp, done := m.open()
	defer done()
	w, _, err := logfile.OpenWriter(ctx, m.log, tp, logfile.WriterOptions{Banks: banks256, PCR: 23, BootID: "b"})
	if err != nil {
		m.t.Fatal(err)
	}
	defer w.Close()
	for _, e := range evs {
		if _, err := w.Append(ctx, 23, e); err != nil {
			m.t.Fatal(err)
		}
	}
}

// evidence collects evidence with a fresh nonce; since > 0 leaves out the
// first records, as the agent's endpoint does for since=N.
func (m *machine) evidence(since uint64) (*attest.Evidence, []byte) {
	m.t.Helper()
	m.n++
	nonce := []byte(fmt.Sprintf("state-test-nonce-%04d", m.n))
	tp, done := m.open()
	defer done()
	ev, err := agent.Collect(context.Background(), tp, m.log, nonce, []int{23}, banks256)
	if err != nil {
		m.t.Fatal(err)
	}
	if since > 0 {
		if ev.Log, err = attest.SkipRecords(ev.Log, since); err != nil {
			m.t.Fatal(err)
		}
		ev.LogStart = since
	}
	return ev, nonce
}

func verify(t *testing.T, ev *attest.Evidence, o verifier.Options) (*verifier.Result, error) {
	t.Helper()
	o.SaveState = true
	return verifier.Verify(context.Background(), verifier.Evidence{Header: ev, Log: bytes.NewReader(ev.Log)}, o)
}

// roundTrip saves and restores a state, as a verifier storing it does.
func roundTrip(t *testing.T, s *verifier.State) *verifier.State {
	t.Helper()
	b, err := s.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := verifier.ParseState(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return back
}

func verdictJSON(t *testing.T, r *verifier.Result) string {
	t.Helper()
	v := *r.Verdict
	v.Checks = nil // the incremental result says "continuity" where the full one does not
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stateJSON(t *testing.T, s *verifier.State) string {
	b, err := s.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func file(path, content, reason string) eventlog.Event {
	return eventlog.Event{Kind: "file", Path: path, SHA256: hexSum(content), Size: uint64(len(content)), Reason: reason}
}

func unmeasured(path, cause string) eventlog.Event {
	return eventlog.Event{Kind: eventlog.KindUnmeasured, Path: path, Reason: "changed",
		Extra: []eventlog.Field{{Key: "cause", Str: cause}, {Key: "error", Str: "kept changing"}}}
}

// TestIncrementalEqualsFull: over rounds of real quotes from the
// simulator, with records appended between rounds (approved, not
// approved, unmeasured and measured again, a required path deleted) and a
// round with no new record, verifying only the new records from the saved
// state gives the verdict, and the state, that replaying the whole log
// gives; with and without a reference.
func TestIncrementalEqualsFull(t *testing.T) {
	refYAML := "version: 1\nunlisted: fail\nfiles:\n" +
		"  /usr/bin/app: [" + hexSum("app v1") + ", " + hexSum("app v2") + "]\n" +
		"  /etc/app.conf: [" + hexSum("conf") + "]\n" +
		"  /var/lib/state: [" + hexSum("state") + "]\n" +
		"required:\n  - /usr/bin/app\n  - /etc/app.conf\n"
	ref, err := policy.ParseReference("ref.yaml", strings.NewReader(refYAML))
	if err != nil {
		t.Fatal(err)
	}
	rounds := [][]eventlog.Event{
		{file("/usr/bin/app", "app v1", "initial"), file("/etc/app.conf", "conf", "initial")},
		{file("/usr/bin/app", "app v2", "changed")},
		{},
		{file("/usr/bin/app", "tampered", "changed"), unmeasured("/var/lib/state", "unstable")},
		{},
		{file("/usr/bin/app", "app v1", "changed"), file("/var/lib/state", "state", "changed")},
		{unmeasured("/var/lib/state", "unreadable"), {Kind: "file", Path: "/etc/app.conf", Reason: "deleted"}},
		{file("/opt/unlisted", "x", "initial")},
	}
	for _, withRef := range []bool{false, true} {
		t.Run(fmt.Sprintf("reference=%v", withRef), func(t *testing.T) {
			tp := testtpm.Open(t)
			m := newMachine(t, sim(tp), filepath.Join(t.TempDir(), "m.log"))
			var r *policy.Reference
			if withRef {
				r = ref
			}
			var state *verifier.State
			var trusted []bool
			for i, evs := range rounds {
				m.append(evs...)
				whole, nonce := m.evidence(0)
				full, err := verify(t, whole, verifier.Options{AK: m.ak, Nonce: nonce, Reference: r})
				if err != nil {
					t.Fatalf("round %d, whole log: %v", i, err)
				}
				var since uint64
				if state != nil {
					since = state.Records()
				}
				part, nonce := m.evidence(since)
				inc, err := verify(t, part, verifier.Options{AK: m.ak, Nonce: nonce, Reference: r, State: state})
				if err != nil {
					t.Fatalf("round %d, from record %d: %v", i, since, err)
				}
				if a, b := verdictJSON(t, full), verdictJSON(t, inc); a != b {
					t.Errorf("round %d: whole log and incremental verdicts differ:\nwhole: %s\nincr:  %s", i, a, b)
				}
				if a, b := stateJSON(t, full.State), stateJSON(t, inc.State); a != b {
					t.Errorf("round %d: states differ:\nwhole: %s\nincr:  %s", i, a, b)
				}
				if state != nil && len(evs) > 0 && inc.State.Records() <= state.Records() {
					t.Errorf("round %d: the state did not move past record %d", i, state.Records())
				}
				trusted = append(trusted, inc.Verdict.Trusted)
				state = roundTrip(t, inc.State)
			}
			// The sequence must exercise both verdicts, or it tests less than it claims.
			want := "[true true true false false false false false]"
			if !withRef {
				want = "[true true true false false true false false]"
			}
			if got := fmt.Sprint(trusted); got != want {
				t.Errorf("verdicts %s, want %s", got, want)
			}
		})
	}
}

// sim lets one simulator serve every step (closing the simulator would
// lose its state).
func sim(tp *tpm.TPM) func() (*tpm.TPM, func()) {
	return func() (*tpm.TPM, func()) { return tp, func() {} }
}

// TestContinuityBroken plays root on a swtpm: after a verdict was saved,
// PCR 23 is reset (tpm2_pcrreset) and a log that does not extend the
// accepted prefix is written into it: a record removed, two reordered, a
// different history, and a record edited in a field the PCR does not bind.
// Verified from the saved state, incrementally (since=N) or with the whole
// log, the evidence is invalid, failing "continuity".
func TestContinuityBroken(t *testing.T) {
	honest := []eventlog.Event{file("/a", "a", "initial"), file("/b", "b", "initial"), file("/c", "c", "initial")}
	for _, tc := range []struct {
		name    string
		history []eventlog.Event
	}{
		{"removed", []eventlog.Event{honest[0], honest[2]}},
		{"reordered", []eventlog.Event{honest[1], honest[0], honest[2]}},
		{"different", []eventlog.Event{file("/a", "other", "initial"), file("/b", "b", "initial"), file("/c", "c", "initial")}},
		{"shorter", []eventlog.Event{honest[0]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := testtpm.Swtpm(t)
			dir := t.TempDir()
			open := func() (*tpm.TPM, func()) {
				tp, err := tpm.Open(context.Background(), spec)
				if err != nil {
					t.Fatal(err)
				}
				return tp, func() { tp.Close() }
			}
			m := newMachine(t, open, filepath.Join(dir, "m.log"))
			m.append(honest...)
			ev, nonce := m.evidence(0)
			res, err := verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce})
			if err != nil || !res.Verdict.Trusted {
				t.Fatalf("honest round: %v", err)
			}
			state := roundTrip(t, res.State)

			if out, err := exec.Command("tpm2_pcrreset", "-T", testtpm.TCTI(spec), "23").CombinedOutput(); err != nil {
				t.Fatalf("tpm2_pcrreset 23: %v\n%s", err, out)
			}
			m.log = filepath.Join(dir, "forged.log")
			m.append(tc.history...)
			m.append(file("/d", "d", "initial"), file("/e", "e", "initial")) // new records for since=N to return

			for _, since := range []uint64{state.Records(), 0} {
				ev, nonce := m.evidence(since)
				_, err := verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce, State: state})
				var ce *verifier.CheckError
				if !errors.As(err, &ce) || ce.Check != attest.CheckContinuity || !errors.Is(err, attest.ErrInvalid) {
					t.Errorf("since=%d: %v, want a failed %q check", since, err, attest.CheckContinuity)
				}
			}
		})
	}
}

// TestContinuityEditedPrefix: a record's time is not bound by its digest,
// so a log edited there replays to the same PCRs; given whole, with the
// saved state, it fails "continuity" on the prefix digest.
func TestContinuityEditedPrefix(t *testing.T) {
	tp := testtpm.Open(t)
	m := newMachine(t, sim(tp), filepath.Join(t.TempDir(), "m.log"))
	m.append(file("/a", "a", "initial"), file("/b", "b", "initial"))
	ev, nonce := m.evidence(0)
	res, err := verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	state := res.State
	m.append(file("/c", "c", "initial"))
	ev, nonce = m.evidence(0)
	lines := bytes.SplitAfter(ev.Log, []byte("\n"))
	var rec map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(bytes.TrimPrefix(lines[1], []byte{0x1e})), &rec); err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(lines[1], []byte(`"time":"`), []byte(`"time":"1`), 1)
	if bytes.Equal(edited, lines[1]) {
		t.Fatalf("no time field in %s", lines[1])
	}
	// Unedited, the whole log with the state passes continuity.
	if res, err := verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce, State: state}); err != nil || !res.Verdict.Trusted {
		t.Fatalf("the honest whole log with the state: %v", err)
	}
	lines[1] = edited
	ev.Log = bytes.Join(lines, nil)
	if _, err := verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce}); err != nil {
		t.Fatalf("without the state the edit is not seen (that is what the prefix digest is for), yet: %v", err)
	}
	_, err = verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce, State: state})
	var ce *verifier.CheckError
	if !errors.As(err, &ce) || ce.Check != attest.CheckContinuity || !strings.Contains(err.Error(), "prefix digest") {
		t.Errorf("edited prefix with the state: %v, want a failed %q check naming the prefix digest", err, attest.CheckContinuity)
	}
}

// TestStateUnusable: a state saved with another reference is refused
// rather than continued, so that the caller verifies the whole log.
func TestStateUnusable(t *testing.T) {
	tp := testtpm.Open(t)
	m := newMachine(t, sim(tp), filepath.Join(t.TempDir(), "m.log"))
	m.append(file("/a", "a", "initial"))
	ev, nonce := m.evidence(0)
	res, err := verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := policy.ParseReference("r.yaml", strings.NewReader("version: 1\nfiles:\n  /a: ["+hexSum("a")+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	ev, nonce = m.evidence(res.State.Records())
	if _, err := verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce, State: res.State, Reference: ref}); !errors.Is(err, attest.ErrPriorUnusable) {
		t.Errorf("a state saved without a reference, continued with one: %v, want ErrPriorUnusable", err)
	}
}

// TestParseStateTampered: a state file edited by hand, or cut short, is
// refused with an error naming what is wrong.
func TestParseStateTampered(t *testing.T) {
	tp := testtpm.Open(t)
	m := newMachine(t, sim(tp), filepath.Join(t.TempDir(), "m.log"))
	m.append(file("/a", "a", "initial"), unmeasured("/b", "unstable"))
	ev, nonce := m.evidence(0)
	res, err := verify(t, ev, verifier.Options{AK: m.ak, Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	good := stateJSON(t, res.State)
	if _, err := verifier.ParseState([]byte(good)); err != nil {
		t.Fatalf("%v\n%s", err, good)
	}
	for _, tc := range []struct{ name, from, to, want string }{
		{"records", `"records":2`, `"records":1`, "checks"},
		{"version", `{"version":1,"log"`, `{"version":2,"log"`, "version 2"},
		{"log_version", `"log":{"version":1`, `"log":{"version":7`, "log: saved replay state: version 7"},
		{"cause", `"cause":"unstable"`, `"cause":"bored"`, `cause "bored"`},
		{"unknown", `"unmeasured_over":0`, `"unmeasured_over":0,"x":1`, "unknown field"},
		{"negative_total", `"failure_total":0`, `"failure_total":-1`, "failure_total"},
		{"fingerprint", `"reference":""`, `"reference":"abc"`, "fingerprint"},
		{"truncated", good, good[:len(good)/2], "unexpected EOF"},
		{"spacing", `"checks":{`, `"checks": {`, "one saved form"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := strings.Replace(good, tc.from, tc.to, 1)
			if in == good {
				t.Fatalf("edit %q did not apply to %s", tc.from, good)
			}
			_, err := verifier.ParseState([]byte(in))
			if !errors.Is(err, verifier.ErrState) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseState = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// FuzzParseState: whatever parses saves to the same bytes and parses again.
func FuzzParseState(f *testing.F) {
	zero := strings.Repeat("0", 64)
	f.Add([]byte(`{"version":1,"log":{"version":1,"records":0,"prefix":"` + zero + `","banks":{"sha256":{}}},"checks":{"reference":"","measured_records":0,"failures":[],"warnings":[],"failure_total":0,"warning_total":0,"unmeasured":[],"unmeasured_over":0,"required":[]}}`))
	f.Add([]byte(`{"version":1,"log":{"version":1,"records":2,"prefix":"837521a9dc53cbf6fb55e048e75da1df9ab4a11b5ac03a6d6f68d2b3bf947e12","banks":{"sha256":{"23":"fb20eb3da541197fbfdcb16d67bb5267fde01c8b341de568c57a41c3a199c936"}}},"checks":{"reference":"","measured_records":2,"failures":[],"warnings":[],"failure_total":0,"warning_total":0,"unmeasured":[{"record":1,"kind":"unmeasured","path":"/b","reason":"changed","cause":"unstable","error":"kept changing","problem":"not measured (unstable)"}],"unmeasured_over":0,"required":[]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := verifier.ParseState(b)
		if err != nil {
			if s != nil || !errors.Is(err, verifier.ErrState) {
				t.Fatalf("error %v with state %v", err, s)
			}
			return
		}
		saved, err := s.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(saved, bytes.TrimSuffix(b, []byte("\n"))) {
			t.Fatalf("parsed %q, saved %q", b, saved)
		}
		if _, err := verifier.ParseState(saved); err != nil {
			t.Fatalf("saved form %q does not parse back: %v", saved, err)
		}
	})
}
