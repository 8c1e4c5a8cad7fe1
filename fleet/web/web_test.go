package web_test

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/rimon-dev/rimon/fleet/web"
)

func TestNoCredentialsNoAgentData(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, path string
		kv         []string
	}{
		{"fleet", "/ui/", nil},
		{"agent", "/ui/agents/web-untrusted", nil},
		{"filter", "/ui/?state=untrusted", nil},
		{"bad_token", "/ui/", []string{"Authorization", "Bearer not-a-token-of-the-file"}},
		{"basic", "/ui/", []string{"Authorization", "Basic " + adminToken}},
		{"forged_cookie", "/ui/", []string{"Cookie", web.CookieName + "=v1.AAAA.BBBB"}},
		{"token_as_cookie", "/ui/", []string{"Cookie", web.CookieName + "=" + adminToken}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.get(t, tc.path, tc.kv...)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s: status %d, want 401", tc.path, resp.StatusCode)
			}
			if !strings.Contains(body, `action="/ui/signin"`) {
				t.Errorf("GET %s: no sign-in form in:\n%s", tc.path, body)
			}
			// The page asked for comes back only as where the form leads
			// (what the requester typed); nothing from the store.
			body = regexp.MustCompile(`<input type="hidden" name="next" value="[^"]*">`).ReplaceAllString(body, "")
			for _, a := range append(f.agents, agentCase{name: "web-markup"}) {
				if strings.Contains(body, a.name) {
					t.Errorf("GET %s without credentials shows agent %s", tc.path, a.name)
				}
			}
			if strings.Contains(body, "refresh") && strings.Contains(body, "http-equiv") {
				t.Errorf("the sign-in page refreshes itself")
			}
		})
	}
}

func TestBearerTokenAndHeaders(t *testing.T) {
	f := newFixture(t)
	for _, tok := range []string{adminToken, readToken} {
		resp, body := f.get(t, "/ui/", "Authorization", "Bearer "+tok)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /ui/ with a token: %d\n%s", resp.StatusCode, body)
		}
		for _, a := range f.agents {
			if !strings.Contains(body, `id="agent-`+a.name+`"`) {
				t.Errorf("GET /ui/: no row for %s", a.name)
			}
		}
		if !strings.Contains(body, `<meta http-equiv="refresh" content="30">`) {
			t.Errorf("GET /ui/: no meta refresh")
		}
		h := resp.Header
		for k, want := range map[string]string{
			"Content-Security-Policy": web.ContentSecurityPolicy,
			"X-Frame-Options":         "DENY",
			"Referrer-Policy":         "no-referrer",
			"Cache-Control":           "no-store",
			"X-Content-Type-Options":  "nosniff",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") ||
			strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("CSP %q is not strict", csp)
		}
	}
	// ?refresh=off stops the reload.
	_, body := f.get(t, "/ui/agents/web-trusted?refresh=off", "Authorization", "Bearer "+readToken)
	if strings.Contains(body, `http-equiv="refresh"`) {
		t.Errorf("refresh=off: the page still reloads itself")
	}
	// The style sheet is served to anyone, and is the only style.
	resp, css := f.get(t, "/ui/style.css")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") || !strings.Contains(css, ".state-compromised") {
		t.Errorf("GET /ui/style.css: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The API still wants its token: the UI's cookie does not open it.
	resp, _ = f.get(t, "/v1/agents")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/agents without a token: %d", resp.StatusCode)
	}
}

func TestWorstFirstAndFilter(t *testing.T) {
	f := newFixture(t)
	_, body := f.get(t, "/ui/", "Authorization", "Bearer "+readToken)
	rows := regexp.MustCompile(`<tr id="agent-([^"]+)"`).FindAllStringSubmatch(body, -1)
	var got []string
	for _, r := range rows {
		got = append(got, r[1])
	}
	want := "web-compromised web-invalid web-markup web-untrusted web-unreachable web-pending web-trusted"
	if strings.Join(got, " ") != want {
		t.Errorf("order = %v, want %s", got, want)
	}
	_, body = f.get(t, "/ui/?state=untrusted&name=mark", "Authorization", "Bearer "+readToken)
	rows = regexp.MustCompile(`<tr id="agent-([^"]+)"`).FindAllStringSubmatch(body, -1)
	if len(rows) != 1 || rows[0][1] != "web-markup" {
		t.Errorf("state=untrusted&name=mark: rows %v, want web-markup alone", rows)
	}
	if !strings.Contains(body, `<option value="untrusted" selected>`) || !strings.Contains(body, `value="mark"`) {
		t.Errorf("the filter form does not show the filter")
	}
	resp, _ := f.get(t, "/ui/?state=%3Cb%3E", "Authorization", "Bearer "+readToken)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("state=<b>: %d, want 400", resp.StatusCode)
	}
	for _, name := range []string{"nobody", "no%20such%20name", strings.Repeat("a", 200)} {
		resp, _ = f.get(t, "/ui/agents/"+name, "Authorization", "Bearer "+readToken)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("agent %.20s: %d, want 404", name, resp.StatusCode)
		}
	}
}

// signIn posts the sign-in form and returns the response.
func signIn(t *testing.T, f *fixture, token, next string, kv ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+"/ui/signin", strings.NewReader(url.Values{"token": {token}, "next": {next}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	c := f.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestSession(t *testing.T) {
	f := newFixture(t)
	resp := signIn(t, f, readToken, "/ui/agents/web-invalid", "Origin", f.srv.URL, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/agents/web-invalid" {
		t.Fatalf("sign-in: %d Location %q, want 303 to the page asked for", resp.StatusCode, resp.Header.Get("Location"))
	}
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == web.CookieName {
			c = k
		}
	}
	if c == nil {
		t.Fatal("sign-in set no session cookie")
	}
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" {
		t.Errorf("cookie %+v: want Secure, HttpOnly, SameSite=Strict, Path=/, no Domain", c)
	}
	if strings.Contains(c.Value, readToken) {
		t.Errorf("the cookie holds the token")
	}
	cookie := web.CookieName + "=" + c.Value
	if r, body := f.get(t, "/ui/agents/web-invalid", "Cookie", cookie); r.StatusCode != 200 || !strings.Contains(body, "report policy") {
		t.Fatalf("with the session: %d", r.StatusCode)
	}
	// A changed byte anywhere breaks the signature.
	for i := 3; i < len(c.Value); i += 7 {
		b := []byte(c.Value)
		b[i] ^= 1
		if r, _ := f.get(t, "/ui/", "Cookie", web.CookieName+"="+string(b)); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("cookie with byte %d changed: %d, want 401", i, r.StatusCode)
		}
	}
	// Another verifier with the same tokens takes it; with other tokens not.
	same, _ := api.ReadTokens(strings.NewReader(adminToken + "\n" + readToken + " read\n"))
	other, _ := api.ReadTokens(strings.NewReader(adminToken + "\n"))
	for _, tc := range []struct {
		tokens *api.Tokens
		want   int
	}{{same, 200}, {other, 401}} {
		h := web.Handler(web.Options{Store: f.store, Tokens: tc.tokens, Now: func() time.Time { return f.now }})
		req, _ := http.NewRequest("GET", "/ui/", nil)
		req.Header.Set("Cookie", cookie)
		rec := &recorder{h: http.Header{}}
		h.ServeHTTP(rec, req)
		if rec.code != tc.want {
			t.Errorf("another verifier (%d tokens): %d, want %d", tc.tokens.Len(), rec.code, tc.want)
		}
	}
	// Past its expiry it is refused.
	f.now = f.now.Add(web.DefaultSessionTTL)
	if r, _ := f.get(t, "/ui/", "Cookie", cookie); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("an expired session: %d, want 401", r.StatusCode)
	}
	f.now = f.now.Add(-web.DefaultSessionTTL)

	// Sign-out: cross-site refused; same-site forgets the session.
	req, _ := http.NewRequest("POST", f.srv.URL+"/ui/signout", nil)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if r, err := f.srv.Client().Do(req); err != nil || r.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site sign-out: %v %v, want 403", r.StatusCode, err)
	}
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	c2 := f.srv.Client()
	c2.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r, err := c2.Do(req)
	if err != nil || r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %v %v", r.StatusCode, err)
	}
	if r, _ := f.get(t, "/ui/", "Cookie", cookie); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the session after sign-out: %d, want 401", r.StatusCode)
	}
}

func TestSignInRefused(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, token string
		kv          []string
		want        int
	}{
		{"wrong_token", "wrong-token-0123456789abcdef", nil, http.StatusUnauthorized},
		{"empty", "", nil, http.StatusUnauthorized},
		{"cross_site", adminToken, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"other_origin", adminToken, []string{"Origin", "https://evil.example"}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := signIn(t, f, tc.token, "/ui/", tc.kv...)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("a refused sign-in set %v", resp.Cookies())
			}
		})
	}
}

func TestSignInGoesOnlyUnderUI(t *testing.T) {
	f := newFixture(t)
	for next, want := range map[string]string{
		"/ui/agents/web-trusted?refresh=off": "/ui/agents/web-trusted?refresh=off",
		"https://evil.example/ui/":           "/ui/",
		"//evil.example/ui/":                 "/ui/",
		"/\\evil.example/ui/":                "/ui/",
		"/v1/agents":                         "/ui/",
		"javascript:alert(1)":                "/ui/",
		"/ui/signin":                         "/ui/",
	} {
		resp := signIn(t, f, readToken, next)
		if got := resp.Header.Get("Location"); got != want {
			t.Errorf("next %q: Location %q, want %q", next, got, want)
		}
	}
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(c int) {
	if r.code == 0 {
		r.code = c
	}
}

func TestAgentPage(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name      string
		want, not []string
	}{
		{"web-invalid", []string{"AK vouched for by the Azure SEV-SNP chain", `<ol id="azure"`, "FAILED: report policy"}, []string{"No evidence checked yet"}},
		{"web-untrusted", []string{`<table id="findings"`, seenDigest, allowedDigest, allowedOther, `<table id="checks"`}, []string{"Azure"}},
		{"web-pending", []string{"No evidence checked yet", "No history yet."}, []string{`<table id="findings"`}},
		{"web-unreachable", []string{"pushed by the agent", "(the agent could not be asked)"}, nil},
		{"web-compromised", []string{`<ul id="continuity"`, "<strong>compromise</strong>"}, nil},
		{"web-trusted", []string{`<ul id="continuity"`, "<strong>reboot</strong>"}, nil},
	} {
		resp, body := f.get(t, "/ui/agents/"+tc.name, "Authorization", "Bearer "+readToken)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", tc.name, resp.StatusCode)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: no %q", tc.name, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(body, n) {
				t.Errorf("%s: shows %q", tc.name, n)
			}
		}
	}
}
