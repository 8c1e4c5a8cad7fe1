package engine

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

func openTPM(t *testing.T, spec string) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func tpmTool(t *testing.T, spec string, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], append(args[1:], "-T", testtpm.TCTI(spec))...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAttackerReplaysAnotherHistory: on swtpm, after the verifier
// accepted a log, the attacker resets PCR 23 (tpm2_pcrreset) and extends
// it with a different log's records (tpm2_pcrextend), which the agent then
// serves: a consistent log and quote, but not a continuation of the
// accepted prefix in the same boot. The agent is compromised, and stays so
// (rounds skip it) until an operator clears it. Then a real restart of
// swtpm (a new boot) is trusted again, with the reboot in the history.
func TestAttackerReplaysAnotherHistory(t *testing.T) {
	proc := testtpm.StartSwtpm(t)
	tp := openTPM(t, proc.Spec)
	m := newMachine(t, tp)
	f := newFixture(t, Options{})
	f.add(fleet.Spec{Name: "m", URL: m.srv.URL, AK: m.akPEM})
	m.file("/bin/a", "v1")
	m.file("/bin/b", "v1")
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("first round: %s (%s)", a.Status, a.Reason)
	}
	m.file("/bin/c", "v1")
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("second round: %s (%s)", a.Status, a.Reason)
	}

	// The attacker: a log of its own (more records than the accepted
	// prefix, so that since=N finds records), written without extends,
	// then replayed into the reset PCR with tpm2-tools.
	m.w.Close()
	forged := filepath.Join(t.TempDir(), "forged.log")
	m.pcrs.skip.Store(true)
	w, _, err := logfile.OpenWriter(context.Background(), forged, &zeroPCRs{m.pcrs}, logfile.WriterOptions{Banks: sha256Bank, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := w.Append(context.Background(), 23, eventlog.Event{Kind: "file", Path: fmt.Sprintf("/bin/%c", 'a'+i), SHA256: digest("evil"), Reason: "changed"}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	recs, _, err := logfile.Snapshot(context.Background(), forged)
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()
	tpmTool(t, proc.Spec, "tpm2_pcrreset", "23")
	for _, r := range recs {
		tpmTool(t, proc.Spec, "tpm2_pcrextend", "23:sha256="+hex.EncodeToString(r.Digests[0].Value))
	}
	tp = openTPM(t, proc.Spec)
	m.serve(tp, forged)
	// The forged log alone verifies: only continuity tells.
	if one := m.oneShot(nil); !one.Verdict.Trusted {
		t.Fatalf("the forged log does not verify on its own (%v): the test proves nothing", one.Verdict.Failures)
	}
	a := f.poll("m")
	if a.Status != fleet.Compromised || !strings.Contains(a.Reason, "continuity") {
		t.Fatalf("after a PCR reset and another history: %s (%s), want compromised for continuity", a.Status, a.Reason)
	}
	f.advance(2 * a.Interval)
	if got, _ := f.store.Claim(context.Background(), "x", f.e.o.Now(), f.e.o.Lease, 10); len(got) != 0 {
		t.Fatal("a compromised agent is claimed for rounds")
	}
	a = f.poll("m") // a round that reaches it anyway changes nothing
	if a.Status != fleet.Compromised {
		t.Fatalf("compromised did not stay: %s", a.Status)
	}

	// A real new boot: swtpm restarts with its permanent state (the AK),
	// PCR 23 starts from zero, resetCount changes; the agent starts a new log.
	if err := f.store.Clear(context.Background(), "m", "operator: reinstalled", f.e.o.Now()); err != nil {
		t.Fatal(err)
	}
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("after clear: %s (%s)", a.Status, a.Reason)
	}
	tp.Close()
	proc.Restart(true)
	tp = openTPM(t, proc.Spec)
	m.pcrs = &switchPCRs{TPM: tp}
	m.path = filepath.Join(t.TempDir(), "boot2.log")
	m.open()
	m.serve(tp, m.path)
	m.file("/bin/a", "v1")
	a = f.poll("m")
	if a.Status != fleet.Trusted {
		t.Fatalf("after a reboot: %s (%s), want trusted", a.Status, a.Reason)
	}
	h := f.history("m")
	reboots := 0
	for _, e := range h {
		if e == EventReboot {
			reboots++
		}
	}
	if reboots != 1 || h[len(h)-1] != EventReboot {
		t.Errorf("history %v: want one reboot, last", h)
	}
	m.file("/bin/b", "v1")
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("an incremental round in the new boot: %s (%s)", a.Status, a.Reason)
	}
}

// zeroPCRs reads the PCRs as the reset PCR 23 the attacker starts from,
// and extends nothing (tpm2_pcrextend does, later).
type zeroPCRs struct{ *switchPCRs }

func (z *zeroPCRs) ReadPCRs(ctx context.Context, pcr int, banks []crypto.Hash) (map[crypto.Hash][]byte, error) {
	out := map[crypto.Hash][]byte{}
	for _, b := range banks {
		out[b] = make([]byte, b.Size())
	}
	return out, nil
}

// TestShorterLogIsCompromised: within one boot, an agent that serves a
// log shorter than the prefix the verifier accepted (it refuses since=N,
// and the whole log does not begin with the accepted records) is
// compromised; one whose stored clock is ahead of the quote's (the TPM
// clock ran backwards) too.
func TestShorterLogIsCompromised(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	f := newFixture(t, Options{})
	f.add(fleet.Spec{Name: "m", URL: m.srv.URL, AK: m.akPEM})
	for _, p := range []string{"/a", "/b", "/c"} {
		m.file(p, "v1")
	}
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("first round: %s (%s)", a.Status, a.Reason)
	}
	// The agent now serves a log of one record (its first), same TPM.
	recs, _, err := logfile.Snapshot(context.Background(), m.path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := recs[0].Marshal()
	short := filepath.Join(t.TempDir(), "short.log")
	writeFile(t, short, b)
	m.serve(m.tp, short)
	a := f.poll("m")
	if a.Status != fleet.Compromised || !strings.Contains(a.Reason, "fewer than the 3 accepted") {
		t.Fatalf("a shorter log: %s (%s), want compromised", a.Status, a.Reason)
	}

	f.store.Clear(context.Background(), "m", "ok", f.e.o.Now())
	m.serve(m.tp, m.path)
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("after clear: %s (%s)", a.Status, a.Reason)
	}
	// The stored boot says the clock was far ahead.
	a, _ = f.store.Agent(context.Background(), "m")
	boot := a.Boot
	boot.Clock += 1 << 40
	if err := f.store.SaveResult(context.Background(), fleet.Result{AgentID: a.ID, Version: a.Version, At: f.e.o.Now(), Status: a.Status,
		Reason: a.Reason, Findings: a.Findings, Checks: a.Checks, Boot: &boot, NextDue: a.NextDue}); err != nil {
		t.Fatal(err)
	}
	if a := f.poll("m"); a.Status != fleet.Compromised || !strings.Contains(a.Reason, "clock ran backwards") {
		t.Fatalf("a clock behind the accepted one: %s (%s), want compromised", a.Status, a.Reason)
	}
}

// TestUnreadableLogIsInvalid: evidence whose new records do not read (a
// byte flipped on the way, as a proxy on plain HTTP can) proves nothing of
// a rewrite: the agent is invalid, not compromised, and the accepted
// prefix is kept, so the next evidence that reads is trusted again.
func TestUnreadableLogIsInvalid(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	f := newFixture(t, Options{})
	f.add(fleet.Spec{Name: "m", URL: m.srv.URL, AK: m.akPEM})
	m.file("/bin/a", "v1")
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("first round: %s (%s)", a.Status, a.Reason)
	}
	m.file("/bin/b", "v1")
	real := *m.h.Load()
	var flip http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		real.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		nl := bytes.IndexByte(body, '\n')
		if i := bytes.Index(body[nl+1:], []byte(`"/bin/b"`)); nl >= 0 && i >= 0 {
			body[nl+1+i+3] = 'X' // "/bXn/b": the record no longer matches its digests
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
	m.h.Store(&flip)
	a := f.poll("m")
	if a.Status != fleet.Invalid || !strings.Contains(a.Reason, "does not read") {
		t.Fatalf("a record flipped on the way: %s (%s), want invalid", a.Status, a.Reason)
	}
	m.h.Store(&real)
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("the next evidence that reads: %s (%s), want trusted", a.Status, a.Reason)
	}
}
