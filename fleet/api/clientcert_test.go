package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
)

// certAuthority issues certificates for the test.
type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T, name string) *certAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &certAuthority{cert, key}
}

func (ca *certAuthority) client(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestClientCertificate: a client certificate the TLS server verified
// against its client CAs is an admin; none falls back to tokens; one from
// another CA is refused by TLS itself.
func TestClientCertificate(t *testing.T) {
	st, err := sqlstore.Open(context.Background(), t.TempDir()+"/v.db")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	toks, err := api.ReadTokens(strings.NewReader(readToken + " read\n"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	ca := newCA(t, "operators CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv := httptest.NewUnstartedServer(api.Handler(api.Options{Store: st, Tokens: toks, ClientCertAdmin: true, Logger: slog.New(slog.NewTextHandler(logs, nil))}))
	srv.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()

	clientWith := func(certs ...tls.Certificate) *http.Client {
		tr := srv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.Certificates = certs
		return &http.Client{Transport: tr}
	}
	body := `{"name":"ref","body":"version: 1\nunlisted: fail\nfiles: {}\n"}`
	post := func(c *http.Client, token string) (int, string, error) {
		req, _ := http.NewRequest("POST", srv.URL+"/v1/references", strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, b, err := post(clientWith(), ""); err != nil || code != 401 {
		t.Errorf("no certificate, no token: %d %s %v; want 401", code, b, err)
	}
	if code, b, err := post(clientWith(), readToken); err != nil || code != 403 {
		t.Errorf("no certificate, a read token: %d %s %v; want 403", code, b, err)
	}
	if code, b, err := post(clientWith(ca.client(t, "alice")), ""); err != nil || code != 201 {
		t.Errorf("a verified certificate: %d %s %v; want 201 (admin)", code, b, err)
	}
	if !strings.Contains(logs.String(), `who="client certificate CN=alice"`) {
		t.Errorf("the log does not name the certificate's subject:\n%s", logs)
	}
	other := newCA(t, "someone else's CA")
	// Go's client sends no certificate that the server's CA list does not
	// name; this one insists.
	mallory := other.client(t, "mallory")
	insisting := clientWith()
	insisting.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &mallory, nil
	}
	code, b, err := post(insisting, "")
	if err == nil {
		t.Errorf("a certificate from another CA was accepted by the TLS server: %d %s", code, b)
	}

	// Without ClientCertAdmin a certificate grants nothing.
	srv2 := httptest.NewUnstartedServer(api.Handler(api.Options{Store: st, Tokens: toks}))
	srv2.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	srv2.StartTLS()
	defer srv2.Close()
	tr := srv2.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{ca.client(t, "alice")}
	resp, err := (&http.Client{Transport: tr}).Get(srv2.URL + "/v1/agents")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("a certificate without ClientCertAdmin: %d, want 401", resp.StatusCode)
	}
}
