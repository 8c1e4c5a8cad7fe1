package loadgen

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
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

// TestPush makes five agents push to a verifier that knows each one's
// token hash and key and checks their evidence with the verifier library,
// incrementally; one agent's token is wrong and gets nowhere.
func TestPush(t *testing.T) {
	f, err := New(Options{Agents: 5, GrowOnPoll: true})
	if err != nil {
		t.Fatal(err)
	}
	ref := reference(t, f)
	type known struct {
		a      *Agent
		hash   [32]byte
		state  *verifier.State
		pushes int
	}
	var mu sync.Mutex
	agents := map[string]*known{}
	for i, a := range f.Agents() {
		k := &known{a: a, hash: sha256.Sum256([]byte(a.Token))}
		if i == 4 {
			k.hash = sha256.Sum256([]byte("another token"))
		}
		agents[a.Name] = k
	}
	nonces := map[string]string{}
	var failures []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		rest, _ := strings.CutPrefix(r.URL.Path, "/v1/push/")
		name, step, _ := strings.Cut(rest, "/")
		k := agents[name]
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		h := sha256.Sum256([]byte(tok))
		if k == nil || subtle.ConstantTimeCompare(h[:], k.hash[:]) != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"bad token"}`))
			return
		}
		switch step {
		case "challenge":
			n := make([]byte, 32)
			rand.Read(n)
			nonces[hex.EncodeToString(n)] = name
			since := uint64(0)
			if k.state != nil {
				since = k.state.Records()
			}
			json.NewEncoder(w).Encode(agent.Challenge{Nonce: hex.EncodeToString(n), Since: since, Banks: []string{"sha256"}, PCRs: []int{23}})
		case "evidence":
			hdr, log, err := attest.OpenEvidence(r.Body)
			if err != nil || nonces[hdr.Nonce] != name {
				w.WriteHeader(http.StatusConflict)
				return
			}
			delete(nonces, hdr.Nonce)
			n, _ := hex.DecodeString(hdr.Nonce)
			res, err := verifier.Verify(r.Context(), verifier.Evidence{Header: hdr, Log: log},
				verifier.Options{AK: k.a.Public(), Nonce: n, Reference: ref, State: k.state, SaveState: true})
			if err != nil || !res.Verdict.Trusted {
				failures = append(failures, name)
				json.NewEncoder(w).Encode(agent.PushReply{State: "invalid", NextInSeconds: secs(1)})
				return
			}
			k.state = res.State
			k.pushes++
			json.NewEncoder(w).Encode(agent.PushReply{State: "trusted", NextInSeconds: secs(1)})
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Push(ctx, PushOptions{URL: srv.URL, MinBackoff: 50 * time.Millisecond}) }()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		ok := true
		for i := 0; i < 4; i++ {
			ok = ok && agents[f.Agent(i).Name].pushes >= 2
		}
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("four agents did not push twice within 60 s")
		}
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Push = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 || agents[f.Agent(4).Name].pushes != 0 {
		t.Errorf("failures %v; agent 4 (wrong token) pushed %d times", failures, agents[f.Agent(4).Name].pushes)
	}
	var refused, ok int
	for _, p := range f.Polls() {
		switch {
		case p.Agent == 4 && p.Status == 0:
			// refused at the challenge: no evidence was collected
		case p.Agent == 4:
			refused++
		case p.Status == 200 && p.Push:
			ok++
		}
	}
	if ok < 4 || refused != 0 { // a round cut by cancel may go unrecorded
		t.Errorf("polls: %d pushes ok, %d of agent 4 recorded", ok, refused)
	}
}

func secs(f float64) *float64 { return &f }
