package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

type pushClient struct {
	t   *testing.T
	url string
}

func (p *pushClient) post(path, token string, body []byte) (int, map[string]any) {
	p.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.url+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer rsp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(rsp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		p.t.Fatalf("POST %s: %d, not JSON: %q", path, rsp.StatusCode, b)
	}
	return rsp.StatusCode, out
}

// evidenceFor is what the agent answers for a challenge: its own GET
// /v1/evidence with the challenge's nonce and since.
func (m *machine) evidenceFor(ch map[string]any) []byte {
	m.t.Helper()
	rsp, err := http.Get(fmt.Sprintf("%s/v1/evidence?nonce=%s&since=%.0f&bank=sha256", m.srv.URL, ch["nonce"], ch["since"]))
	if err != nil {
		m.t.Fatal(err)
	}
	defer rsp.Body.Close()
	b, _ := io.ReadAll(rsp.Body)
	if rsp.StatusCode != http.StatusOK {
		m.t.Fatalf("agent: %d %s", rsp.StatusCode, b)
	}
	return b
}

func tokenHash(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

// TestPush: the push protocol with a real agent's evidence: tokens
// checked, nonces single use, per agent and expiring, an over-size body
// refused, incremental pushes, and an agent that stops pushing becomes
// unreachable after its interval and the grace period.
func TestPush(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	m.file("/bin/a", "v1")
	f := newFixture(t, Options{MaxEvidence: 64 << 10, PushGrace: 30 * time.Second})
	f.add(fleet.Spec{Name: "a", Push: true, PushTokenHash: tokenHash("token-a"), AK: m.akPEM, Interval: time.Minute})
	f.add(fleet.Spec{Name: "b", Push: true, PushTokenHash: tokenHash("token-b"), AK: m.akPEM, Interval: time.Minute})
	f.add(fleet.Spec{Name: "polled", URL: m.srv.URL, AK: m.akPEM})
	if b := f.poll("b"); b.Status != fleet.Pending {
		t.Errorf("b at once: %s (%s), want pending", b.Status, b.Reason)
	}
	srv := httptest.NewServer(f.e.PushHandler())
	t.Cleanup(srv.Close)
	p := &pushClient{t: t, url: srv.URL}

	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/v1/push/a/challenge", "", http.StatusUnauthorized},
		{"/v1/push/a/challenge", "token-b", http.StatusUnauthorized},
		{"/v1/push/a/challenge", "token-aa", http.StatusUnauthorized},
		// Unknown and polled names answer as a wrong token does: names are not told.
		{"/v1/push/nobody/challenge", "token-a", http.StatusUnauthorized},
		{"/v1/push/polled/challenge", "token-a", http.StatusUnauthorized},
	} {
		if code, body := p.post(c.path, c.token, nil); code != c.want || body["error"] == nil {
			t.Errorf("POST %s with %q: %d %v, want %d and an error", c.path, c.token, code, body, c.want)
		}
	}

	code, ch := p.post("/v1/push/a/challenge", "token-a", nil)
	if code != http.StatusOK || len(ch["nonce"].(string)) != 64 || ch["since"].(float64) != 0 {
		t.Fatalf("challenge: %d %v", code, ch)
	}
	if exp, err := time.Parse(time.RFC3339, ch["expires"].(string)); err != nil || exp.Sub(f.e.o.Now()) != NonceLifetime {
		t.Errorf("expires %v (%v), want two minutes from now", ch["expires"], err)
	}
	ev := m.evidenceFor(ch)
	// Another agent's token with a's nonce: b cannot post for a.
	if code, _ := p.post("/v1/push/b/evidence", "token-b", ev); code != http.StatusConflict {
		t.Errorf("b posting a's nonce: %d, want 409", code)
	}
	code, rep := p.post("/v1/push/a/evidence", "token-a", ev)
	if code != http.StatusOK || rep["state"] != "trusted" || rep["next_in_seconds"].(float64) < 50 {
		t.Fatalf("evidence: %d %v", code, rep)
	}
	if code, _ := p.post("/v1/push/a/evidence", "token-a", ev); code != http.StatusConflict {
		t.Errorf("the same nonce again: %d, want 409", code)
	}

	// Incremental: the next challenge asks for the records after the prefix.
	m.file("/bin/b", "v1")
	m.file("/bin/c", "v2")
	_, ch = p.post("/v1/push/a/challenge", "token-a", nil)
	if ch["since"].(float64) != 1 {
		t.Fatalf("second challenge since %v, want 1", ch["since"])
	}
	if code, rep := p.post("/v1/push/a/evidence", "token-a", m.evidenceFor(ch)); code != http.StatusOK || rep["state"] != "trusted" {
		t.Fatalf("incremental push: %d %v", code, rep)
	}
	a, _ := f.store.Agent(t.Context(), "a")
	if a.Boot.State == nil || !strings.Contains(a.Reason, "3 records") {
		t.Errorf("after two pushes: %s, boot %+v", a.Reason, a.Boot)
	}

	// Expired.
	_, ch = p.post("/v1/push/a/challenge", "token-a", nil)
	ev = m.evidenceFor(ch)
	f.advance(NonceLifetime + time.Second)
	if code, _ := p.post("/v1/push/a/evidence", "token-a", ev); code != http.StatusConflict {
		t.Errorf("an expired nonce: %d, want 409", code)
	}

	// Too large.
	_, ch = p.post("/v1/push/a/challenge", "token-a", nil)
	big := append(m.evidenceFor(ch), bytes.Repeat([]byte("\n"), 128<<10)...)
	if code, _ := p.post("/v1/push/a/evidence", "token-a", big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("128 KiB over a 64 KiB limit: %d, want 413", code)
	}
	if a, _ := f.store.Agent(t.Context(), "a"); a.Status != fleet.Invalid {
		t.Errorf("after an over-size push: %s, want invalid", a.Status)
	}

	// b never pushed: pending until its interval and the grace period
	// have passed since it was registered, then unreachable.
	f.advance(time.Minute)
	if b := f.poll("b"); b.Status != fleet.Unreachable || !strings.Contains(b.Reason, "no evidence pushed") {
		t.Errorf("b after its interval and the grace period: %s (%s), want unreachable", b.Status, b.Reason)
	}
}

// TestPushReboot: a push agent on swtpm restarts (a new boot): its next
// push, the whole new log, is told to come back at once, the reboot is in
// the history, and the push after it is trusted.
func TestPushReboot(t *testing.T) {
	proc := testtpm.StartSwtpm(t)
	tp := openTPM(t, proc.Spec)
	m := newMachine(t, tp)
	m.file("/bin/a", "v1")
	m.file("/bin/b", "v1")
	f := newFixture(t, Options{})
	f.add(fleet.Spec{Name: "a", Push: true, PushTokenHash: tokenHash("tok"), AK: m.akPEM})
	srv := httptest.NewServer(f.e.PushHandler())
	t.Cleanup(srv.Close)
	p := &pushClient{t: t, url: srv.URL}
	push := func() map[string]any {
		t.Helper()
		_, ch := p.post("/v1/push/a/challenge", "tok", nil)
		if ch["since"].(float64) > 0 && m.w.Records() < int(ch["since"].(float64)) {
			ch["since"] = float64(0) // the log is shorter: the whole log
		}
		code, rep := p.post("/v1/push/a/evidence", "tok", m.evidenceFor(ch))
		if code != http.StatusOK {
			t.Fatalf("push: %d %v", code, rep)
		}
		return rep
	}
	if rep := push(); rep["state"] != "trusted" {
		t.Fatalf("first push: %v", rep)
	}
	m.w.Close()
	tp.Close()
	proc.Restart(true)
	tp = openTPM(t, proc.Spec)
	m.pcrs = &switchPCRs{TPM: tp}
	m.path = filepath.Join(t.TempDir(), "boot2.log")
	m.open()
	m.serve(tp, m.path)
	m.file("/bin/a", "v1")
	if rep := push(); rep["next_in_seconds"].(float64) != 0 {
		t.Fatalf("first push of a new boot: %v, want to come back at once", rep)
	}
	if rep := push(); rep["state"] != "trusted" {
		t.Fatalf("push after the reboot: %v", rep)
	}
	if h := f.history("a"); !strings.Contains(strings.Join(h, " "), EventReboot) {
		t.Errorf("history %v: no reboot", h)
	}
}

// TestOnePushAtATime: while one push of an agent is being read (a slow
// body), a second gets 429 with Retry-After; once the first ends, pushing
// works again.
func TestOnePushAtATime(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	m.file("/bin/a", "v1")
	f := newFixture(t, Options{PushGrace: 30 * time.Second})
	f.add(fleet.Spec{Name: "a", Push: true, PushTokenHash: tokenHash("token-a"), AK: m.akPEM, Interval: time.Minute})
	srv := httptest.NewServer(f.e.PushHandler())
	t.Cleanup(srv.Close)
	p := &pushClient{t: t, url: srv.URL}
	_, ch := p.post("/v1/push/a/challenge", "token-a", nil)
	ev := m.evidenceFor(ch)

	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/push/a/evidence", pr)
	req.Header.Set("Authorization", "Bearer token-a")
	first := make(chan int, 1)
	go func() {
		rsp, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- 0
			return
		}
		rsp.Body.Close()
		first <- rsp.StatusCode
	}()
	pw.Write(ev[:10]) // the push has begun: its body is being read
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A body that is no evidence: taken alone it gets 400 and uses no nonce.
		req2, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/push/a/evidence", strings.NewReader("x"))
		req2.Header.Set("Authorization", "Bearer token-a")
		rsp, err := http.DefaultClient.Do(req2)
		if err != nil {
			t.Fatal(err)
		}
		rsp.Body.Close()
		if rsp.StatusCode == http.StatusTooManyRequests && rsp.Header.Get("Retry-After") != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a second push while the first is read: %d, want 429 with Retry-After", rsp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pw.Write(ev[10:])
	pw.Close()
	if code := <-first; code != http.StatusOK {
		t.Fatalf("the first push: %d", code)
	}
	_, ch = p.post("/v1/push/a/challenge", "token-a", nil)
	if code, rep := p.post("/v1/push/a/evidence", "token-a", m.evidenceFor(ch)); code != http.StatusOK {
		t.Errorf("a push after the first ended: %d %v", code, rep)
	}
}
