package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/fleet"
)

// NonceLifetime is how long a push challenge's nonce may be used.
const NonceLifetime = 2 * time.Minute

// maxNonces bounds the challenges outstanding at once.
const maxNonces = 200_000

// NonceStore is what a store offers to keep push nonces in the database
// (sqlstore does): replicas behind one address then share them, so that a
// challenge from one replica can be answered to another. With a store
// that does not, the nonces are held in the engine's memory, and a push's
// challenge and evidence must reach the same engine.
type NonceStore interface {
	// PutNonce records a nonce for an agent, single use, until expires.
	PutNonce(ctx context.Context, agentID int64, nonce []byte, since uint64, now, expires time.Time) error
	// TakeNonce uses a nonce up (deleting it whatever the outcome): ok
	// only if it was the agent's and had not expired at now.
	TakeNonce(ctx context.Context, agentID int64, nonce []byte, now time.Time) (since uint64, ok bool, err error)
}

// nonceBook holds the push nonces handed out: single use, expiring. It
// keeps them in the store when the store is a [NonceStore], else in
// memory.
type nonceBook struct {
	db NonceStore
	mu sync.Mutex
	m  map[string]pushNonce
}

type pushNonce struct {
	agent   int64
	since   uint64
	expires time.Time
}

// errNonceStore is a nonce that could not be read or written.
var errNonceStore = errors.New("the verifier cannot store or read push challenges: try again later")

// issue records a fresh nonce for an agent.
func (b *nonceBook) issue(ctx context.Context, agent int64, since uint64, now time.Time) ([]byte, time.Time, error) {
	nonce := newNonce()
	exp := now.Add(NonceLifetime)
	if b.db != nil {
		if err := b.db.PutNonce(ctx, agent, nonce, since, now, exp); err != nil {
			return nil, time.Time{}, fmt.Errorf("%w: %w", errNonceStore, err)
		}
		return nonce, exp, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.m) >= maxNonces {
		for k, n := range b.m {
			if !now.Before(n.expires) {
				delete(b.m, k)
			}
		}
		if len(b.m) >= maxNonces {
			return nil, time.Time{}, errors.New("too many challenges outstanding: try again later")
		}
	}
	b.m[string(nonce)] = pushNonce{agent: agent, since: since, expires: exp}
	return nonce, exp, nil
}

// take uses a nonce up: it must have been issued to the agent and not
// have expired.
func (b *nonceBook) take(ctx context.Context, nonce []byte, agent int64, now time.Time) (pushNonce, bool, error) {
	if b.db != nil {
		since, ok, err := b.db.TakeNonce(ctx, agent, nonce, now)
		if err != nil {
			return pushNonce{}, false, fmt.Errorf("%w: %w", errNonceStore, err)
		}
		return pushNonce{agent: agent, since: since}, ok, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n, ok := b.m[string(nonce)]
	if !ok || n.agent != agent {
		return pushNonce{}, false, nil
	}
	delete(b.m, string(nonce))
	return n, now.Before(n.expires), nil
}

// PushHandler serves the push protocol under /v1/push/ for agents
// registered with Push:
//
//	POST /v1/push/{name}/challenge → {"nonce":HEX,"since":N,"banks":[..],"pcrs":[..],"expires":RFC3339}
//	POST /v1/push/{name}/evidence  (body: what GET /v1/evidence?nonce=..&since=N would return)
//	  → {"state":S,"reason":R,"next_in_seconds":N}
//
// Both need the agent's own token (Authorization: Bearer), whose SHA-256
// is compared in constant time with the registration's. Errors are JSON
// {"error":...}: 401 bad token, 404 unknown agent, 409 a nonce unknown,
// used, expired or another agent's, 413 evidence over the limit. Pushed
// evidence is verified exactly as polled evidence is.
func (e *Engine) PushHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/push/{name}/challenge", e.challenge)
	mux.HandleFunc("POST /v1/push/{name}/evidence", e.evidence)
	return mux
}

func jsonReply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	jsonReply(w, status, map[string]string{"error": msg})
}

// pushAgent authenticates a push request.
func (e *Engine) pushAgent(w http.ResponseWriter, r *http.Request) *fleet.Agent {
	name := r.PathValue("name")
	a, err := e.store.Agent(r.Context(), name)
	if err != nil && !errors.Is(err, fleet.ErrNotFound) {
		e.log.Error("push: read agent", "agent", name, "err", err)
		jsonError(w, http.StatusServiceUnavailable, "the verifier cannot read its store: try again later")
		return nil
	}
	// An unknown name, or an agent that does not push, gets the answer a
	// wrong token gets, after the same comparison: names are not told.
	want := strings.Repeat("0", sha256.Size*2)
	known := err == nil && a.Push
	if known {
		want = strings.ToLower(a.PushTokenHash)
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(token))
	got := hex.EncodeToString(sum[:])
	if !ok || token == "" || len(want) != len(got) ||
		subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 || !known {
		jsonError(w, http.StatusUnauthorized, "no agent of that name pushes with this token")
		return nil
	}
	return a
}

func (e *Engine) challenge(w http.ResponseWriter, r *http.Request) {
	a := e.pushAgent(w, r)
	if a == nil {
		return
	}
	p, err := e.plan(r.Context(), a)
	var since uint64
	if err == nil {
		since = p.since
	}
	nonce, exp, err := e.nonces.issue(r.Context(), a.ID, since, e.o.Now())
	if err != nil {
		msg := err.Error()
		if errors.Is(err, errNonceStore) {
			e.log.Error("push: challenge", "agent", a.Name, "err", err)
			msg = errNonceStore.Error()
		}
		jsonError(w, http.StatusServiceUnavailable, msg)
		return
	}
	banks := a.Banks
	if len(banks) == 0 {
		banks = []string{"sha256"}
	}
	pcrs := a.PCRs
	if len(pcrs) == 0 {
		pcrs = []int{23}
	}
	jsonReply(w, http.StatusOK, map[string]any{"nonce": hex.EncodeToString(nonce), "since": since, "banks": banks, "pcrs": pcrs,
		"expires": exp.UTC().Format(time.RFC3339)})
}

// pushReply is the answer to pushed evidence.
type pushReply struct {
	State         fleet.Status `json:"state"`
	Reason        string       `json:"reason"`
	NextInSeconds int          `json:"next_in_seconds"`
}

func (e *Engine) evidence(w http.ResponseWriter, r *http.Request) {
	a := e.pushAgent(w, r)
	if a == nil {
		return
	}
	// One push of an agent at a time: a machine cannot hold many of the
	// verifier's readers (and their memory) with slow or large bodies.
	e.pushMu.Lock()
	if e.pushing == nil {
		e.pushing = map[int64]bool{}
	}
	busy := e.pushing[a.ID]
	e.pushing[a.ID] = true
	e.pushMu.Unlock()
	if busy {
		// Not ours to clear: the push in progress holds the mark.
		w.Header().Set("Retry-After", "1")
		jsonError(w, http.StatusTooManyRequests, "a push of this agent is being verified: push again after it")
		return
	}
	defer func() {
		e.pushMu.Lock()
		delete(e.pushing, a.ID)
		e.pushMu.Unlock()
	}()
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), e.o.Timeout)
	defer cancel()
	now := e.o.Now()
	limit := e.maxEvidence()
	cr := &capped{r: r.Body, left: limit}
	ev, log, err := attest.OpenEvidence(cr)
	if err != nil {
		if cr.over {
			jsonError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("evidence larger than %d bytes", limit))
			e.pushSave(ctx, w, a, e.invalid(a, fmt.Sprintf("pushed evidence larger than the limit of %d bytes", limit), nil, now), start, false)
			return
		}
		jsonError(w, http.StatusBadRequest, err.Error())
		return
	}
	nonce, err := hex.DecodeString(ev.Nonce)
	if err != nil {
		jsonError(w, http.StatusConflict, "the evidence names no nonce this verifier handed out")
		return
	}
	n, ok, err := e.nonces.take(ctx, nonce, a.ID, now)
	if err != nil {
		e.log.Error("push: take nonce", "agent", a.Name, "err", err)
		jsonError(w, http.StatusServiceUnavailable, errNonceStore.Error())
		return
	}
	if !ok {
		jsonError(w, http.StatusConflict, "the nonce is unknown, used, expired, or another agent's: ask for a new challenge")
		return
	}
	if a.Status == fleet.Compromised {
		io.Copy(io.Discard, io.LimitReader(r.Body, limit))
		jsonReply(w, http.StatusOK, pushReply{State: a.Status, Reason: a.Reason, NextInSeconds: int(interval(a).Seconds())})
		return
	}
	p, err := e.plan(ctx, a)
	if err != nil {
		e.pushSave(ctx, w, a, e.setupFailure(a, err, now), start, false)
		return
	}
	if n.since != 0 && n.since != p.since {
		// The agent was attested since the challenge (a whole log, asked
		// with since 0, is verified against the accepted prefix anyway).
		jsonError(w, http.StatusConflict, "the agent was attested since this challenge: ask for a new one")
		return
	}
	c := e.check(ctx, a, p, p.state, n.since, nonce, ev, log, func() bool { return cr.over }, now)
	if cr.over {
		jsonError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("evidence larger than %d bytes", limit))
		e.pushSave(ctx, w, a, c.result, start, false)
		return
	}
	if c.retry {
		// Another boot: come back at once for its whole log.
		rr := e.keep(a, now)
		rr.NewBoot, rr.Events = true, c.result.Events
		for i := range rr.Events {
			rr.Events[i].To = a.Status
		}
		// Forget the old boot: the next challenge asks for record 0, and
		// its quote is taken as a new boot.
		rr.Boot = &fleet.Boot{}
		rr.NextDue = now.Add(interval(a) + e.o.PushGrace)
		if e.pushSave(ctx, w, a, rr, start, false) {
			jsonReply(w, http.StatusOK, pushReply{State: rr.Status, Reason: "a new boot: push the whole log", NextInSeconds: 0})
		}
		return
	}
	c.result.NextDue = now.Add(interval(a) + e.o.PushGrace)
	e.pushSave(ctx, w, a, c.result, start, true)
}

// pushSave stores a pushed round's result and, with reply, answers. A
// result refused because the agent's row moved meanwhile without a new
// attestation (the scheduler claimed it, or stored its push deadline) is
// stored again over the new version: what it was verified against, the
// boot and replay state and the registration, is unchanged.
func (e *Engine) pushSave(ctx context.Context, w http.ResponseWriter, a *fleet.Agent, r fleet.Result, start time.Time, reply bool) bool {
	for attempt := 0; ; attempt++ {
		err := e.save(ctx, a, r, start)
		if err == nil {
			break
		}
		var b *fleet.Agent
		if errors.Is(err, fleet.ErrConflict) && attempt < 4 {
			b, err = e.store.Agent(context.WithoutCancel(ctx), a.Name)
			if err == nil && !sameBasis(a, b) {
				b = nil
			}
		}
		if b == nil {
			if reply {
				jsonError(w, http.StatusServiceUnavailable, "the result could not be stored: push again")
			}
			return false
		}
		a = b
	}
	if reply {
		jsonReply(w, http.StatusOK, pushReply{State: r.Status, Reason: r.Reason, NextInSeconds: max(1, int(jitter(interval(a)).Seconds()))})
	}
	return true
}

// sameBasis tells whether a result computed for a still holds for b, the
// same agent read again: same registration, same boot and replay state,
// and not compromised or cleared since.
func sameBasis(a, b *fleet.Agent) bool {
	return a.ID == b.ID && b.Status != fleet.Compromised && a.Since.Equal(b.Since) &&
		a.URL == b.URL && a.AK == b.AK && a.Azure == b.Azure && a.VMID == b.VMID && a.Reference == b.Reference &&
		slices.Equal(a.PCRs, b.PCRs) && slices.Equal(a.Banks, b.Banks) && a.Push == b.Push &&
		a.Boot.Known == b.Boot.Known && a.Boot.ResetCount == b.Boot.ResetCount && a.Boot.RestartCount == b.Boot.RestartCount &&
		a.Boot.Clock == b.Boot.Clock && a.Boot.Refresh == b.Boot.Refresh && bytes.Equal(a.Boot.State, b.Boot.State)
}

// pushDeadline handles a push agent the scheduler found due. Every push
// sets the next due time to the interval plus the grace period, so a due
// agent has not pushed in time and is unreachable; one still pending
// (registered or cleared, never pushed since) gets that long from then.
func (e *Engine) pushDeadline(a *fleet.Agent, now time.Time) fleet.Result {
	wait := interval(a) + e.o.PushGrace
	if a.Status == fleet.Pending && now.Before(a.Since.Add(wait)) {
		r := e.keep(a, now)
		r.NextDue = a.Since.Add(wait)
		return r
	}
	r := e.unreachable(a, fmt.Sprintf("no evidence pushed within the interval (%v) and the grace period (%v)", interval(a), e.o.PushGrace), now)
	r.NextDue = now.Add(interval(a))
	return r
}

// capped reads at most left bytes and notes when there was more.
type capped struct {
	r    io.Reader
	left int64
	over bool
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		var one [1]byte
		if n, _ := io.ReadFull(c.r, one[:]); n > 0 {
			c.over = true
			return 0, fmt.Errorf("%w: more than the limit", attest.ErrTooLarge)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
