package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/policy"
)

// The tokens of the test token file: an admin's and a reader's.
const (
	adminToken = "adm1n-5ecret-7f3c9a1d2b4e6f80"
	readToken  = "r3ad-5ecret-0a1b2c3d4e5f6a7b"
	wrongToken = "wr0ng-5ecret-ffffffffffffffff"
)

// fakeEngine records what the API asks of the engine; its push handler
// answers 200 and records the Authorization header it was given.
type fakeEngine struct {
	mu       sync.Mutex
	woken    []string
	replaced []string
	pushAuth []string
	failRef  error
}

func (e *fakeEngine) Wake(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.woken = append(e.woken, name)
}

func (e *fakeEngine) ReferenceReplaced(ctx context.Context, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.replaced = append(e.replaced, name)
	return e.failRef
}

func (e *fakeEngine) PushHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.pushAuth = append(e.pushAuth, r.Header.Get("Authorization"))
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"engine":"push"}`)
	})
}

func (e *fakeEngine) wokenNames() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.woken)
}

// syncBuffer is a log destination for concurrent writers.
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

type env struct {
	t      testing.TB
	url    string
	store  *sqlstore.Store
	engine *fakeEngine
	logs   *syncBuffer
	now    time.Time
}

// newEnv serves the API over a real HTTP server on a real SQLite store.
func newEnv(t *testing.T, mod func(*api.Options)) *env { return newEnvOpts(t, mod) }

func newEnvTB(t testing.TB) *env { return newEnvOpts(t, nil) }

func newEnvOpts(t testing.TB, mod func(*api.Options)) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlstore.Open(context.Background(), filepath.Join(dir, "verifier.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tokPath := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokPath, []byte("# operators\n"+adminToken+"\n\n"+readToken+" read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toks, err := api.ParseTokens(tokPath)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, engine: &fakeEngine{}, logs: &syncBuffer{}, now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
	o := api.Options{
		Store: st, Engine: e.engine, Tokens: toks, Now: func() time.Time { return e.now },
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "rimon_test_metric 1\n") }),
	}
	if mod != nil {
		mod(&o)
	}
	srv := httptest.NewServer(api.Handler(o))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

type reply struct {
	status int
	header http.Header
	body   string
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("reply %d %q: %v", r.status, r.body, err)
	}
}

// errorField is the reply's {"error", "field"}; it fails unless the reply
// is a JSON error.
func (r reply) errorField(t *testing.T) (msg, field string) {
	t.Helper()
	var e api.Error
	r.json(t, &e)
	if e.Error == "" {
		t.Fatalf("reply %d %q: no error message", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error reply Content-Type = %q, want application/json", ct)
	}
	return e.Error, e.Field
}

func (e *env) do(method, path, token string, body any) reply {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func (e *env) must(status int, method, path, token string, body any) reply {
	e.t.Helper()
	r := e.do(method, path, token, body)
	if r.status != status {
		e.t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.body, status)
	}
	return r
}

// akPEM is a real attestation key: an Azure vTPM's (testdata/azure/SOURCES.md).
func akPEM(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("../../testdata/azure/kinvolk/akpub.pem")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// caPEM is a real certificate chain: AMD's Milan ASK and ARK.
func caPEM(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../testdata/azure/trustee/milan_ask_ark_asvk.pem")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// referenceYAML is a reference file as rimon reference generate writes it.
func referenceYAML(t *testing.T, digests map[string]string) string {
	t.Helper()
	var b bytes.Buffer
	if err := policy.WriteReference(&b, policy.ReferenceFromDigests("test", digests)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func sum(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

func TestParseTokens(t *testing.T) {
	dir := t.TempDir()
	secret := "s3cret-line-two-0123456789"
	for _, tc := range []struct {
		name, content, want string
		n                   int
	}{
		{"admin_and_read", "# comment\n\n" + adminToken + "\n  " + readToken + " read  \n" + wrongToken + " admin\n", "", 3},
		{"unknown_role", adminToken + "\n" + secret + " write\n", "line 2: want TOKEN, TOKEN read or TOKEN admin", 0},
		{"three_fields", "\n\n" + secret + " read extra\n", "line 3:", 0},
		{"short", "# x\nshort-token\n", "line 2: a token has 16 to 512 characters", 0},
		{"control_char", secret + "\x01x\n", "line 1: a token is printable ASCII", 0},
		{"duplicate", secret + "\n" + secret + " read\n", "line 2: the same token as line 1", 0},
		{"empty", "# nothing\n\n", "no tokens", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			toks, err := api.ParseTokens(p)
			if tc.want == "" {
				if err != nil || toks.Len() != tc.n {
					t.Fatalf("ParseTokens = %d tokens, %v; want %d", toks.Len(), err, tc.n)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("ParseTokens = %v, want an error naming %s and saying %q", err, p, tc.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "short-token") {
				t.Errorf("the error quotes a token: %v", err)
			}
		})
	}
	toks, err := api.ReadTokens(strings.NewReader(adminToken + "\n" + readToken + " read\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tok  string
		role api.Role
		line int
	}{
		{adminToken, api.RoleAdmin, 1}, {readToken, api.RoleRead, 2}, {wrongToken, api.RoleNone, 0},
		{"", api.RoleNone, 0}, {adminToken[:len(adminToken)-1], api.RoleNone, 0}, {adminToken + "x", api.RoleNone, 0},
	} {
		if role, line := toks.Check(tc.tok); role != tc.role || line != tc.line {
			t.Errorf("Check(%q) = %v, %d; want %v, %d", tc.tok, role, line, tc.role, tc.line)
		}
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		name, method, path, auth string
		status                   int
	}{
		{"no_token", "GET", "/v1/agents", "", 401},
		{"wrong_token", "GET", "/v1/agents", "Bearer " + wrongToken, 401},
		{"basic_scheme", "GET", "/v1/agents", "Basic " + adminToken, 401},
		{"token_without_scheme", "GET", "/v1/agents", adminToken, 401},
		{"empty_bearer", "GET", "/v1/agents", "Bearer ", 401},
		{"admin", "GET", "/v1/agents", "Bearer " + adminToken, 200},
		{"lowercase_bearer", "GET", "/v1/agents", "bearer " + adminToken, 200},
		{"reader_get", "GET", "/v1/agents", "Bearer " + readToken, 200},
		{"reader_head", "HEAD", "/v1/agents", "Bearer " + readToken, 200},
		{"reader_post", "POST", "/v1/agents", "Bearer " + readToken, 403},
		{"reader_delete", "DELETE", "/v1/agents/x", "Bearer " + readToken, 403},
		{"reader_clear", "POST", "/v1/agents/x/clear", "Bearer " + readToken, 403},
		{"reader_reference", "POST", "/v1/references", "Bearer " + readToken, 403},
		{"unknown_path_anonymous", "GET", "/v1/nothing", "", 401},
		{"unknown_path", "GET", "/v1/nothing", "Bearer " + readToken, 404},
		{"metrics_anonymous", "GET", "/metrics", "", 401},
		{"metrics_reader", "GET", "/metrics", "Bearer " + readToken, 200},
		{"healthz_anonymous", "GET", "/healthz", "", 200},
		{"summary_anonymous", "GET", "/v1/summary", "", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.url+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, resp.StatusCode, b, tc.status)
			}
			if tc.status >= 400 && tc.method != "HEAD" {
				reply{resp.StatusCode, resp.Header, string(b)}.errorField(t)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("a 401 without WWW-Authenticate")
			}
		})
	}
	// The agents' push goes to the engine, with their own token, never
	// checked against the API's.
	r := e.must(200, "POST", "/v1/push/web-1/challenge", "agent-push-token-0123456789", nil)
	if r.body != `{"engine":"push"}` || e.engine.pushAuth[0] != "Bearer agent-push-token-0123456789" {
		t.Errorf("push: %s, the engine saw %q", r.body, e.engine.pushAuth)
	}
}

// TestTokensNeverLogged makes requests with good, bad and near-miss
// tokens, in every place a client might put one, and looks for each token
// in the log and in every reply.
func TestTokensNeverLogged(t *testing.T) {
	e := newEnv(t, nil)
	nearMiss := adminToken[:len(adminToken)-1] + "X"
	tokens := []string{adminToken, readToken, wrongToken, nearMiss}
	var replies []string
	for _, tok := range tokens {
		for _, req := range []struct{ method, path string }{
			{"GET", "/v1/agents"}, {"POST", "/v1/agents"}, {"GET", "/v1/agents/nope"}, {"DELETE", "/v1/agents/nope"},
			{"GET", "/metrics"}, {"PUT", "/v1/summary"}, {"GET", "/v1/nothing"},
		} {
			replies = append(replies, e.do(req.method, req.path, tok, `{"name":"x"}`).body)
		}
		replies = append(replies, e.do("GET", "/v1/agents", "", nil).body)
		// A token in the wrong header or scheme is refused and not echoed.
		req, _ := http.NewRequest("GET", e.url+"/v1/agents", nil)
		req.Header.Set("Authorization", "Token "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		replies = append(replies, string(b))
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "status=401") || !strings.Contains(logs, "status=200") || !strings.Contains(logs, "status=403") {
		t.Fatalf("the log does not hold the requests:\n%s", logs)
	}
	if !strings.Contains(logs, `who="admin token (line 2)"`) || !strings.Contains(logs, `who="read token (line 4)"`) {
		t.Errorf("the log does not say which token (by line):\n%s", logs)
	}
	for _, tok := range tokens {
		for _, part := range []string{tok, tok[:12], tok[len(tok)-12:]} {
			if strings.Contains(logs, part) {
				t.Errorf("the log holds (part of) a token %q:\n%s", part, logs)
			}
			for _, r := range replies {
				if strings.Contains(r, part) {
					t.Errorf("a reply holds (part of) a token %q: %s", part, r)
				}
			}
		}
	}
}

func TestAgentLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	ak := akPEM(t)
	ref := referenceYAML(t, map[string]string{"/usr/bin/app": sum("app")})
	r := e.must(201, "POST", "/v1/references", adminToken, api.ReferenceRequest{Name: "prod", Body: ref})
	if r.header.Get("Location") != "/v1/references/prod" {
		t.Errorf("Location = %q", r.header.Get("Location"))
	}
	r = e.must(201, "POST", "/v1/agents", adminToken, map[string]any{"name": "web-1", "url": "http://127.0.0.1:9", "ak": ak, "reference": "prod", "interval": "2s"})
	var a api.Agent
	r.json(t, &a)
	if a.Name != "web-1" || a.State != fleet.Pending || time.Duration(a.Interval) != 2*time.Second || !slices.Equal(a.PCRs, []int{23}) || !slices.Equal(a.Banks, []string{"sha256"}) || a.PushToken != "" {
		t.Errorf("added agent = %+v", a)
	}
	e.must(201, "POST", "/v1/agents", adminToken, api.AgentSpec{Name: "db-1", URL: "https://db-1:8443", AgentCA: caPEM(t), AK: ak, PCRs: []int{16, 23}, Banks: []string{"sha384", "sha256"}})
	if got := e.engine.wokenNames(); !slices.Equal(got, []string{"web-1", "db-1"}) {
		t.Errorf("woken %v, want web-1 and db-1", got)
	}
	r = e.must(409, "POST", "/v1/agents", adminToken, api.AgentSpec{Name: "web-1", URL: "http://x:1", AK: ak})
	if _, f := r.errorField(t); f != "name" {
		t.Errorf("duplicate: field %q, want name", f)
	}

	// Make web-1 untrusted, as an attestation would.
	claimed, err := e.store.Claim(context.Background(), "test", e.now.Add(time.Minute), time.Minute, 10)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("Claim = %d agents, %v", len(claimed), err)
	}
	for _, c := range claimed {
		if c.Name != "web-1" {
			continue
		}
		findings := `[{"record":3,"kind":"file","path":"/usr/bin/app","sha256":"` + sum("evil") + `","reason":"changed","problem":"digest not allowed"}]`
		if err := e.store.SaveResult(context.Background(), fleet.Result{AgentID: c.ID, Version: c.Version, Owner: "test", At: e.now.Add(time.Minute),
			Status: fleet.Untrusted, Reason: "1 measurement not approved by prod", Findings: []byte(findings),
			Checks: []byte(`[{"name":"signature","passed":true,"detail":"RSASSA"}]`), NextDue: e.now.Add(2 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}

	var list []api.Agent
	e.must(200, "GET", "/v1/agents", readToken, nil).json(t, &list)
	if len(list) != 2 {
		t.Fatalf("list = %+v", list)
	}
	for _, a := range list {
		if a.AK != "" || a.AgentCA != "" || a.Findings != nil || a.Checks != nil {
			t.Errorf("a list carries an agent's AK, CA or findings: %+v", a)
		}
	}
	e.must(200, "GET", "/v1/agents?state=untrusted", readToken, nil).json(t, &list)
	if len(list) != 1 || list[0].Name != "web-1" || list[0].Reason != "1 measurement not approved by prod" || list[0].LastPoll.IsZero() {
		t.Errorf("state=untrusted: %+v", list)
	}
	e.must(200, "GET", "/v1/agents?name=db", readToken, nil).json(t, &list)
	if len(list) != 1 || list[0].Name != "db-1" {
		t.Errorf("name=db: %+v", list)
	}
	e.must(200, "GET", "/v1/agents?state=trusted", readToken, nil).json(t, &list)
	if len(list) != 0 || !strings.HasPrefix(e.do("GET", "/v1/agents?state=trusted", readToken, nil).body, "[]") {
		t.Errorf("state=trusted: %+v, want an empty array", list)
	}
	r = e.must(400, "GET", "/v1/agents?state=fine", readToken, nil)
	if msg, f := r.errorField(t); f != "state" || !strings.Contains(msg, "compromised") {
		t.Errorf("state=fine: %q field %q", msg, f)
	}
	if _, f := e.must(400, "GET", "/v1/agents?colour=red", readToken, nil).errorField(t); f != "colour" {
		t.Errorf("unknown query parameter: field %q", f)
	}
	var sm api.Summary
	e.must(200, "GET", "/v1/summary", readToken, nil).json(t, &sm)
	if sm.Agents != 2 || sm.States[fleet.Untrusted] != 1 || sm.States[fleet.Pending] != 1 || len(sm.States) != 6 {
		t.Errorf("summary = %+v", sm)
	}

	// One agent: its last result.
	var one api.Agent
	e.must(200, "GET", "/v1/agents/web-1", readToken, nil).json(t, &one)
	if one.AK != ak || !strings.Contains(string(one.Findings), "digest not allowed") || !strings.Contains(string(one.Checks), "signature") {
		t.Errorf("GET web-1 = %+v", one)
	}
	e.must(404, "GET", "/v1/agents/nobody", readToken, nil)
	e.must(404, "GET", "/v1/agents/bad%20name", readToken, nil)

	// Change it: the interval; the state stays.
	e.must(200, "PUT", "/v1/agents/web-1", adminToken, api.AgentSpec{URL: "http://127.0.0.1:9", AK: ak, Reference: "prod", Interval: api.Duration(5 * time.Second)}).json(t, &one)
	if time.Duration(one.Interval) != 5*time.Second || one.State != fleet.Untrusted {
		t.Errorf("after PUT: %+v", one)
	}
	if _, f := e.must(400, "PUT", "/v1/agents/web-1", adminToken, api.AgentSpec{Name: "web-2", URL: "http://127.0.0.1:9", AK: ak}).errorField(t); f != "name" {
		t.Errorf("rename: field %q", f)
	}
	e.must(404, "PUT", "/v1/agents/nobody", adminToken, api.AgentSpec{URL: "http://127.0.0.1:9", AK: ak})

	// Clear: pending again, recorded with who and why, the engine woken.
	e.must(200, "POST", "/v1/agents/web-1/clear", adminToken, api.ClearRequest{Reason: "reimaged"}).json(t, &one)
	if one.State != fleet.Pending {
		t.Errorf("after clear: %s", one.State)
	}
	var hist []api.Event
	e.must(200, "GET", "/v1/agents/web-1/history", readToken, nil).json(t, &hist)
	if len(hist) < 2 || hist[0].Event != "clear" || hist[0].OldState != fleet.Untrusted || hist[0].NewState != fleet.Pending ||
		hist[0].Reason != "cleared by admin token (line 2): reimaged" || !strings.Contains(string(hist[1].Findings), "digest not allowed") {
		t.Errorf("history = %+v", hist)
	}
	e.must(200, "GET", "/v1/agents/web-1/history?limit=1", readToken, nil).json(t, &hist)
	if len(hist) != 1 {
		t.Errorf("limit=1: %d entries", len(hist))
	}
	e.must(400, "GET", "/v1/agents/web-1/history?limit=0", readToken, nil)
	e.must(404, "GET", "/v1/agents/nobody/history", readToken, nil)
	e.must(200, "GET", "/v1/agents/web-1", readToken, nil).json(t, &one)
	if len(one.Events) == 0 || one.Events[0].Event != "clear" {
		t.Errorf("GET web-1: events %+v, want the clear first", one.Events)
	}
	e.must(200, "POST", "/v1/agents/db-1/clear", adminToken, nil) // no body: no reason
	e.must(404, "POST", "/v1/agents/nobody/clear", adminToken, nil)
	e.must(400, "POST", "/v1/agents/db-1/clear", adminToken, map[string]string{"reason": "two\nlines"})
	e.must(400, "POST", "/v1/agents/db-1/clear", adminToken, map[string]string{"reason": strings.Repeat("x", api.MaxReason+1)})
	if got := e.engine.wokenNames(); !slices.Equal(got, []string{"web-1", "db-1", "web-1", "web-1", "db-1"}) {
		t.Errorf("woken %v", got)
	}

	// Remove.
	r = e.must(204, "DELETE", "/v1/agents/db-1", adminToken, nil)
	if r.body != "" {
		t.Errorf("204 with a body %q", r.body)
	}
	e.must(404, "DELETE", "/v1/agents/db-1", adminToken, nil)
	e.must(404, "GET", "/v1/agents/db-1", readToken, nil)
	r = e.must(405, "PATCH", "/v1/agents/web-1", adminToken, nil)
	if r.header.Get("Allow") == "" {
		t.Error("405 without Allow")
	}
	r.errorField(t)
}

func TestAddAgentRefusals(t *testing.T) {
	e := newEnv(t, nil)
	ak := akPEM(t)
	e.must(201, "POST", "/v1/references", adminToken, api.ReferenceRequest{Name: "prod", Body: referenceYAML(t, map[string]string{"/a": sum("a")})})
	ok := func() map[string]any { return map[string]any{"name": "a", "url": "http://h:1", "ak": ak} }
	with := func(k string, v any) map[string]any { m := ok(); m[k] = v; return m }
	without := func(k string) map[string]any { m := ok(); delete(m, k); return m }
	for _, tc := range []struct {
		name  string
		body  any
		field string
		want  string
	}{
		{"bad_name", with("name", "a b"), "name", "A-Z a-z 0-9"},
		{"dotdot", with("name", ".."), "name", ""},
		{"long_name", with("name", strings.Repeat("a", 129)), "name", ""},
		{"no_url", without("url"), "url", "required"},
		{"ftp", with("url", "ftp://h/"), "url", "http or https"},
		{"no_host", with("url", "http:///x"), "url", "no host"},
		{"query", with("url", "http://h:1/?x=1"), "url", "without query"},
		{"userinfo", with("url", "http://u:p@h:1"), "url", "user information"},
		{"push_with_url", with("push", true), "url", "pushes"},
		{"ca_on_http", with("agent_ca", caPEM(t)), "agent_ca", "https"},
		{"ca_garbage", map[string]any{"name": "a", "url": "https://h:1", "ak": ak, "agent_ca": "not pem"}, "agent_ca", "no PEM certificate"},
		{"ca_is_a_key", map[string]any{"name": "a", "url": "https://h:1", "ak": ak, "agent_ca": ak}, "agent_ca", "PUBLIC KEY"},
		{"no_ak", without("ak"), "ak", "required"},
		{"ak_garbage", with("ak", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), "ak", ""},
		{"ak_and_azure", with("azure", true), "ak", "not both"},
		{"vm_id_without_azure", with("vm_id", "01234567-89ab-cdef-0123-456789abcdef"), "vm_id", "azure"},
		{"vm_id_not_guid", map[string]any{"name": "a", "url": "http://h:1", "azure": true, "vm_id": "vm1"}, "vm_id", "GUID"},
		{"unknown_reference", with("reference", "staging"), "reference", `no reference named "staging"`},
		{"pcr_24", with("pcrs", []int{23, 24}), "pcrs", "0 to 23"},
		{"pcr_negative", with("pcrs", []int{-1}), "pcrs", ""},
		{"pcr_twice", with("pcrs", []int{23, 23}), "pcrs", "twice"},
		{"pcr_string", with("pcrs", "23"), "pcrs", "an array"},
		{"bank_md5", with("banks", []string{"md5"}), "banks", "unknown PCR bank"},
		{"bank_twice", with("banks", []string{"sha256", "sha256"}), "banks", "twice"},
		{"sha1_alone", with("banks", []string{"sha1"}), "banks", "sha1 alone"},
		{"interval_short", with("interval", "999ms"), "interval", "1s"},
		{"interval_long", with("interval", "25h"), "interval", "24h"},
		{"interval_ns_number", with("interval", 60), "interval", "60ns"},
		{"interval_word", with("interval", "often"), "interval", "duration"},
		{"interval_bool", with("interval", true), "interval", "duration"},
		{"unknown_field", with("colour", "red"), "colour", "unknown field"},
		{"push_token_hash_field", with("push_token_hash", strings.Repeat("0", 64)), "push_token_hash", "unknown field"},
		{"name_number", with("name", 7), "name", "a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.must(400, "POST", "/v1/agents", adminToken, tc.body)
			msg, field := r.errorField(t)
			if field != tc.field || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q field %q; want field %q saying %q", msg, field, tc.field, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, body, want string }{
		{"empty", "", "empty"},
		{"not_json", "{name: a}", "not JSON"},
		{"cut_short", `{"name": "a"`, "cut short"},
		{"two_values", `{"name":"a","url":"http://h:1","ak":""} {}`, "more than one JSON value"},
		{"array", `[]`, "want a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, _ := e.must(400, "POST", "/v1/agents", adminToken, tc.body).errorField(t)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want %q", msg, tc.want)
			}
		})
	}
	if ags, err := e.store.ListAgents(context.Background(), fleet.Filter{}); err != nil || len(ags) != 0 {
		t.Errorf("refused requests stored %d agents (%v)", len(ags), err)
	}
	if n := len(e.engine.wokenNames()); n != 0 {
		t.Errorf("refused requests woke the engine %d times", n)
	}
	// An interval as a number of nanoseconds, as time.Duration marshals.
	e.must(201, "POST", "/v1/agents", adminToken, with("interval", int64(90*time.Second)))
	e.must(201, "POST", "/v1/agents", adminToken, map[string]any{"name": "azure-1", "url": "http://h:1", "azure": true, "vm_id": "01234567-89AB-cdef-0123-456789abcdef"})
}

func TestBodyLimits(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.MaxBody = 4 << 10; o.MaxReference = 8 << 10 })
	big := map[string]any{"name": "a", "url": "http://h:1", "ak": strings.Repeat("A", 5<<10)}
	msg, _ := e.must(413, "POST", "/v1/agents", adminToken, big).errorField(t)
	if !strings.Contains(msg, "larger than 4096 bytes") {
		t.Errorf("413: %q", msg)
	}
	e.must(413, "PUT", "/v1/agents/a", adminToken, big)
	e.must(413, "POST", "/v1/agents/a/clear", adminToken, api.ClearRequest{Reason: strings.Repeat("r", 5<<10)})
	ref := api.ReferenceRequest{Name: "big", Body: "version: 1\n# " + strings.Repeat("x", 9<<10) + "\n"}
	e.must(413, "POST", "/v1/references", adminToken, ref)
	// A reference under its own limit passes the agents' limit.
	many := map[string]string{}
	for i := range 60 {
		many[fmt.Sprintf("/usr/lib/app/%03d", i)] = sum(fmt.Sprint(i))
	}
	ref.Body = referenceYAML(t, many)
	if len(ref.Body) < 4<<10 {
		t.Fatalf("the reference has %d bytes, want more than the agents' limit", len(ref.Body))
	}
	e.must(201, "POST", "/v1/references", adminToken, ref)
}

func TestPushAgent(t *testing.T) {
	e := newEnv(t, nil)
	ak := akPEM(t)
	var a api.Agent
	e.must(201, "POST", "/v1/agents", adminToken, api.AgentSpec{Name: "nat-1", AK: ak, Push: true}).json(t, &a)
	if len(a.PushToken) != 64 || !a.Push || a.URL != "" {
		t.Fatalf("push agent = %+v, want a 64-hex push token", a)
	}
	if _, err := hex.DecodeString(a.PushToken); err != nil {
		t.Fatal(err)
	}
	stored, err := e.store.Agent(context.Background(), "nat-1")
	if err != nil {
		t.Fatal(err)
	}
	if stored.PushTokenHash != sum(a.PushToken) {
		t.Errorf("stored hash %q, want the SHA-256 of the token %q", stored.PushTokenHash, sum(a.PushToken))
	}
	// Shown once: never again, neither in GET nor in a list nor in the log.
	for _, p := range []string{"/v1/agents/nat-1", "/v1/agents", "/v1/agents/nat-1/history"} {
		if r := e.must(200, "GET", p, readToken, nil); strings.Contains(r.body, a.PushToken) || strings.Contains(r.body, stored.PushTokenHash) {
			t.Errorf("GET %s shows the push token or its hash: %s", p, r.body)
		}
	}
	// A change keeps the token.
	var b api.Agent
	e.must(200, "PUT", "/v1/agents/nat-1", adminToken, api.AgentSpec{AK: ak, Push: true, Interval: api.Duration(5 * time.Second)}).json(t, &b)
	if b.PushToken != "" {
		t.Error("a change of a pushing agent made a new token")
	}
	if st, _ := e.store.Agent(context.Background(), "nat-1"); st.PushTokenHash != stored.PushTokenHash {
		t.Error("a change of a pushing agent lost its token")
	}
	// Two agents never share a token.
	var c api.Agent
	e.must(201, "POST", "/v1/agents", adminToken, api.AgentSpec{Name: "nat-2", AK: ak, Push: true}).json(t, &c)
	if c.PushToken == a.PushToken || c.PushToken == "" {
		t.Errorf("second token %q", c.PushToken)
	}
	// A polled agent that starts pushing gets a token.
	e.must(201, "POST", "/v1/agents", adminToken, api.AgentSpec{Name: "poll-1", URL: "http://h:1", AK: ak})
	e.must(200, "PUT", "/v1/agents/poll-1", adminToken, api.AgentSpec{AK: ak, Push: true}).json(t, &b)
	if len(b.PushToken) != 64 {
		t.Errorf("poll-1 turned push: token %q", b.PushToken)
	}
	if logs := e.logs.String(); strings.Contains(logs, a.PushToken) || strings.Contains(logs, b.PushToken) {
		t.Errorf("the log holds a push token:\n%s", logs)
	}
}

func TestReferences(t *testing.T) {
	e := newEnv(t, nil)
	v1 := referenceYAML(t, map[string]string{"/usr/bin/app": sum("v1")})
	v2 := referenceYAML(t, map[string]string{"/usr/bin/app": sum("v2")})
	var ref api.Reference
	e.must(201, "POST", "/v1/references", adminToken, api.ReferenceRequest{Name: "prod", Body: v1}).json(t, &ref)
	if ref.Name != "prod" || len(ref.Fingerprint) == 0 || ref.Body != "" {
		t.Errorf("added %+v", ref)
	}
	fp1 := ref.Fingerprint
	if _, f := e.must(409, "POST", "/v1/references", adminToken, api.ReferenceRequest{Name: "prod", Body: v1}).errorField(t); f != "name" {
		t.Errorf("duplicate: field %q", f)
	}
	msg, f := e.must(400, "POST", "/v1/references", adminToken, api.ReferenceRequest{Name: "bad", Body: "version: 1\nfiles:\n  /a: [nothex]\n"}).errorField(t)
	if f != "body" || !strings.Contains(msg, "reference bad") {
		t.Errorf("bad body: %q field %q", msg, f)
	}
	e.must(400, "POST", "/v1/references", adminToken, api.ReferenceRequest{Name: "empty"})
	e.must(400, "POST", "/v1/references", adminToken, api.ReferenceRequest{Name: "a/b", Body: v1})
	e.must(201, "POST", "/v1/agents", adminToken, api.AgentSpec{Name: "web-1", URL: "http://h:1", AK: akPEM(t), Reference: "prod"})

	e.must(200, "PUT", "/v1/references/prod", adminToken, api.ReferenceRequest{Body: v2}).json(t, &ref)
	if ref.Fingerprint == fp1 || ref.Agents != 1 {
		t.Errorf("replaced %+v: the fingerprint must change and one agent use it", ref)
	}
	if !slices.Equal(e.engine.replaced, []string{"prod"}) {
		t.Errorf("the engine re-evaluated %v, want prod", e.engine.replaced)
	}
	e.must(404, "PUT", "/v1/references/staging", adminToken, api.ReferenceRequest{Body: v2})
	e.must(400, "PUT", "/v1/references/prod", adminToken, api.ReferenceRequest{Name: "other", Body: v2})
	if len(e.engine.replaced) != 1 {
		t.Errorf("refused replacements re-evaluated: %v", e.engine.replaced)
	}
	e.must(200, "GET", "/v1/references/prod", readToken, nil).json(t, &ref)
	if ref.Body != v2 {
		t.Errorf("GET prod body = %q, want the replacement", ref.Body)
	}
	var refs []api.Reference
	e.must(200, "GET", "/v1/references", readToken, nil).json(t, &refs)
	if len(refs) != 1 || refs[0].Body != "" || refs[0].Agents != 1 {
		t.Errorf("list = %+v", refs)
	}
	e.must(404, "GET", "/v1/references/staging", readToken, nil)

	// The engine failing to re-evaluate is said; the reference is stored.
	e.engine.failRef = errors.New("store gone")
	msg, _ = e.must(500, "PUT", "/v1/references/prod", adminToken, api.ReferenceRequest{Body: v1}).errorField(t)
	if !strings.Contains(msg, "stored, but re-evaluating") || !strings.Contains(msg, "store gone") {
		t.Errorf("500: %q", msg)
	}
}

func TestClient(t *testing.T) {
	e := newEnv(t, nil)
	c := &api.Client{Base: e.url + "/", Token: adminToken}
	ctx := context.Background()
	if _, err := c.AddReference(ctx, "prod", []byte(referenceYAML(t, map[string]string{"/a": sum("a")}))); err != nil {
		t.Fatal(err)
	}
	a, err := c.AddAgent(ctx, api.AgentSpec{Name: "web-1", URL: "http://h:1", AK: akPEM(t), Reference: "prod"})
	if err != nil || a.State != fleet.Pending {
		t.Fatalf("AddAgent = %+v, %v", a, err)
	}
	_, err = c.AddAgent(ctx, api.AgentSpec{Name: "web-2", URL: "http://h:1", AK: "junk"})
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != 400 || se.Field != "ak" || !strings.Contains(err.Error(), "400 Bad Request: ak:") {
		t.Errorf("bad AK: %v", err)
	}
	list, err := c.ListAgents(ctx, "pending", "web")
	if err != nil || len(list) != 1 {
		t.Errorf("ListAgents = %v, %v", list, err)
	}
	if _, err := c.Agent(ctx, "nobody"); !errors.As(err, &se) || se.Status != 404 || !strings.Contains(se.Message, `no agent named "nobody"`) {
		t.Errorf("Agent(nobody) = %v", err)
	}
	if err := (&api.Client{Base: e.url, Token: readToken}).RemoveAgent(ctx, "web-1"); !errors.As(err, &se) || se.Status != 403 {
		t.Errorf("a reader's remove: %v", err)
	}
	if err := c.RemoveAgent(ctx, "web-1"); err != nil {
		t.Errorf("RemoveAgent: %v", err)
	}
	// Nobody listening.
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	_, err = (&api.Client{Base: srv.URL, Token: adminToken}).ListAgents(ctx, "", "")
	if !errors.Is(err, api.ErrUnreachable) || strings.Contains(err.Error(), adminToken) {
		t.Errorf("unreachable: %v", err)
	}
	// Something that is not the API.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "<html>bad gateway</html>", http.StatusBadGateway)
	}))
	defer other.Close()
	_, err = (&api.Client{Base: other.URL, Token: adminToken}).ListAgents(ctx, "", "")
	if !errors.As(err, &se) || se.Status != 502 || !strings.Contains(se.Message, "bad gateway") {
		t.Errorf("a proxy's error: %v", err)
	}
}

func TestHealthz(t *testing.T) {
	e := newEnv(t, nil)
	var h map[string]string
	e.must(200, "GET", "/healthz", "", nil).json(t, &h)
	if h["status"] != "ok" {
		t.Errorf("healthz = %v", h)
	}
	e.must(405, "POST", "/healthz", "", nil)
	e.store.Close()
	msg, _ := e.must(503, "GET", "/healthz", "", nil).errorField(t)
	if strings.Contains(msg, "sql") {
		t.Errorf("an anonymous health check is told the store's error: %q", msg)
	}
	if !strings.Contains(e.logs.String(), "health check") {
		t.Error("a failed health check is not logged")
	}
}

// An agent whose AK is enrolled: ek_ca and ak_ca hold CA certificates
// (real ones: Google's EK root, a vendor's from Keylime's store), exclude a
// pinned AK, azure and push, and are shown with the agent; a leaf
// certificate is not a CA. The enroll route is for enrolled agents.
func TestEnrolledAgentSpec(t *testing.T) {
	e := newEnv(t, nil)
	read := func(p string) string {
		b, err := os.ReadFile("../../attest/enroll/testdata/ek/" + p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ca := read("keylime/STM_RSA_RT.pem") + read("go-tpm-tools/tpm_ek_root_1.pem")
	add := func(body map[string]any) reply { return e.do("POST", "/v1/agents", adminToken, body) }
	r := add(map[string]any{"name": "e", "url": "http://127.0.0.1:9", "ek_ca": ca})
	if r.status != 201 {
		t.Fatalf("add with ek_ca: %d %s", r.status, r.body)
	}
	var a api.Agent
	e.must(200, "GET", "/v1/agents/e", adminToken, nil).json(t, &a)
	if a.EKCA != ca || a.Enrollment != nil || a.AK != "" {
		t.Errorf("GET: ek_ca %d bytes, enrollment %+v, ak %q", len(a.EKCA), a.Enrollment, a.AK)
	}
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"name": "x", "url": "http://127.0.0.1:9", "ek_ca": ca, "ak": akPEM(t)}, "ek_ca"},
		{map[string]any{"name": "x", "url": "http://127.0.0.1:9", "ak_ca": ca, "azure": true}, "ek_ca"},
		{map[string]any{"name": "x", "push": true, "ek_ca": ca}, "ek_ca"},
		{map[string]any{"name": "x", "url": "http://127.0.0.1:9", "ek_ca": read("go-tpm-tools/uca_tpm_rsa_enc_cert.pem")}, "ek_ca"},
		{map[string]any{"name": "x", "url": "http://127.0.0.1:9", "ak_ca": "not PEM"}, "ak_ca"},
	} {
		r := add(tc.body)
		if _, field := r.errorField(t); r.status != 400 || field != tc.field {
			t.Errorf("add %v: %d %s, want 400 on %s", tc.body, r.status, r.body, tc.field)
		}
	}
	e.must(400, "POST", "/v1/agents/e/enroll", adminToken, map[string]string{"reason": "new\rboard"})
	e.must(200, "POST", "/v1/agents/e/enroll", adminToken, map[string]string{"reason": "new board"})
	e.must(403, "POST", "/v1/agents/e/enroll", readToken, nil)
	e.must(404, "POST", "/v1/agents/nobody/enroll", adminToken, nil)
	e.must(201, "POST", "/v1/agents", adminToken, map[string]any{"name": "p", "url": "http://127.0.0.1:9", "ak": akPEM(t)})
	e.must(409, "POST", "/v1/agents/p/enroll", adminToken, nil)
	h, err := e.store.History(context.Background(), "e", 1)
	if err != nil || len(h) != 1 || h[0].Event != fleet.EventEnroll || !strings.Contains(h[0].Reason, "new board") {
		t.Errorf("history: %+v %v", h, err)
	}
}
