package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest/enroll"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// The fleet path of enrollment, for real: an agent on a swtpm with EK
// certificates (made by swtpm_setup and swtpm-localca), registered with
// nothing but the test CA, is enrolled once and trusted; the API shows
// which path vouched. Its AK replaced on the same TPM (tpm2-tools), it
// is invalid with the reason and stays so, round after round, until an
// operator asks for enrollment again (POST /v1/agents/{name}/enroll),
// after which it is enrolled with the new AK and trusted. An agent
// registered with a CA that did not sign the EK certificate is invalid,
// with the enrollment step named.
func TestEnrollFleet(t *testing.T) {
	ctx := context.Background()
	p := testtpm.StartSwtpmEK(t)
	tp, err := tpm.Open(ctx, p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	m := newMachine(t, tp)
	m.file("/usr/bin/tool", "v1")
	var caPEM []byte
	for _, f := range []string{p.RootCA, p.IssuerCA} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		caPEM = append(caPEM, b...)
	}

	f := newFixture(t, Options{})
	now := time.Now().UTC() // the EK certificates were made just now
	f.now.Store(&now)
	f.add(fleet.Spec{Name: "m", URL: m.srv.URL, EKCA: string(caPEM)})
	f.add(fleet.Spec{Name: "wrong-ca", URL: m.srv.URL, EKCA: otherCA(t)})
	toks, err := api.ReadTokens(strings.NewReader("admin-token-0123456789abcdef\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler(api.Options{Store: f.store, Engine: f.e, Tokens: toks}))
	t.Cleanup(srv.Close)
	c := &api.Client{Base: srv.URL, Token: "admin-token-0123456789abcdef"}
	show := func() *api.Agent {
		t.Helper()
		a, err := c.Agent(ctx, "m")
		if err != nil {
			t.Fatal(err)
		}
		return a
	}

	// Enrolled with nothing but the CA, then trusted.
	if a := f.poll("m"); a.Status != fleet.Trusted || a.Enrollment == nil {
		t.Fatalf("first round: %s (%s), enrollment %s", a.Status, a.Reason, a.Enrollment)
	}
	first := show()
	if first.Enrollment == nil || first.Enrollment.Path != enroll.PathActivation || first.Enrollment.EKIndex == 0 ||
		len(first.Enrollment.Steps) == 0 || first.Enrollment.Steps[0].Name != "vendor CA" || !strings.Contains(first.Enrollment.Certificate, "CERTIFICATE") {
		t.Fatalf("show after enrollment: %+v", first.Enrollment)
	}
	if got := f.history("m"); strings.Join(got, ",") != "enroll,trusted" {
		t.Errorf("history %v, want enroll, trusted", got)
	}
	f.advance(time.Minute)
	if a := f.poll("m"); a.Status != fleet.Trusted || !a.EnrolledAt.Equal(first.Enrollment.Time) {
		t.Fatalf("second round: %s (%s), enrolled at %v (was %v)", a.Status, a.Reason, a.EnrolledAt, first.Enrollment.Time)
	}

	// Another AK in the same TPM: invalid, the reason says so, and the
	// agent is not enrolled again, however many rounds pass.
	tp.Close() // swtpm serves one client at a time
	replaceAK(t, p.Spec)
	tp2, err := tpm.Open(ctx, p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp2.Close() })
	m.serve(tp2, m.path)
	for range 2 {
		f.advance(time.Minute)
		a := f.poll("m")
		if a.Status != fleet.Invalid || !strings.Contains(a.Reason, "identity: ") || !strings.Contains(a.Reason, "the AK is") {
			t.Fatalf("after the AK changed: %s (%s)", a.Status, a.Reason)
		}
		if s := show(); s.Enrollment == nil || s.Enrollment.AKName != first.Enrollment.AKName {
			t.Fatalf("re-enrolled without an operator: %+v", s.Enrollment)
		}
	}

	// An operator's decision: enrolled again, with the new AK, and trusted.
	if a, err := c.Enroll(ctx, "m", "the AK was re-provisioned"); err != nil || a.State != fleet.Pending || a.Enrollment != nil {
		t.Fatalf("enroll: %v, %+v", err, a)
	}
	f.advance(time.Second)
	if a := f.poll("m"); a.Status != fleet.Trusted {
		t.Fatalf("after enrollment again: %s (%s)", a.Status, a.Reason)
	}
	if s := show(); s.Enrollment == nil || s.Enrollment.AKName == first.Enrollment.AKName {
		t.Fatalf("enrolled again: %+v", s.Enrollment)
	}

	// A reboot (swtpm restarted with its state, a new log): the identity
	// is asked for again, is the enrolled one, and the agent stays trusted.
	tp2.Close()
	p.Restart(true)
	tp3, err := tpm.Open(ctx, p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp3.Close() })
	m.pcrs = &switchPCRs{TPM: tp3}
	m.path = filepath.Join(t.TempDir(), "boot2.log")
	m.open()
	m.serve(tp3, m.path)
	m.file("/usr/bin/tool", "v1")
	var asked atomic.Int32
	served := *m.h.Load()
	var counted http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/identity" {
			asked.Add(1)
		}
		served.ServeHTTP(w, r)
	})
	m.h.Store(&counted)
	f.advance(time.Minute)
	if a := f.poll("m"); a.Status != fleet.Trusted || asked.Load() != 1 {
		t.Fatalf("after a reboot: %s (%s), the identity asked for %d times", a.Status, a.Reason, asked.Load())
	}
	if h := f.history("m"); h[len(h)-1] != EventReboot {
		t.Errorf("history %v: want the reboot last", h)
	}

	// A CA that did not sign the EK certificate.
	if a := f.poll("wrong-ca"); a.Status != fleet.Invalid || !strings.HasPrefix(a.Reason, "enrollment: "+enroll.StepEKChain+": ") || a.Enrollment != nil {
		t.Fatalf("a CA that did not sign the EK certificate: %s (%s)", a.Status, a.Reason)
	}
	// An agent that does not answer cannot be enrolled: unreachable, not invalid.
	f.add(fleet.Spec{Name: "gone", URL: "http://" + freeAddr(t), EKCA: string(caPEM)})
	if a := f.poll("gone"); a.Status != fleet.Unreachable || !strings.HasPrefix(a.Reason, "enrollment: ") || a.Enrollment != nil {
		t.Fatalf("an agent that does not answer: %s (%s)", a.Status, a.Reason)
	}
	// The enroll route is for enrolled agents only.
	f.add(fleet.Spec{Name: "pinned", URL: m.srv.URL, AK: m.akPEM})
	if _, err := c.Enroll(ctx, "pinned", ""); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("enroll a pinned agent: %v", err)
	}
}

// replaceAK persists another attestation key (ECC P-256, restricted
// signing) at 0x81000003 with tpm2-tools.
func replaceAK(t *testing.T, spec string) {
	t.Helper()
	tcti := testtpm.TCTI(spec)
	ctxFile := filepath.Join(t.TempDir(), "ak.ctx")
	for _, args := range [][]string{
		{"tpm2_evictcontrol", "-T", tcti, "-C", "o", "-c", "0x81000003"},
		{"tpm2_createprimary", "-T", tcti, "-C", "o", "-G", "ecc256:ecdsa-sha256:null", "-a",
			"fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign", "-c", ctxFile},
		{"tpm2_evictcontrol", "-T", tcti, "-C", "o", "-c", ctxFile, "0x81000003"},
		{"tpm2_flushcontext", "-T", tcti, "-t"}, // no resource manager: the primary stays loaded
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// otherCA is a CA certificate (PEM) that signed nothing the agent has.
func otherCA(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "another TPM vendor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// What an enrolled agent adds to every round: reading the enrolled AK
// from the stored enrollment (a simulator's AK).
func BenchmarkEnrolledAK(b *testing.B) {
	tp := testtpm.Open(b)
	ak, _, err := tp.ProvisionAK(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	rec, err := json.Marshal(enroll.Record{Path: enroll.PathActivation, AKPublic: ak.Public, AKName: hex.EncodeToString(ak.Name.Buffer),
		EKCertificate: make([]byte, 1200), Steps: []enroll.Step{{Name: "vendor CA", Detail: "CN=x"}}})
	if err != nil {
		b.Fatal(err)
	}
	a := &fleet.Agent{Spec: fleet.Spec{EKCA: "x"}, Enrollment: rec}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enrolledAK(a); err != nil {
			b.Fatal(err)
		}
	}
}

// The AK certificate path: a cloud vTPM's AK certificate (here written
// into the simulator's NV at Azure Trusted Launch's index, certified by a
// test root) chains to the agent's ak_ca: enrolled with no activation
// round, and the API says which path vouched.
func TestEnrollFleetAKCert(t *testing.T) {
	ctx := context.Background()
	tp := testtpm.Open(t)
	m := newMachine(t, tp)
	m.file("/usr/bin/tool", "v1")
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cloud AK root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "AK"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	akDER, err := x509.CreateCertificate(rand.Reader, leaf, root, m.ak, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.WriteNV(ctx, tpm.AzureAKCert, akDER); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Options{})
	f.now.Store(&now)
	f.add(fleet.Spec{Name: "vm", URL: m.srv.URL, AKCA: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}))})
	f.add(fleet.Spec{Name: "other-root", URL: m.srv.URL, AKCA: otherCA(t)})
	if a := f.poll("vm"); a.Status != fleet.Trusted {
		t.Fatalf("first round: %s (%s)", a.Status, a.Reason)
	}
	toks, err := api.ReadTokens(strings.NewReader("admin-token-0123456789abcdef\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler(api.Options{Store: f.store, Engine: f.e, Tokens: toks}))
	t.Cleanup(srv.Close)
	a, err := (&api.Client{Base: srv.URL, Token: "admin-token-0123456789abcdef"}).Agent(ctx, "vm")
	if err != nil {
		t.Fatal(err)
	}
	if e := a.Enrollment; e == nil || e.Path != enroll.PathAKCert || e.EKIndex != 0 || len(e.Steps) == 0 || e.Steps[0].Name != "cloud CA" {
		t.Fatalf("show: %+v", a.Enrollment)
	}
	if a := f.poll("other-root"); a.Status != fleet.Invalid || !strings.HasPrefix(a.Reason, "enrollment: "+enroll.StepAKCert+": ") {
		t.Fatalf("another root: %s (%s)", a.Status, a.Reason)
	}
}
