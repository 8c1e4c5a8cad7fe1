package loadgen

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/policy"
)

func nonce(t testing.TB) []byte {
	n := make([]byte, 32)
	rand.Read(n)
	return n
}

func reference(t testing.TB, f *Fleet) *policy.Reference {
	t.Helper()
	ref, err := policy.ParseReference("loadgen.yaml", bytes.NewReader(f.Reference()))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// verify checks evidence bytes with the verifier library as the fleet
// verifier does.
func verify(t testing.TB, a *Agent, b []byte, n []byte, ref *policy.Reference, st *verifier.State) (*verifier.Result, error) {
	t.Helper()
	h, log, err := attest.OpenEvidence(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return verifier.Verify(context.Background(), verifier.Evidence{Header: h, Log: log},
		verifier.Options{AK: a.Public(), Nonce: n, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256},
			Reference: ref, State: st, SaveState: true})
}

// TestEvidenceVerifies checks loadgen evidence with the real verifier
// library: trusted whole, then incrementally from the saved state, with
// ECDSA and RSA keys and with the sha1 bank too.
func TestEvidenceVerifies(t *testing.T) {
	for _, o := range []Options{{Agents: 1}, {Agents: 1, RSA: true}, {Agents: 1, SHA1: true, PerRound: 3, Files: 2}} {
		f, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		a := f.Agent(0)
		ref := reference(t, f)
		n := nonce(t)
		b, err := a.EvidenceBytes(n, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := verify(t, a, b, n, ref, nil)
		if err != nil || !res.Verdict.Trusted || res.Verdict.Covered != int(a.Records()) {
			t.Fatalf("%+v: Verify = %+v, %v", o, res, err)
		}
		st := res.State
		for round := 0; round < 3; round++ {
			if err := f.Round(); err != nil {
				t.Fatal(err)
			}
			n := nonce(t)
			b, err := a.EvidenceBytes(n, st.Records(), a.Banks())
			if err != nil {
				t.Fatal(err)
			}
			res, err := verify(t, a, b, n, ref, st)
			if err != nil || !res.Verdict.Trusted || res.State.Records() != a.Records() {
				t.Fatalf("%+v round %d: Verify = %+v, %v", o, round, res, err)
			}
			st = res.State
		}
	}
}

// TestTamperedEvidenceFails checks that the verifier refuses loadgen
// evidence that was altered after signing, a wrong nonce and another key.
func TestTamperedEvidenceFails(t *testing.T) {
	f, err := New(Options{Agents: 2})
	if err != nil {
		t.Fatal(err)
	}
	a, other := f.Agent(0), f.Agent(1)
	ref := reference(t, f)
	n := nonce(t)
	ev, err := a.Evidence(n, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := ev.Marshal()
	flip := func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-1] ^= 1; return b }
	cases := map[string]struct {
		b     []byte
		n     []byte
		ak    *Agent
		check string
	}{
		"attest byte flipped": {b: mustMarshal(t, withQuote(ev, flip(ev.Quote.Attest), ev.Quote.Signature)), n: n, ak: a, check: attest.CheckSignature},
		"signature flipped":   {b: mustMarshal(t, withQuote(ev, ev.Quote.Attest, flip(ev.Quote.Signature))), n: n, ak: a, check: attest.CheckSignature},
		"other nonce":         {b: good, n: nonce(t), ak: a, check: attest.CheckNonce},
		"other agent's key":   {b: good, n: n, ak: other, check: attest.CheckSignature},
		"record altered":      {b: bytes.Replace(good, []byte("libfleet000"), []byte("libfleet00X"), 1), n: n, ak: a, check: attest.CheckLog},
	}
	for name, c := range cases {
		_, err := verify(t, c.ak, c.b, c.n, ref, nil)
		var ce *verifier.CheckError
		if !errors.As(err, &ce) || ce.Check != c.check {
			t.Errorf("%s: Verify error = %v, want the %q check to fail", name, err, c.check)
		}
	}
	if _, err := verify(t, a, good, n, ref, nil); err != nil {
		t.Errorf("untampered evidence: %v", err)
	}
}

func withQuote(ev *attest.Evidence, att, sig []byte) *attest.Evidence {
	c := *ev
	c.Quote = attest.QuoteBlob{Attest: att, Signature: sig}
	return &c
}

func mustMarshal(t testing.TB, ev *attest.Evidence) []byte {
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestQuoteStructure checks the TPMS_ATTEST fields a verifier reads for
// continuity: resetCount changes with a reboot only, the clock never goes
// back within a boot, the qualified signer is the key's name.
func TestQuoteStructure(t *testing.T) {
	f, err := New(Options{Agents: 1})
	if err != nil {
		t.Fatal(err)
	}
	a := f.Agent(0)
	quote := func() *tpm2.TPMSAttest {
		ev, err := a.Evidence(nonce(t), 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		q, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.Quote.Attest)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	q1 := quote()
	q2 := quote()
	if q1.ClockInfo.ResetCount != q2.ClockInfo.ResetCount || q2.ClockInfo.Clock < q1.ClockInfo.Clock {
		t.Errorf("within a boot: clock info %+v then %+v", q1.ClockInfo, q2.ClockInfo)
	}
	if len(q1.QualifiedSigner.Buffer) != 34 {
		t.Errorf("qualifiedSigner = %x, want a SHA-256 name", q1.QualifiedSigner.Buffer)
	}
	if err := a.Reboot(); err != nil {
		t.Fatal(err)
	}
	q3 := quote()
	if q3.ClockInfo.ResetCount == q2.ClockInfo.ResetCount {
		t.Errorf("after a reboot: resetCount still %d", q3.ClockInfo.ResetCount)
	}
	if a.Records() != 10 {
		t.Errorf("after a reboot: %d records, want the 10 initial ones", a.Records())
	}
}

// TestMisbehaviours checks what the verifier library makes of a forged
// history, a changed file and a reboot, continuing from a saved state.
func TestMisbehaviours(t *testing.T) {
	f, err := New(Options{Agents: 3})
	if err != nil {
		t.Fatal(err)
	}
	ref := reference(t, f)
	states := make([]*verifier.State, 3)
	for i := range states {
		n := nonce(t)
		b, _ := f.Agent(i).EvidenceBytes(n, 0, nil)
		res, err := verify(t, f.Agent(i), b, n, ref, nil)
		if err != nil || !res.Verdict.Trusted {
			t.Fatalf("agent %d: %+v, %v", i, res, err)
		}
		states[i] = res.State
	}
	f.Round()
	// Forged: PCR reset, a different history as long as the old one and more.
	if err := f.Agent(0).Forge(30); err != nil {
		t.Fatal(err)
	}
	n := nonce(t)
	b, _ := f.Agent(0).EvidenceBytes(n, states[0].Records(), nil)
	_, err = verify(t, f.Agent(0), b, n, ref, states[0])
	var ce *verifier.CheckError
	if !errors.As(err, &ce) || ce.Check != attest.CheckContinuity && ce.Check != attest.CheckLog {
		t.Errorf("forged history: %v, want a continuity or replay failure", err)
	}
	// And the whole forged log against the saved prefix.
	n = nonce(t)
	b, _ = f.Agent(0).EvidenceBytes(n, 0, nil)
	if _, err = verify(t, f.Agent(0), b, n, ref, states[0]); !errors.As(err, &ce) || ce.Check != attest.CheckContinuity {
		t.Errorf("forged history, whole log: %v, want the continuity check to fail", err)
	}
	// A changed file: valid evidence, not trusted, the file named.
	if err := f.Agent(1).ChangeFile("/opt/fleet/lib/libfleet007.so"); err != nil {
		t.Fatal(err)
	}
	n = nonce(t)
	b, _ = f.Agent(1).EvidenceBytes(n, states[1].Records(), nil)
	res, err := verify(t, f.Agent(1), b, n, ref, states[1])
	if err != nil || res.Verdict.Trusted || len(res.Verdict.Failures) == 0 ||
		!strings.Contains(res.Verdict.Failures[0].Path, "libfleet007.so") {
		t.Errorf("changed file: %+v, %v", res.Verdict, err)
	}
	// A reboot: the new log is shorter than the saved prefix, and fine
	// from scratch.
	f.Agent(2).Reboot()
	n = nonce(t)
	b, _ = f.Agent(2).EvidenceBytes(n, 0, nil)
	if res, err := verify(t, f.Agent(2), b, n, ref, nil); err != nil || !res.Verdict.Trusted {
		t.Errorf("after a reboot, from scratch: %+v, %v", res, err)
	}
}

// TestServedOverHTTP fetches evidence from the fleet's server with the
// verifier's own client (attest.OpenFetch), records the polls with the
// replica named, and checks the faults.
func TestServedOverHTTP(t *testing.T) {
	f, err := New(Options{Agents: 5, GrowOnPoll: true, HugeSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ref := reference(t, f)
	client := &http.Client{Transport: verifierTransport{"replica-a"}}
	ctx := context.Background()
	fetch := func(i int, since uint64, o attest.FetchOptions) (*verifier.Result, error) {
		n := nonce(t)
		o.Since = since
		st, err := attest.OpenFetch(ctx, client, s.AgentURL(i), n, o)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		res, err := verifier.Verify(ctx, verifier.Evidence{Header: st.Evidence, Log: st.Log},
			verifier.Options{AK: f.Agent(i).Public(), Nonce: n, Reference: ref, SaveState: true})
		if st.TooLarge() {
			return nil, attest.ErrTooLarge
		}
		return res, err
	}
	res, err := fetch(0, 0, attest.FetchOptions{})
	if err != nil || !res.Verdict.Trusted || res.Verdict.Covered != 20 {
		t.Fatalf("first poll: %+v, %v", res, err)
	}
	st := res.State
	n := nonce(t)
	stream, err := attest.OpenFetch(ctx, client, s.AgentURL(0), n, attest.FetchOptions{Since: st.Records()})
	if err != nil {
		t.Fatal(err)
	}
	res, err = verifier.Verify(ctx, verifier.Evidence{Header: stream.Evidence, Log: stream.Log},
		verifier.Options{AK: f.Agent(0).Public(), Nonce: n, Reference: ref, State: st})
	stream.Close()
	if err != nil || !res.Verdict.Trusted || res.State.Records() != 30 {
		t.Fatalf("incremental poll: %+v, %v", res, err)
	}
	polls := f.Polls()
	if len(polls) != 2 || polls[0].Verifier != "replica-a" || polls[1].Since != 20 || polls[1].Status != 200 || polls[0].Agent != 0 {
		t.Errorf("polls = %+v", polls)
	}

	// Faults.
	f.Agent(1).SetFault(Down)
	if _, err := fetch(1, 0, attest.FetchOptions{}); err == nil {
		t.Error("down agent answered")
	}
	f.Agent(2).SetFault(Garbage)
	if _, err := fetch(2, 0, attest.FetchOptions{}); !errors.Is(err, attest.ErrInvalid) {
		t.Errorf("garbage: %v, want invalid evidence", err)
	}
	f.Agent(3).SetFault(Huge)
	if _, err := fetch(3, 0, attest.FetchOptions{MaxSize: 1 << 20}); !errors.Is(err, attest.ErrTooLarge) {
		t.Errorf("huge: %v, want too large", err)
	}
	f.Agent(4).SetFault(Slow)
	sctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := attest.OpenFetch(sctx, client, s.AgentURL(4), nonce(t), attest.FetchOptions{}); err == nil {
		t.Error("slow agent answered a cancelled request")
	}
	// Bad queries get 400, as from the agent.
	for _, q := range []string{"nonce=zz", "nonce=0011223344556677&since=9999", "nonce=0011223344556677&bank=sha384", "nonce=0011223344556677&x=1"} {
		rsp, err := http.Get(s.AgentURL(0) + "/v1/evidence?" + q)
		if err != nil {
			t.Fatal(err)
		}
		rsp.Body.Close()
		if rsp.StatusCode != 400 {
			t.Errorf("%s: %s, want 400", q, rsp.Status)
		}
	}
	if rsp, err := http.Get(s.URL + "/agents/99/v1/evidence?nonce=0011223344556677"); err != nil || rsp.StatusCode != 404 {
		t.Errorf("unknown agent: %v %v", rsp, err)
	}
}

type verifierTransport struct{ name string }

func (v verifierTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(VerifierHeader, v.name)
	return http.DefaultTransport.RoundTrip(r)
}

// TestOverlaps checks that two requests in progress at once for one agent
// are noted, and sequential ones are not.
func TestOverlaps(t *testing.T) {
	f, err := New(Options{Agents: 2, SlowDelay: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		if _, err := attest.Fetch(ctx, &http.Client{Transport: verifierTransport{name}}, s.AgentURL(1), nonce(t)); err != nil {
			t.Fatal(err)
		}
	}
	if o := f.Overlaps(); len(o) != 0 {
		t.Fatalf("sequential polls: overlaps %+v", o)
	}
	f.Agent(0).SetFault(Slow)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		attest.Fetch(sctx, &http.Client{Transport: verifierTransport{"a"}}, s.AgentURL(0), nonce(t))
	}()
	// Wait until a's request is in progress, then ask as b.
	for {
		f.pollMu.Lock()
		n := len(f.inflight[0])
		f.pollMu.Unlock()
		if n > 0 {
			break
		}
		runtime.Gosched()
	}
	f.Agent(0).SetFault(OK)
	if _, err := attest.Fetch(ctx, &http.Client{Transport: verifierTransport{"b"}}, s.AgentURL(0), nonce(t)); err != nil {
		t.Fatal(err)
	}
	cancel()
	wg.Wait()
	o := f.Overlaps()
	if len(o) != 1 || o[0].Agent != 0 || o[0].Verifiers != [2]string{"a", "b"} {
		t.Errorf("overlaps = %+v, want a then b on agent 0", o)
	}
}
