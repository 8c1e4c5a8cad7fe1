package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest"
	attestagent "github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/engine"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/policy"
)

// TestWatchPush runs the agent on the simulator with --push to a verifier
// that speaks the push protocol and checks what it receives with the
// verifier library (the AK pinned from --ak-out): the first push brings
// the whole log, a file changed on the machine arrives in a later push as
// only the new records, and the token never reaches the agent's logs.
func TestWatchPush(t *testing.T) {
	dir := t.TempDir()
	const token = "push-token-7f3a9c0d1e2b"
	tokenHash := sha256.Sum256([]byte(token))
	akPath := filepath.Join(dir, "ak.pem")
	var mu sync.Mutex
	nonces := map[string]bool{}
	var state *verifier.State
	var starts []uint64
	var paths []string
	var verr error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		h := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(h[:], tokenHash[:]) != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/v1/push/web-7/challenge":
			n := make([]byte, 32)
			rand.Read(n)
			nonces[hex.EncodeToString(n)] = true
			since := uint64(0)
			if state != nil {
				since = state.Records()
			}
			json.NewEncoder(w).Encode(attestagent.Challenge{Nonce: hex.EncodeToString(n), Since: since,
				Banks: []string{"sha256"}, PCRs: []int{23}, Expires: time.Now().Add(2 * time.Minute)})
		case "/v1/push/web-7/evidence":
			h, log, err := attest.OpenEvidence(r.Body)
			if err != nil || !nonces[h.Nonce] {
				w.WriteHeader(http.StatusConflict)
				return
			}
			delete(nonces, h.Nonce)
			pemb, err := os.ReadFile(akPath)
			if err != nil {
				verr = err
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			ak, _ := attest.ParsePublicKey(pemb)
			n, _ := hex.DecodeString(h.Nonce)
			var logCopy bytes.Buffer
			res, err := verifier.Verify(r.Context(), verifier.Evidence{Header: h, Log: teeReader{log, &logCopy}},
				verifier.Options{AK: ak, Nonce: n, State: state, SaveState: true})
			if err != nil {
				verr = err
				json.NewEncoder(w).Encode(attestagent.PushReply{State: "invalid", Reason: err.Error(), NextInSeconds: secs(1)})
				return
			}
			state = res.State
			starts = append(starts, h.LogStart)
			rd := eventlog.NewReader(&logCopy, 0)
			for {
				rec, err := rd.Next()
				if err != nil {
					break
				}
				paths = append(paths, rec.Event().Path)
			}
			json.NewEncoder(w).Encode(attestagent.PushReply{State: "trusted", NextInSeconds: secs(1)})
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()

	app := writeFile(t, filepath.Join(dir, "app"), "v1")
	polPath := writeFile(t, filepath.Join(dir, "policy.yaml"), "settings:\n  debounce: 10ms\nmeasure:\n  - file: "+app+"\n")
	pol, err := policy.Load(polPath)
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	g := &globals{tpm: "sim", log: filepath.Join(dir, "m.log"), stdout: &bytes.Buffer{}, stderr: &stderr}
	sf := serveFlags{akOut: akPath, push: pushFlags{url: srv.URL, tokenFile: tokFile, name: "web-7"}}
	if err := sf.push.check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWatchServe(ctx, g, pol, polPath, "text", 0, sf) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runWatchServe: %v\n%s", err, stderr.String())
		}
		if strings.Contains(stderr.String(), token) {
			t.Errorf("the token is in the agent's log:\n%s", stderr.String())
		}
	}()
	wait := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			done := ok()
			mu.Unlock()
			if done {
				return
			}
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%s: not within 60 s (starts %v, paths %v, verifier error %v)\n%s", what, starts, paths, verr, stderr.String())
	}
	wait("first push", func() bool { return len(starts) > 0 && len(paths) > 0 })
	if err := os.WriteFile(app, []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	wait("the change pushed", func() bool { return state != nil && state.Records() >= 2 && starts[len(starts)-1] > 0 })
	mu.Lock()
	defer mu.Unlock()
	if verr != nil || starts[0] != 0 || paths[0] != app || paths[len(paths)-1] != app {
		t.Errorf("starts %v, paths %v, verifier error %v", starts, paths, verr)
	}
	if !strings.Contains(stderr.String(), "pushed evidence") || !strings.Contains(stderr.String(), "state=trusted") {
		t.Errorf("no round logged:\n%s", stderr.String())
	}
}

type teeReader struct {
	r interface{ Read([]byte) (int, error) }
	w *bytes.Buffer
}

func (t teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.w.Write(p[:n])
	return n, err
}

// syncBuffer is a bytes.Buffer safe for the agent's logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func secs(f float64) *float64 { return &f }

// TestWatchPushEngine runs the agent on the simulator with --push to the
// fleet verifier's engine (its push handler, a SQLite store): trusted,
// then untrusted with the file named once the file changes.
func TestWatchPushEngine(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := sqlstore.Open(ctx, filepath.Join(dir, "verifier.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	app := writeFile(t, filepath.Join(dir, "app"), "v1")
	v1 := sha256.Sum256([]byte("v1"))
	ref := "version: 1\nfiles:\n  " + app + ": [" + hex.EncodeToString(v1[:]) + "]\n"
	if err := st.PutReference(ctx, fleet.Reference{Name: "app", Body: []byte(ref)}, false); err != nil {
		t.Fatal(err)
	}
	e := engine.New(st, engine.Options{ClaimEvery: 50 * time.Millisecond})
	srv := httptest.NewServer(e.PushHandler())
	defer srv.Close()
	engineDone := make(chan struct{})
	go func() { e.Run(ctx); close(engineDone) }()
	defer func() { cancel(); <-engineDone }()

	polPath := writeFile(t, filepath.Join(dir, "policy.yaml"), "settings:\n  debounce: 10ms\nmeasure:\n  - file: "+app+"\n")
	pol, err := policy.Load(polPath)
	if err != nil {
		t.Fatal(err)
	}
	const token = "engine-push-token-0a1b2c"
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	akPath := filepath.Join(dir, "ak.pem")
	var stderr syncBuffer
	g := &globals{tpm: "sim", log: filepath.Join(dir, "m.log"), stdout: &bytes.Buffer{}, stderr: &stderr}
	sf := serveFlags{akOut: akPath, push: pushFlags{url: srv.URL, tokenFile: tokFile, name: "web-8"}}
	if err := sf.push.check(); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runWatchServe(wctx, g, pol, polPath, "text", 0, sf) }()
	defer func() {
		wcancel()
		if err := <-done; err != nil {
			t.Errorf("runWatchServe: %v\n%s", err, stderr.String())
		}
		if strings.Contains(stderr.String(), token) {
			t.Errorf("the token is in the agent's log:\n%s", stderr.String())
		}
	}()
	var akPEM []byte
	for deadline := time.Now().Add(30 * time.Second); len(akPEM) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no --ak-out:\n%s", stderr.String())
		}
		akPEM, _ = os.ReadFile(akPath)
	}
	h := sha256.Sum256([]byte(token))
	if _, err := st.AddAgent(ctx, fleet.Spec{Name: "web-8", AK: string(akPEM), Reference: "app", PCRs: []int{23}, Banks: []string{"sha256"},
		Interval: time.Second, Push: true, PushTokenHash: hex.EncodeToString(h[:])}, time.Now()); err != nil {
		t.Fatal(err)
	}
	wait := func(want fleet.Status) *fleet.Agent {
		t.Helper()
		var a *fleet.Agent
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if a, err = st.Agent(ctx, "web-8"); err == nil && a.Status == want {
				return a
			}
		}
		t.Fatalf("not %s within 60 s: %+v, %v\n%s", want, a, err, stderr.String())
		return nil
	}
	wait(fleet.Trusted)
	if err := os.WriteFile(app, []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := wait(fleet.Untrusted)
	if !strings.Contains(string(a.Findings), app) {
		t.Errorf("findings %s do not name %s", a.Findings, app)
	}
}
