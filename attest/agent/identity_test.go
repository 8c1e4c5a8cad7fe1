package agent_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/enroll"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// ekAgent is an agent on a swtpm with EK certificates.
type ekAgent struct {
	p   *testtpm.EKProcess
	tpm *tpm.TPM
	url string
	cas *enroll.CAPool
}

func startEKAgent(t testing.TB) *ekAgent {
	t.Helper()
	ctx := context.Background()
	p := testtpm.StartSwtpmEK(t)
	tp, err := tpm.Open(ctx, p.Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	if _, _, err := tp.ProvisionAK(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: agent.Handler(agent.HandlerOptions{TPM: tp, LogPath: t.TempDir() + "/log", PCRs: []int{23},
		Banks: []crypto.Hash{crypto.SHA256}, Rate: 1000}), ReadHeaderTimeout: 5 * time.Second}
	go s.Serve(agent.LimitListener(ln, 16, 4))
	t.Cleanup(func() { s.Close() })
	cas, err := enroll.LoadCAPool(p.RootCA, p.IssuerCA)
	if err != nil {
		t.Fatal(err)
	}
	return &ekAgent{p: p, tpm: tp, url: "http://" + ln.Addr().String(), cas: cas}
}

func (a *ekAgent) identity(t *testing.T) *enroll.Identity {
	t.Helper()
	id, err := agent.FetchIdentity(context.Background(), http.DefaultClient, a.url)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Enrollment over HTTP with each of swtpm's EKs: the vendor CA (the
// test's swtpm-localca) vouches for the EK certificate, the TPM releases
// the secret, and the AK vouched for is the one the TPM quotes with.
func TestEnrollOverHTTP(t *testing.T) {
	ctx := context.Background()
	a := startEKAgent(t)
	id := a.identity(t)
	if len(id.EKs) != 2 {
		t.Fatalf("identity has %d EKs, want 2 (RSA 2048 and ECC P-384)", len(id.EKs))
	}
	ak, err := a.tpm.ReadAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint32{0x01C00002, 0x01C00016} {
		res, err := enroll.Enroll(ctx, id, enroll.Options{EKCAs: a.cas, EKIndex: idx}, agent.HTTPActivator(http.DefaultClient, a.url))
		if err != nil {
			t.Fatalf("EK 0x%08X: %v", idx, err)
		}
		if res.Path != enroll.PathActivation || res.EKIndex != idx || !enroll.SameKey(res.AK.Key, ak.Key) {
			t.Errorf("EK 0x%08X: path %s, EK 0x%08X; want %s with the TPM's AK", idx, res.Path, res.EKIndex, enroll.PathActivation)
		}
		if len(res.Steps) < 5 || res.Steps[0].Name != "vendor CA" || res.Steps[len(res.Steps)-1].Name != "AK" {
			t.Errorf("steps %v", res.Steps)
		}
	}
}

func wantRefused(t *testing.T, err error, step, text string) {
	t.Helper()
	var ce *enroll.CheckError
	if !errors.As(err, &ce) || !errors.Is(err, enroll.ErrRefused) || ce.Step != step || !strings.Contains(err.Error(), text) {
		t.Fatalf("Enroll = %v; want refused at step %q with %q", err, step, text)
	}
}

// Each way enrollment must fail, with its reason.
func TestEnrollRefuses(t *testing.T) {
	ctx := context.Background()
	a, b := startEKAgent(t), startEKAgent(t)
	idA, idB := a.identity(t), b.identity(t)
	actA := agent.HTTPActivator(http.DefaultClient, a.url)

	t.Run("CA that did not sign the EK certificate", func(t *testing.T) {
		_, err := enroll.Enroll(ctx, idA, enroll.Options{EKCAs: b.cas}, actA)
		wantRefused(t, err, enroll.StepEKChain, "not in the CA bundle")
	})
	t.Run("EK certificate whose key is not the TPM's EK", func(t *testing.T) {
		both, err := enroll.LoadCAPool(a.p.RootCA, a.p.IssuerCA, b.p.RootCA, b.p.IssuerCA)
		if err != nil {
			t.Fatal(err)
		}
		id := *idA
		id.EKs = []enroll.EKInfo{idA.EKs[0]}
		id.EKs[0].Certificate = idB.EKs[0].Certificate // B's certificate, A's EK
		_, err = enroll.Enroll(ctx, &id, enroll.Options{EKCAs: both}, actA)
		wantRefused(t, err, enroll.StepEK, "is not the key of its EK certificate")
	})
	t.Run("EK certificate and key of another TPM", func(t *testing.T) {
		// Both B's certificate and B's EK public, sent to A: the key
		// matches the certificate, but A's TPM cannot open the credential.
		both, _ := enroll.LoadCAPool(a.p.RootCA, a.p.IssuerCA, b.p.RootCA, b.p.IssuerCA)
		id := *idA
		id.EKs = []enroll.EKInfo{idB.EKs[0]}
		_, err := enroll.Enroll(ctx, &id, enroll.Options{EKCAs: both}, actA)
		wantRefused(t, err, enroll.StepActivation, "did not release the secret")
	})
	t.Run("AK of another TPM with this TPM's EK", func(t *testing.T) {
		id := *idA
		id.AK = idB.AK
		_, err := enroll.Enroll(ctx, &id, enroll.Options{EKCAs: a.cas}, actA)
		wantRefused(t, err, enroll.StepActivation, "did not release the secret")
	})
	t.Run("replayed activation answer", func(t *testing.T) {
		var recorded *enroll.ActivationResponse
		record := func(ctx context.Context, r *enroll.ActivationRequest) (*enroll.ActivationResponse, error) {
			ans, err := actA(ctx, r)
			recorded = ans
			return ans, err
		}
		if _, err := enroll.Enroll(ctx, idA, enroll.Options{EKCAs: a.cas}, record); err != nil {
			t.Fatal(err)
		}
		replay := func(context.Context, *enroll.ActivationRequest) (*enroll.ActivationResponse, error) {
			return recorded, nil
		}
		_, err := enroll.Enroll(ctx, idA, enroll.Options{EKCAs: a.cas}, replay)
		wantRefused(t, err, enroll.StepActivation, "replayed or forged")
	})
	t.Run("a CA certificate as the EK certificate", func(t *testing.T) {
		id := *idA
		id.EKs = []enroll.EKInfo{idA.EKs[0]}
		pemb := readFile(t, a.p.IssuerCA)
		certs, _ := enroll.ParseCertificates(pemb)
		id.EKs[0].Certificate = certs[0].Raw
		_, err := enroll.Enroll(ctx, &id, enroll.Options{EKCAs: a.cas}, actA)
		wantRefused(t, err, enroll.StepEKCert, "CA certificate")
	})
	t.Run("vendor chain not valid at the time", func(t *testing.T) {
		_, err := enroll.Enroll(ctx, idA, enroll.Options{EKCAs: a.cas, Now: func() time.Time { return time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) }}, actA)
		wantRefused(t, err, enroll.StepEKChain, "expired")
	})
}

// The agent's activation endpoint refuses what it cannot use.
func TestActivateEndpoint(t *testing.T) {
	a := startEKAgent(t)
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"nv_index":29360130,"credential":"AAAAAA==","secret":"AAAA"}`, http.StatusUnprocessableEntity},
		{`{"nv_index":1,"credential":"AAAAAA==","secret":"AAAA"}`, http.StatusNotFound},
		{`{"nv_index":29360130,"credential":"AAAAAA==","secret":"AAAA","x":1}`, http.StatusBadRequest},
		{`{"nv_index":29360130}`, http.StatusBadRequest},
		{strings.Repeat(" ", enroll.MaxActivation+1), http.StatusRequestEntityTooLarge},
	} {
		rsp, err := http.Post(a.url+"/v1/activate", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		rsp.Body.Close()
		if rsp.StatusCode != tc.want {
			t.Errorf("POST %.60q = %d, want %d", tc.body, rsp.StatusCode, tc.want)
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testCA is a CA private to a test that certifies AKs, as a cloud's AK CA
// does.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func (ca *testCA) certify(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "AK"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// A cloud vTPM's AK certificate (written here where Azure Trusted Launch
// keeps it, 0x01C101D0) vouches for the AK when it chains to the cloud
// root given: no activation round. A certificate of another key, or one
// the root did not sign, does not; with EK CAs as well, the EK path then
// vouches and says what the AK certificate path refused.
func TestEnrollAKCert(t *testing.T) {
	ctx := context.Background()
	a := startEKAgent(t)
	ak, err := a.tpm.ReadAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cloud := newTestCA(t, "cloud AK root")
	if err := a.tpm.WriteNV(ctx, tpm.AzureAKCert, cloud.certify(t, ak.Key)); err != nil {
		t.Fatal(err)
	}
	id := a.identity(t)
	if len(id.AKCerts) != 1 || id.AKCerts[0].NVIndex != tpm.AzureAKCert {
		t.Fatalf("identity AK certificates %v, want the one at 0x01C101D0", id.AKCerts)
	}
	noActivation := func(context.Context, *enroll.ActivationRequest) (*enroll.ActivationResponse, error) {
		t.Error("activation asked for on the AK certificate path")
		return nil, errors.New("no")
	}
	res, err := enroll.Enroll(ctx, id, enroll.Options{AKCAs: enroll.NewCAPool(cloud.cert)}, noActivation)
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != enroll.PathAKCert || !enroll.SameKey(res.AK.Key, ak.Key) {
		t.Errorf("path %s, want %s with the TPM's AK", res.Path, enroll.PathAKCert)
	}

	other := newTestCA(t, "another root")
	_, err = enroll.Enroll(ctx, id, enroll.Options{AKCAs: enroll.NewCAPool(other.cert)}, noActivation)
	wantRefused(t, err, enroll.StepAKCert, "not in the CA bundle")

	res, err = enroll.Enroll(ctx, id, enroll.Options{AKCAs: enroll.NewCAPool(other.cert), EKCAs: a.cas}, agent.HTTPActivator(http.DefaultClient, a.url))
	if err != nil || res.Path != enroll.PathActivation || len(res.Refused) != 1 {
		t.Errorf("fallback to the EK path: %v, %+v", err, res)
	}

	// The certificate of another key, presented with this AK.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged := *id
	forged.AKCerts = []enroll.NVCert{{NVIndex: tpm.AzureAKCert, Certificate: cloud.certify(t, &key.PublicKey)}}
	_, err = enroll.Enroll(ctx, &forged, enroll.Options{AKCAs: enroll.NewCAPool(cloud.cert)}, noActivation)
	wantRefused(t, err, enroll.StepAKCert, "not the AK the agent quotes with")
}

// What a fleet verifier keeps of an enrollment notices another AK or EK
// later.
func TestEnrollmentRecord(t *testing.T) {
	ctx := context.Background()
	a, b := startEKAgent(t), startEKAgent(t)
	idA, idB := a.identity(t), b.identity(t)
	res, err := enroll.Enroll(ctx, idA, enroll.Options{EKCAs: a.cas}, agent.HTTPActivator(http.DefaultClient, a.url))
	if err != nil {
		t.Fatal(err)
	}
	rec := res.Record()
	if err := rec.Check(a.identity(t)); err != nil {
		t.Errorf("the same agent: %v", err)
	}
	other := *idA
	other.AK = idB.AK
	if err := rec.Check(&other); !errors.Is(err, enroll.ErrIdentityChanged) || !strings.Contains(err.Error(), "the AK is") {
		t.Errorf("another AK: %v", err)
	}
	other = *idA
	other.EKs = idB.EKs
	if err := rec.Check(&other); !errors.Is(err, enroll.ErrIdentityChanged) || !strings.Contains(err.Error(), "EK certificate at NV 0x01C00002") {
		t.Errorf("another EK: %v", err)
	}
}
