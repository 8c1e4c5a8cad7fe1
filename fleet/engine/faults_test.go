package engine

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// waitFor polls the store until every named agent has left pending, or
// fails the test after a deadline.
func waitFor(t *testing.T, st fleet.Store, names ...string) map[string]*fleet.Agent {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := map[string]*fleet.Agent{}
		for _, n := range names {
			a, err := st.Agent(context.Background(), n)
			if err != nil {
				t.Fatal(err)
			}
			if a.Status != fleet.Pending {
				out[n] = a
			}
		}
		if len(out) == len(names) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents still pending after a minute: have %d of %d", len(out), len(names))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFaults: agents that are down, slow, answer garbage, answer 100 MB
// or 503, answer with another machine's quote (another AK), or replay an
// old answer (another nonce) are unreachable or invalid with the reason,
// each in its own round; the real agent next to them is trusted. The
// engine runs for real (scheduler, workers, SQLite store).
func TestFaults(t *testing.T) {
	m := newMachine(t, testtpm.Open(t))
	m.file("/bin/a", "v1")
	f := newFixture(t, Options{Now: time.Now, Timeout: 2 * time.Second, MaxEvidence: 16 << 20, ClaimEvery: 20 * time.Millisecond, Concurrency: 4})

	serve := func(h http.HandlerFunc) string {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		return s.URL
	}
	// An earlier answer of the real agent, for another nonce.
	old, err := http.Get(m.srv.URL + "/v1/evidence?nonce=" + hex.EncodeToString(newNonce()))
	if err != nil {
		t.Fatal(err)
	}
	oldBody, _ := io.ReadAll(old.Body)
	old.Body.Close()
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := attest.PublicKeyPEM(&other.PublicKey)

	// The real agent behind TLS, its certificate pinned (or another one).
	tlsSrv := httptest.NewTLSServer(m.srv.Config.Handler)
	t.Cleanup(tlsSrv.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}))
	otherCA := selfSigned(t)

	cases := []struct {
		name   string
		url    string
		ak     string
		ca     string
		status fleet.Status
		reason string
	}{
		{"real", m.srv.URL, m.akPEM, "", fleet.Trusted, " verified"},
		{"tls-pinned", tlsSrv.URL, m.akPEM, caPEM, fleet.Trusted, " verified"},
		{"tls-another-CA", tlsSrv.URL, m.akPEM, otherCA, fleet.Unreachable, "certificate"},
		{"down", "http://" + freeAddr(t), m.akPEM, "", fleet.Unreachable, "connection refused"},
		{"slow", serve(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }), m.akPEM, "", fleet.Unreachable, "no answer within"},
		{"garbage", serve(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>hello</html>") }), m.akPEM, "", fleet.Invalid, "evidence"},
		{"huge", serve(func(w http.ResponseWriter, r *http.Request) {
			// A real header and log, then 100 MB.
			rsp, err := http.Get(m.srv.URL + r.URL.String())
			if err != nil {
				return
			}
			io.Copy(w, rsp.Body)
			rsp.Body.Close()
			junk := bytes.Repeat([]byte("\n"), 1<<20)
			for range 100 {
				if _, err := w.Write(junk); err != nil {
					return
				}
			}
		}), m.akPEM, "", fleet.Invalid, "larger than the limit"},
		{"503", serve(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) }), m.akPEM, "", fleet.Unreachable, "503"},
		{"another machines AK", m.srv.URL, string(otherPEM), "", fleet.Invalid, "signature"},
		{"replayed answer", serve(func(w http.ResponseWriter, r *http.Request) { w.Write(oldBody) }), m.akPEM, "", fleet.Invalid, "nonce"},
	}
	var names []string
	for _, c := range cases {
		f.add(fleet.Spec{Name: strings.ReplaceAll(c.name, " ", "-"), URL: c.url, AK: c.ak, AgentCA: c.ca})
		names = append(names, strings.ReplaceAll(c.name, " ", "-"))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.e.Run(ctx) }()
	got := waitFor(t, f.store, names...)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v, want context.Canceled", err)
	}
	for _, c := range cases {
		a := got[strings.ReplaceAll(c.name, " ", "-")]
		t.Logf("%s: %s (%s)", c.name, a.Status, a.Reason)
		if a.Status != c.status || !strings.Contains(a.Reason, c.reason) {
			t.Errorf("%s: %s (%s), want %s with %q", c.name, a.Status, a.Reason, c.status, c.reason)
		}
	}
	// Backoff: an unreachable agent comes back later than its interval.
	if a := got["down"]; a.Failures != 1 || a.NextDue.Sub(a.LastPoll) < a.Interval*9/10 {
		t.Errorf("down: failures %d, next in %v", a.Failures, a.NextDue.Sub(a.LastPoll))
	}
}

// selfSigned is a CA certificate (PEM) nobody signed the test servers with.
func selfSigned(t *testing.T) string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "another CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
