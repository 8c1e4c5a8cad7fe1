package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/internal/testtpm"
)

// The fleet verifier trusts a new machine with nothing but its vendor's
// CA: rimon fleet add --ek-ca enrolls the AK of rimon watch --listen on a
// swtpm with EK certificates, rimon fleet show says which path vouched,
// rimon fleet enroll enrolls it again on request; an agent added with a
// CA that did not sign its EK certificate is invalid, the step named.
func TestFleetEnrollEKCA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a verifier and an agent on swtpm")
	}
	p := testtpm.StartSwtpmEK(t)
	dir := t.TempDir()
	mustRimon(t, "provision", "--tpm", p.Spec)
	a := startWatchOn(t, p.Spec, filepath.Join(dir, "agent"))
	v := startVerifier(t, filepath.Join(dir, "verifier"))

	out := v.mustFleet("add", "m", "--agent", a.url, "--ek-ca", p.RootCA, "--ek-ca", p.IssuerCA, "--interval", "1s")
	if !strings.Contains(out, "added m (pending)") {
		t.Errorf("rimon fleet add --ek-ca: %q", out)
	}
	v.mustFleet("wait", "m", "--state", "trusted", "--timeout", "60s")
	show := v.mustFleet("show", "m")
	for _, want := range []string{"vouched for by a TPM vendor CA through the EK certificate at NV 0x01C00002 and credential activation (ek-activation)",
		"chain of trust of the AK:", "vendor CA", "credential activation", "enroll "} {
		if !strings.Contains(show, want) {
			t.Errorf("rimon fleet show m lacks %q:\n%s", want, show)
		}
	}

	out = v.mustFleet("enroll", "m", "--reason", "new motherboard")
	if !strings.Contains(out, "m: pending, enrolled again") {
		t.Errorf("rimon fleet enroll: %q", out)
	}
	v.mustFleet("wait", "m", "--state", "trusted", "--timeout", "60s")
	if hist := v.mustFleet("history", "m"); strings.Count(hist, "enroll ") < 3 || !strings.Contains(hist, "new motherboard") {
		t.Errorf("rimon fleet history m: two enrollments and the request between them, want:\n%s", hist)
	}

	// --ek-ca with --ak: a usage error.
	if r := v.fleet("add", "x", "--agent", a.url, "--ek-ca", p.RootCA, "--ak", p.RootCA); r.code != exitUsage {
		t.Errorf("--ek-ca with --ak: exit %d\n%s", r.code, r.stderr)
	}
	// A CA that did not sign the EK certificate.
	other := writeFile(t, filepath.Join(dir, "other-ca.pem"), otherCAPEM(t))
	v.mustFleet("add", "wrong-ca", "--agent", a.url, "--ek-ca", other, "--interval", "1s")
	v.mustFleet("wait", "wrong-ca", "--state", "invalid", "--timeout", "60s")
	if show := v.mustFleet("show", "wrong-ca"); !strings.Contains(show, "enrollment: vendor CA: ") || !strings.Contains(show, "not enrolled yet") {
		t.Errorf("rimon fleet show wrong-ca:\n%s", show)
	}
}

// otherCAPEM is a CA certificate that signed nothing the agent has.
func otherCAPEM(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "another TPM vendor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
