package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// startWatchOn runs rimon watch --listen on the TPM spec (already
// provisioned) until it is ready.
func startWatchOn(t *testing.T, spec, dir string) *agentProc {
	t.Helper()
	data := filepath.Join(dir, "data")
	writeFile(t, filepath.Join(data, "app"), "v1")
	polPath := writeFile(t, filepath.Join(dir, "policy.yaml"), "measure:\n  - dir: "+data+"\n")
	a := &agentProc{t: t, log: filepath.Join(dir, "m.log"), stderr: &lockedBuffer{}, done: make(chan error, 1)}
	a.cmd = exec.Command(os.Args[0], "watch", "--tpm", spec, "--policy", polPath, "--log", a.log, "--listen", "127.0.0.1:0")
	a.cmd.Env = append(os.Environ(), "RIMON_AS_MAIN=1", "NOTIFY_SOCKET=")
	a.cmd.Stderr = a.stderr
	a.cmd.Stdout = io.Discard
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.done <- a.cmd.Wait() }()
	t.Cleanup(a.stop)
	a.waitFor("the agent to be ready", func() bool { return strings.Contains(a.stderr.String(), "msg=ready") })
	m := regexp.MustCompile(`msg="serving evidence" url=(http://\S+)/v1/evidence`).FindStringSubmatch(a.stderr.String())
	if m == nil {
		t.Fatalf("the agent did not say where it serves evidence:\n%s", a.stderr.String())
	}
	a.url = m[1]
	return a
}

func tpm2tools(t *testing.T, spec string, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+testtpm.TCTI(spec))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A new machine attested with nothing but its vendor's CA: rimon attest
// --ek-ca enrolls the AK of rimon watch --listen by credential activation,
// then verifies the quote and the log. First with the RSA 2048 EK, then,
// the RSA EK certificate removed, with the ECC P-384 EK of the high range.
func TestAttestEnrollEKCA(t *testing.T) {
	p := testtpm.StartSwtpmEK(t)
	dir := t.TempDir()
	mustRimon(t, "provision", "--tpm", p.Spec)

	a := startWatchOn(t, p.Spec, dir)
	ref := a.reference()
	r := rimon(t, "attest", "--agent", a.url, "--ek-ca", p.RootCA, "--ek-ca", p.IssuerCA, "--reference", ref)
	if r.code != 0 {
		t.Fatalf("rimon attest --ek-ca: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"ENROLLED via ek-activation", "1 vendor CA", "EK certificate         NV 0x01C00002",
		"template RSA 2048 (L-1), key sha256:", "credential activation", "\nTRUSTED\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("rimon attest --ek-ca output lacks %q:\n%s", want, r.stdout)
		}
	}

	// A CA that did not sign the EK certificate: refused, with the step.
	other := testtpm.StartSwtpmEK(t)
	r = rimon(t, "attest", "--agent", a.url, "--ek-ca", other.RootCA, "--ek-ca", other.IssuerCA, "--reference", ref)
	if r.code != exitError || !strings.Contains(r.stderr, "rimon: enrollment refused: vendor CA: ") || !strings.Contains(r.stderr, "not in the CA bundle") || strings.Contains(r.stdout, "TRUSTED") {
		t.Errorf("rimon attest with another vendor's CA: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// --ak and --ek-ca together: a usage error.
	if r := rimon(t, "attest", "--agent", a.url, "--ek-ca", p.RootCA, "--ak", ref); r.code != exitUsage {
		t.Errorf("--ak with --ek-ca: exit %d, want %d\n%s", r.code, exitUsage, r.stderr)
	}

	// Only the P-384 EK left (as on a TPM with an ECC EK only).
	a.stop()
	tpm2tools(t, p.Spec, "tpm2_nvundefine", "-C", "p", "0x01C00002")
	a = startWatchOn(t, p.Spec, dir)
	r = rimon(t, "attest", "--agent", a.url, "--ek-ca", p.CADir+"/swtpm-localca-rootca-cert.pem", "--ek-ca", p.IssuerCA, "--reference", a.reference())
	if r.code != 0 || !strings.Contains(r.stdout, "NV 0x01C00016") || !strings.Contains(r.stdout, "template ECC NIST P-384 (H-3), key sha256:") {
		t.Fatalf("rimon attest --ek-ca with the P-384 EK: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// Interoperability with tpm2-tools, both ways: rimon's credential is
// activated by tpm2_activatecredential (RSA EK with its policy session,
// and the P-384 EK), and tpm2_makecredential's by rimon enroll activate.
func TestEnrollInteropTpm2Tools(t *testing.T) {
	p := testtpm.StartSwtpmEK(t)
	dir := t.TempDir()
	mustRimon(t, "provision", "--tpm", p.Spec)
	name := regexp.MustCompile(`(?m)^name: ([0-9a-f]+)$`).FindStringSubmatch(tpm2tools(t, p.Spec, "tpm2_readpublic", "-c", "0x81000003"))
	if name == nil {
		t.Fatal("tpm2_readpublic printed no name")
	}
	akName := name[1]
	secret := writeFile(t, filepath.Join(dir, "secret"), "the verifier's secret, 32 bytes.")

	// rimon enroll make-credential with the EK certificate read by
	// tpm2_nvread -> tpm2_activatecredential.
	ekCert := filepath.Join(dir, "ek.der")
	tpm2tools(t, p.Spec, "tpm2_nvread", "-C", "o", "-o", ekCert, "0x01C00002")
	cred := filepath.Join(dir, "cred")
	mustRimon(t, "enroll", "make-credential", "--ek", ekCert, "--ak-name", akName, "--secret", secret, "--out", cred)
	sess := filepath.Join(dir, "session.ctx")
	tpm2tools(t, p.Spec, "tpm2_startauthsession", "--policy-session", "-S", sess)
	tpm2tools(t, p.Spec, "tpm2_policysecret", "-S", sess, "-c", "e")
	got := filepath.Join(dir, "got")
	tpm2tools(t, p.Spec, "tpm2_activatecredential", "-c", "0x81000003", "-C", "0x81010001", "-i", cred, "-o", got, "-P", "session:"+sess)
	tpm2tools(t, p.Spec, "tpm2_flushcontext", sess)
	if b, _ := os.ReadFile(got); string(b) != "the verifier's secret, 32 bytes." {
		t.Errorf("tpm2_activatecredential recovered %q", b)
	}

	// The P-384 EK (high range: the empty password authorizes it), from
	// its public key in PEM.
	ekPEM := filepath.Join(dir, "ek384.pem")
	tpm2tools(t, p.Spec, "tpm2_readpublic", "-c", "0x81010016", "-f", "pem", "-o", ekPEM)
	mustRimon(t, "enroll", "make-credential", "--ek", ekPEM, "--ak-name", akName, "--secret", secret, "--out", cred)
	os.Remove(got)
	tpm2tools(t, p.Spec, "tpm2_activatecredential", "-c", "0x81000003", "-C", "0x81010016", "-i", cred, "-o", got)
	if b, _ := os.ReadFile(got); string(b) != "the verifier's secret, 32 bytes." {
		t.Errorf("tpm2_activatecredential with the P-384 EK recovered %q", b)
	}
	// ... and rimon's own activation of it.
	mustRimon(t, "enroll", "activate", "--tpm", p.Spec, "--ek-index", "0x01C00016", "--credential", cred, "--out", got)
	if b, _ := os.ReadFile(got); string(b) != "the verifier's secret, 32 bytes." {
		t.Errorf("rimon enroll activate with the P-384 EK recovered %q", b)
	}

	// tpm2_makecredential (offline, TCG default RSA EK template) ->
	// rimon enroll activate.
	ekRSA := filepath.Join(dir, "ek.pem")
	tpm2tools(t, p.Spec, "tpm2_readpublic", "-c", "0x81010001", "-f", "pem", "-o", ekRSA)
	cred2 := filepath.Join(dir, "cred2")
	out, err := exec.Command("tpm2_makecredential", "-T", "none", "-u", ekRSA, "-G", "rsa", "-s", secret, "-n", akName, "-o", cred2).CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_makecredential: %v\n%s", err, out)
	}
	mustRimon(t, "enroll", "activate", "--tpm", p.Spec, "--credential", cred2, "--out", got)
	if b, _ := os.ReadFile(got); string(b) != "the verifier's secret, 32 bytes." {
		t.Errorf("rimon enroll activate of tpm2_makecredential's credential recovered %q", b)
	}
	// A credential for another AK name is not activated.
	other := []byte(akName)
	other[len(other)-1] ^= 1
	out, err = exec.Command("tpm2_makecredential", "-T", "none", "-u", ekRSA, "-G", "rsa", "-s", secret, "-n", string(other), "-o", cred2).CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_makecredential: %v\n%s", err, out)
	}
	if r := rimon(t, "enroll", "activate", "--tpm", p.Spec, "--credential", cred2, "--out", got); r.code != exitCheck || !strings.Contains(r.stderr, "ActivateCredential") {
		t.Errorf("activation of a credential for another name: exit %d\n%s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(cred); bytes.Equal(b[:4], []byte{0xba, 0xdc, 0xc0, 0xde}) == false {
		t.Errorf("credential file header % x, want tpm2-tools' badcc0de", b[:4])
	}
}

// rimon attest --ak-ca: the AK certificate a cloud vTPM keeps (written here
// at Azure Trusted Launch's 0x01C101D0, signed by a root private to the
// test) vouches for the AK, with no activation round, and the output says
// so; another root is refused.
func TestAttestEnrollAKCA(t *testing.T) {
	ctx := context.Background()
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	mustRimon(t, "provision", "--tpm", spec)
	tp, err := tpm.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.ReadAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test cloud AK root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	root, _ := x509.ParseCertificate(rootDER)
	akDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "vTPM AK"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}, root, ak.Key, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.WriteNV(ctx, tpm.AzureAKCert, akDER); err != nil {
		t.Fatal(err)
	}
	tp.Close()
	rootPEM := writeFile(t, filepath.Join(dir, "root.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})))

	a := startWatchOn(t, spec, dir)
	ref := a.reference()
	r := rimon(t, "attest", "--agent", a.url, "--ak-ca", rootPEM, "--reference", ref)
	if r.code != 0 || !strings.Contains(r.stdout, "ENROLLED via ak-certificate: cloud CA → AK certificate → AK") ||
		!strings.Contains(r.stdout, "NV 0x01C101D0") || !strings.Contains(r.stdout, "\nTRUSTED\n") {
		t.Fatalf("rimon attest --ak-ca: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// A bundle that holds no certificate is the operator's mistake.
	r = rimon(t, "attest", "--agent", a.url, "--ak-ca", a.reference(), "--reference", ref)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--ak-ca") {
		t.Errorf("--ak-ca with a file that is no certificate: exit %d\n%s", r.code, r.stderr)
	}
	// Without an EK CA, a root that did not sign the AK certificate
	// leaves nothing to vouch for the AK.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &otherKey.PublicKey, otherKey)
	otherPEM := writeFile(t, filepath.Join(dir, "other.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherDER})))
	r = rimon(t, "attest", "--agent", a.url, "--ak-ca", otherPEM, "--reference", ref)
	if r.code != exitError || !strings.Contains(r.stderr, "rimon: enrollment refused: AK certificate: ") {
		t.Errorf("rimon attest --ak-ca with another root: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
