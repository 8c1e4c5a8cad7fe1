package web_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/rimon-dev/rimon/fleet/web"
)

// TestClientCertificate: with ClientCerts, a client certificate the TLS
// server verified lets a request in; without the option it does not.
func TestClientCertificate(t *testing.T) {
	f := newFixture(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "web test CA"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafT := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "operator"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafT, ca, &leafKey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	tokens, _ := api.ReadTokens(strings.NewReader(adminToken + "\n"))

	for _, allowed := range []bool{true, false} {
		ui := web.Handler(web.Options{Store: f.store, Tokens: tokens, ClientCerts: allowed})
		srv := httptest.NewUnstartedServer(api.Handler(api.Options{Store: f.store, Tokens: tokens, ClientCertAdmin: allowed, UI: ui}))
		srv.TLS = &tls.Config{ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
		srv.StartTLS()
		c := srv.Client()
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}
		resp, err := c.Get(srv.URL + "/ui/agents/web-untrusted")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		want := http.StatusUnauthorized
		if allowed {
			want = http.StatusOK
		}
		if resp.StatusCode != want {
			t.Errorf("ClientCerts %v: %d, want %d", allowed, resp.StatusCode, want)
		}
		if allowed && !strings.Contains(string(b), "client certificate CN=operator") {
			t.Errorf("the page does not name the certificate's subject")
		}
	}
}
