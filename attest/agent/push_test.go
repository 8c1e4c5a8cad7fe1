package agent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/verifier"
)

// pushVerifier is a verifier's push endpoint reduced to the protocol: one
// agent, its token's hash, single-use nonces, and the evidence checked
// with the verifier library, incrementally from the saved state.
type pushVerifier struct {
	t         *testing.T
	name      string
	tokenHash [32]byte
	ak        crypto.PublicKey
	next      float64

	mu      sync.Mutex
	nonces  map[string]bool
	state   *verifier.State
	results []*verifier.Result
	logs    []uint64 // log_start of each evidence
	auth    []string // Authorization headers seen
	fail    int      // answer this many challenges with 503 first
	err     error    // the last verification error
}

func (v *pushVerifier) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.auth = append(v.auth, r.Header.Get("Authorization"))
	reply := func(status int, body any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(body)
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	h := sha256.Sum256([]byte(tok))
	if !ok || subtle.ConstantTimeCompare(h[:], v.tokenHash[:]) != 1 {
		reply(http.StatusUnauthorized, map[string]string{"error": "bad token"})
		return
	}
	switch r.URL.Path {
	case "/v1/push/" + v.name + "/challenge":
		if v.fail > 0 {
			v.fail--
			w.Header().Set("Retry-After", "0")
			reply(http.StatusServiceUnavailable, map[string]string{"error": "busy"})
			return
		}
		n := make([]byte, 32)
		rand.Read(n)
		v.nonces[hex.EncodeToString(n)] = true
		since := uint64(0)
		if v.state != nil {
			since = v.state.Records()
		}
		reply(http.StatusOK, agent.Challenge{Nonce: hex.EncodeToString(n), Since: since, Banks: []string{"sha256"},
			PCRs: []int{23}, Expires: time.Now().Add(2 * time.Minute)})
	case "/v1/push/" + v.name + "/evidence":
		h, log, err := attest.OpenEvidence(r.Body)
		if err != nil {
			reply(http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		if !v.nonces[h.Nonce] {
			reply(http.StatusConflict, map[string]string{"error": "unknown or used nonce"})
			return
		}
		delete(v.nonces, h.Nonce)
		n, _ := hex.DecodeString(h.Nonce)
		st := v.state
		if h.LogStart == 0 {
			st = nil // a new boot's log (the test does not reboot)
		}
		res, err := verifier.Verify(r.Context(), verifier.Evidence{Header: h, Log: log},
			verifier.Options{AK: v.ak, Nonce: n, PCRs: []int{23}, State: st, SaveState: true})
		v.err = err
		v.logs = append(v.logs, h.LogStart)
		if err != nil {
			reply(http.StatusOK, agent.PushReply{State: "invalid", Reason: err.Error(), NextInSeconds: &v.next})
			return
		}
		v.state = res.State
		v.results = append(v.results, res)
		reply(http.StatusOK, agent.PushReply{State: "trusted", NextInSeconds: &v.next})
	default:
		reply(http.StatusNotFound, map[string]string{"error": "unknown agent"})
	}
}

func newPushVerifier(t *testing.T, m *machine, token string) (*pushVerifier, string) {
	v := &pushVerifier{t: t, name: "web-1", tokenHash: sha256.Sum256([]byte(token)), ak: m.ak, next: 1, nonces: map[string]bool{}}
	s := httptest.NewServer(v)
	t.Cleanup(s.Close)
	return v, s.URL
}

func pushOptions(m *machine, url, token string) agent.PushOptions {
	ho := agent.HandlerOptions{TPM: m.tpm, LogPath: m.log, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256}}
	return agent.PushOptions{URL: url, Name: "web-1", Token: token, Evidence: ho.Evidence}
}

// TestPushOnce pushes real evidence (a quote from the simulator over a
// real log) to a verifier that checks it with the verifier library: the
// whole log first, then only the new records, continuing the saved state.
func TestPushOnce(t *testing.T) {
	m := newMachine(t)
	m.measure("/usr/bin/app", "v1")
	m.measure("/etc/app.conf", "v1")
	token := "s3cret-push-token"
	v, url := newPushVerifier(t, m, token)
	ctx := context.Background()
	o := pushOptions(m, url, token)
	r, err := agent.PushOnce(ctx, o)
	if err != nil || r.State != "trusted" || v.err != nil {
		t.Fatalf("first push: %+v, %v (verifier: %v)", r, err, v.err)
	}
	m.measure("/usr/bin/app", "v2")
	r, err = agent.PushOnce(ctx, o)
	if err != nil || r.State != "trusted" || v.err != nil {
		t.Fatalf("second push: %+v, %v (verifier: %v)", r, err, v.err)
	}
	if fmt.Sprint(v.logs) != "[0 2]" || v.state.Records() != 3 {
		t.Errorf("log starts %v, state %d records; want [0 2] and 3", v.logs, v.state.Records())
	}
	if last := v.results[1]; last.Verdict.Covered != 3 || !last.Verdict.Trusted {
		t.Errorf("second push: %+v, want 3 records covered", last.Verdict)
	}
	for _, a := range v.auth {
		if a != "Bearer "+token {
			t.Errorf("Authorization %q", a)
		}
	}
}

// TestPushRefused: a wrong token gets 401 as a PushError, an unknown name
// 404, and neither error nor its text holds the token.
func TestPushRefused(t *testing.T) {
	m := newMachine(t)
	m.measure("/usr/bin/app", "v1")
	_, url := newPushVerifier(t, m, "right-token")
	o := pushOptions(m, url, "wrong-token-1234")
	_, err := agent.PushOnce(context.Background(), o)
	var pe *agent.PushError
	if !errors.As(err, &pe) || pe.StatusCode != 401 || pe.Step != "challenge" || pe.Message != "bad token" {
		t.Errorf("wrong token: %v", err)
	}
	if strings.Contains(err.Error(), "wrong-token-1234") {
		t.Errorf("the error holds the token: %v", err)
	}
	o = pushOptions(m, url, "right-token")
	o.Name = "web-2"
	if _, err := agent.PushOnce(context.Background(), o); !errors.As(err, &pe) || pe.StatusCode != 404 {
		t.Errorf("unknown name: %v", err)
	}
	for _, bad := range []agent.PushOptions{{URL: "ftp://x", Name: "a", Token: "t", Evidence: o.Evidence},
		{URL: url, Name: "a/b", Token: "t", Evidence: o.Evidence}, {URL: url, Name: "a", Evidence: o.Evidence}} {
		if _, err := agent.PushOnce(context.Background(), bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

// TestPushNoRedirect: a verifier that redirects does not get the token
// sent to the other address.
func TestPushNoRedirect(t *testing.T) {
	m := newMachine(t)
	var seen []string
	var mu sync.Mutex
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
	}))
	defer other.Close()
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redir.Close()
	_, err := agent.PushOnce(context.Background(), pushOptions(m, redir.URL, "tok"))
	var pe *agent.PushError
	if !errors.As(err, &pe) || pe.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("redirect: %v", err)
	}
	if len(seen) != 0 {
		t.Errorf("the redirect was followed: %q", seen)
	}
}

// TestPushLoop runs Push: a refused challenge is retried after a backoff,
// then each round waits the verifier's next_in_seconds; the reports carry
// the rounds, never the token.
func TestPushLoop(t *testing.T) {
	m := newMachine(t)
	m.measure("/usr/bin/app", "v1")
	token := "loop-token-0123456789"
	v, url := newPushVerifier(t, m, token)
	v.fail = 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := pushOptions(m, url, token)
	o.MinBackoff = time.Millisecond
	var rounds []agent.PushRound
	o.Report = func(r agent.PushRound) {
		rounds = append(rounds, r)
		if r.Err == nil {
			m.measure("/usr/bin/app", fmt.Sprintf("v%d", len(rounds)))
		}
		if len(rounds) == 4 {
			cancel()
		}
	}
	if err := agent.Push(ctx, o); !errors.Is(err, context.Canceled) {
		t.Fatalf("Push = %v", err)
	}
	if len(rounds) != 4 {
		t.Fatalf("%d rounds", len(rounds))
	}
	for i, r := range rounds {
		if i < 2 {
			var pe *agent.PushError
			if !errors.As(r.Err, &pe) || pe.StatusCode != 503 || r.Failures != i+1 || r.Wait > 10*time.Millisecond {
				t.Errorf("round %d: %+v, want a 503 and a short backoff", i, r)
			}
			continue
		}
		if r.Err != nil || r.Reply.State != "trusted" || r.Failures != 0 || r.Wait < 900*time.Millisecond || r.Wait > 1100*time.Millisecond {
			t.Errorf("round %d: %+v, want trusted and a wait of 1 s ± 10%%", i, r)
		}
		if strings.Contains(fmt.Sprintf("%+v %v", r, r.Err), token) {
			t.Errorf("round %d report holds the token", i)
		}
	}
	if fmt.Sprint(v.logs) != "[0 1]" {
		t.Errorf("log starts %v, want [0 1]", v.logs)
	}
}

// TestPushEvidenceIsTheEndpoints: what a push posts is what GET
// /v1/evidence answers for the same query (the header fields and the log
// from since), and a since past the log's end sends the whole log.
func TestPushEvidenceIsTheEndpoints(t *testing.T) {
	m := newMachine(t)
	for i := 0; i < 5; i++ {
		m.measure(fmt.Sprintf("/usr/bin/app%d", i), "v1")
	}
	ho := agent.HandlerOptions{TPM: m.tpm, LogPath: m.log, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256},
		Unrecorded: func() []attest.Unrecorded {
			return []attest.Unrecorded{{Path: "/x", Cause: "io", Since: "t", Tries: 1}}
		}}
	url := serve(t, agent.Handler(ho), 8, 4)
	ctx := context.Background()
	pushed, err := ho.Evidence(ctx, nonce, 3, []int{23}, []crypto.Hash{crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	rsp, err := http.Get(url + "/v1/evidence?nonce=" + hex.EncodeToString(nonce) + "&since=3&bank=sha256")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	a, _ := attest.ParseEvidence(bytes.NewReader(pushed))
	b, _ := attest.ParseEvidence(bytes.NewReader(got))
	if a == nil || b == nil || a.LogStart != 3 || b.LogStart != 3 || !bytes.Equal(a.Log, b.Log) ||
		a.AKPublic != b.AKPublic || fmt.Sprint(a.PCRs) != fmt.Sprint(b.PCRs) || fmt.Sprint(a.Unrecorded) != fmt.Sprint(b.Unrecorded) {
		t.Errorf("push evidence %+v\nendpoint evidence %+v", a, b)
	}
	whole, err := ho.Evidence(ctx, nonce, 99, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := attest.ParseEvidence(bytes.NewReader(whole)); w == nil || w.LogStart != 0 || bytes.Count(w.Log, []byte{0x1e}) != 5 {
		t.Errorf("since past the end: %+v", w)
	}
	if _, err := ho.Evidence(ctx, nonce, 0, []int{16}, nil); err == nil {
		t.Error("PCR 16 asked: no error")
	}
	if _, err := ho.Evidence(ctx, nonce, 0, nil, []crypto.Hash{crypto.SHA512}); err == nil {
		t.Error("bank sha512 asked: no error")
	}
}

// TestPushNextZero: a reply of next_in_seconds 0 (a new boot: come back
// for the whole log) is honoured at once, but not twice in a row.
func TestPushNextZero(t *testing.T) {
	m := newMachine(t)
	m.measure("/usr/bin/app", "v1")
	v, url := newPushVerifier(t, m, "tok")
	v.next = 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := pushOptions(m, url, "tok")
	o.MinBackoff = 5 * time.Millisecond
	var waits []time.Duration
	o.Report = func(r agent.PushRound) {
		if r.Err != nil {
			t.Errorf("round: %v", r.Err)
		}
		if waits = append(waits, r.Wait); len(waits) == 3 {
			cancel()
		}
	}
	agent.Push(ctx, o)
	if fmt.Sprint(waits) != "[0s 5ms 5ms]" {
		t.Errorf("waits %v, want [0s 5ms 5ms]", waits)
	}
}
