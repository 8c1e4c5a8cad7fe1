package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/fleet/web"
)

const (
	adminToken = "admin-token-0123456789abcdef"
	readToken  = "read-token-0123456789abcdef"
)

// The digests of the untrusted agent's failing file.
const (
	seenDigest    = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	allowedDigest = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	allowedOther  = "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"
)

// Markup fed through the findings, reasons and checks (the escaping test).
const (
	markupPath   = `/etc/<script>document.title="pwned"</script>.conf`
	markupReason = `1 finding(s): file /opt/"><img src=x onerror=alert(1)>: digest not allowed`
	markupDetail = `</td><b id="injected">bold</b>`
)

// agentCase is one agent put in a state and what its pages must show.
type agentCase struct {
	name   string
	state  fleet.Status
	reason string
}

// fixture is a verifier (the API handler with the web view) on a real
// SQLite store, served over TLS, with an agent in each state.
type fixture struct {
	srv    *httptest.Server
	store  *sqlstore.Store
	agents []agentCase
	now    time.Time
}

var bg = context.Background()

func checksJSON(t testing.TB, cs ...verifier.Check) []byte {
	t.Helper()
	b, err := json.Marshal(cs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// quoteChecks are the passed checks of a verified quote, named as the
// verifier library names them.
func quoteChecks() []verifier.Check {
	return []verifier.Check{
		{Name: attest.CheckSignature, Passed: true, Detail: "RSASSA-PKCS1-v1_5 SHA-256 by the pinned AK"},
		{Name: attest.CheckMagic, Passed: true},
		{Name: attest.CheckNonce, Passed: true},
		{Name: attest.CheckSelection, Passed: true, Detail: "sha256:23"},
		{Name: attest.CheckDigest, Passed: true},
		{Name: attest.CheckLog, Passed: true, Detail: "42 records replay to PCR 23"},
	}
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	store, err := sqlstore.Open(bg, filepath.Join(t.TempDir(), "verifier.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := &fixture{store: store, now: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}

	add := func(name string, push bool) *fleet.Agent {
		spec := fleet.Spec{Name: name, PCRs: []int{23}, Banks: []string{"sha256"}, Interval: time.Minute, Push: push, Azure: name == "web-invalid"}
		if !push {
			spec.URL = "https://" + name + ".example.net:8441"
		} else {
			spec.PushTokenHash = strings.Repeat("ab", 32)
		}
		a, err := store.AddAgent(bg, spec, f.now.Add(-2*time.Hour))
		if err != nil {
			t.Fatalf("AddAgent(%s): %v", name, err)
		}
		return a
	}
	save := func(a *fleet.Agent, r fleet.Result) {
		r.AgentID, r.Version = a.ID, a.Version
		if r.NextDue.IsZero() {
			r.NextDue = r.At.Add(time.Minute)
		}
		if err := store.SaveResult(bg, r); err != nil {
			t.Fatalf("SaveResult(%s): %v", a.Name, err)
		}
	}
	at := f.now.Add(-90 * time.Minute)

	// pending: registered, never attested.
	add("web-pending", false)
	f.agents = append(f.agents, agentCase{"web-pending", fleet.Pending, ""})

	// trusted, with a reboot in its history.
	a := add("web-trusted", false)
	reason := "42 records verified, 40 measurements approved"
	save(a, fleet.Result{At: at, Status: fleet.Trusted, Reason: reason, Checks: checksJSON(t, append(quoteChecks(),
		verifier.Check{Name: verifier.CheckReference, Passed: true, Detail: "reference base-image"})...), Findings: []byte("[]"),
		Boot: &fleet.Boot{Known: true, ResetCount: 2, Clock: 1000}, NewBoot: true,
		Events: []fleet.Transition{{Event: "reboot", At: at, Agent: "web-trusted", From: fleet.Pending, To: fleet.Trusted,
			Reason: "the TPM was reset (the quote's resetCount changed): a new boot, whose log was verified from record 0"}}})
	f.agents = append(f.agents, agentCase{"web-trusted", fleet.Trusted, reason})

	// untrusted: a file with a digest the reference does not allow.
	a = add("web-untrusted", false)
	fd := attest.Finding{Measured: attest.Measured{Index: 17, Kind: "file", Path: "/usr/sbin/sshd", SHA256: seenDigest, Reason: "changed"},
		Allowed: []string{allowedDigest, allowedOther}, Problem: "digest not allowed"}
	findings, _ := json.Marshal([]attest.Finding{fd})
	reason = "1 finding(s): " + fd.String()
	save(a, fleet.Result{At: at, Status: fleet.Untrusted, Reason: reason, Findings: findings, Checks: checksJSON(t, append(quoteChecks(),
		verifier.Check{Name: verifier.CheckReference, Passed: true, Detail: "reference base-image"})...)})
	f.agents = append(f.agents, agentCase{"web-untrusted", fleet.Untrusted, reason})

	// invalid: a failed Azure chain step after the passed ones.
	a = add("web-invalid", false)
	reason = "azure: report policy: the SNP report's policy allows debugging"
	save(a, fleet.Result{At: at, Status: fleet.Invalid, Reason: reason, Checks: checksJSON(t,
		verifier.Check{Name: "azure", Passed: true, Detail: "AMD root"},
		verifier.Check{Name: "azure", Passed: true, Detail: "VCEK"},
		verifier.Check{Name: "azure", Passed: true, Detail: "SNP report"},
		verifier.Check{Name: "azure", Passed: true, Detail: "signature and certificate chain"},
		verifier.Check{Name: "azure: report policy", Detail: "the SNP report's policy allows debugging"})})
	f.agents = append(f.agents, agentCase{"web-invalid", fleet.Invalid, reason})

	// compromised: continuity broken within a boot.
	a = add("web-compromised", false)
	save(a, fleet.Result{At: at, Status: fleet.Trusted, Reason: "10 records verified, 10 measurements approved", Checks: checksJSON(t, quoteChecks()...),
		Boot: &fleet.Boot{Known: true, ResetCount: 5, Clock: 5000}})
	a, _ = store.Agent(bg, "web-compromised")
	reason = "continuity: the log's record 3 differs from the one accepted before"
	save(a, fleet.Result{At: at.Add(30 * time.Minute), Status: fleet.Compromised, Reason: reason, Checks: checksJSON(t,
		verifier.Check{Name: attest.CheckSignature, Passed: true}, verifier.Check{Name: attest.CheckNonce, Passed: true},
		verifier.Check{Name: attest.CheckContinuity, Detail: "record 3 differs from the one accepted before"})})
	f.agents = append(f.agents, agentCase{"web-compromised", fleet.Compromised, reason})

	// unreachable: a pushing agent silent past its interval.
	a = add("web-unreachable", true)
	reason = "no push within the interval and its grace (1m30s)"
	save(a, fleet.Result{At: at, Status: fleet.Unreachable, Reason: reason, Failures: 1})
	f.agents = append(f.agents, agentCase{"web-unreachable", fleet.Unreachable, reason})

	// markup in a path, a reason and a check's detail.
	a = add("web-markup", false)
	mf, _ := json.Marshal([]attest.Finding{{Measured: attest.Measured{Index: 3, Kind: "file", Path: markupPath, SHA256: seenDigest},
		Allowed: []string{`"><img src=x onerror=alert(2)>`}, Problem: "digest not allowed"}})
	save(a, fleet.Result{At: at, Status: fleet.Untrusted, Reason: markupReason, Findings: mf, Checks: checksJSON(t,
		verifier.Check{Name: attest.CheckSignature, Passed: true, Detail: markupDetail})})

	tokens, err := api.ReadTokens(strings.NewReader(adminToken + "\n" + readToken + " read\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return f.now }
	ui := web.Handler(web.Options{Store: store, Tokens: tokens, Now: now})
	f.srv = httptest.NewTLSServer(api.Handler(api.Options{Store: store, Tokens: tokens, Now: now, UI: ui}))
	t.Cleanup(f.srv.Close)
	return f
}

// get fetches a path with the given headers (name, value pairs).
func (f *fixture) get(t *testing.T, path string, kv ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	c := f.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp, b.String()
}
