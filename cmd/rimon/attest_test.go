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
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/policy"
)

const testNonce = "00112233445566778899aabbccddeeff"

// TestAttestationOnSwtpm: provision, measure, quote, verify; tpm2-tools
// interoperability in both directions; a change makes the verdict untrusted.
func TestAttestationOnSwtpm(t *testing.T) {
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	app := writeFile(t, filepath.Join(dir, "app"), "v1")
	conf := writeFile(t, filepath.Join(dir, "app.conf"), "conf")
	akPEM := writeFile(t, filepath.Join(dir, "ak.pem"), mustRimon(t, "provision", "--tpm", spec))
	mustRimon(t, "measure", "--tpm", spec, "--log", log, app, conf)

	// rimon quote -> tpm2_checkquote
	tools := filepath.Join(dir, "tools")
	ev := filepath.Join(dir, "ev.json")
	mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", testNonce, "--bank", "sha256", "--out", ev, "--tpm2-tools", tools)
	out, err := exec.Command("tpm2_checkquote", "-u", filepath.Join(tools, "ak.pem"), "-m", filepath.Join(tools, "quote.msg"),
		"-s", filepath.Join(tools, "quote.sig"), "-f", filepath.Join(tools, "quote.pcrs"), "-g", "sha256", "-q", testNonce).CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_checkquote refused rimon's quote: %v\n%s", err, out)
	}

	// tpm2_quote -> rimon verify
	msg, sig, pcrs := filepath.Join(dir, "q.msg"), filepath.Join(dir, "q.sig"), filepath.Join(dir, "q.pcrs")
	out, err = exec.Command("tpm2_quote", "-T", testtpm.TCTI(spec), "-c", "0x81000003", "-l", "sha256:23", "-q", testNonce,
		"-m", msg, "-s", sig, "-o", pcrs, "-g", "sha256").CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_quote: %v\n%s", err, out)
	}
	if r := rimon(t, "verify", "--quote-msg", msg, "--quote-sig", sig, "--pcrs-file", pcrs, "--log", log, "--nonce", testNonce, "--ak", akPEM); r.code != 0 {
		t.Fatalf("rimon verify of tpm2_quote's quote: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := rimon(t, "verify", "--quote-msg", msg, "--quote-sig", sig, "--log", log, "--nonce", testNonce, "--ak", akPEM); r.code != 0 {
		t.Fatalf("rimon verify without a PCR file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	ref := writeFile(t, filepath.Join(dir, "ref.yaml"), mustRimon(t, "reference", "generate", "--from-log", log))
	if r := rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", akPEM, "--reference", ref); r.code != 0 || !strings.HasPrefix(r.stdout, "TRUSTED") {
		t.Fatalf("verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := rimon(t, "verify", "--evidence", ev, "--nonce", "ff"+testNonce[2:], "--ak", akPEM); r.code != exitError || !strings.Contains(r.stderr, "nonce") {
		t.Errorf("verify with another nonce: exit %d, %s", r.code, r.stderr)
	}

	writeFile(t, app, "v2 tampered")
	mustRimon(t, "measure", "--tpm", spec, "--log", log, app)
	mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", testNonce, "--bank", "sha256", "--out", ev)
	r := rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", akPEM, "--reference", ref, "--json")
	if r.code != exitCheck || !strings.Contains(r.stdout, `"path": "`+app+`"`) || !strings.Contains(r.stdout, `"problem": "digest not allowed"`) {
		t.Errorf("verify after a change: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestAttestAgent serves evidence from a running agent (on the simulator)
// and verifies it with rimon attest.
func TestAttestAgent(t *testing.T) {
	dir := t.TempDir()
	app := writeFile(t, filepath.Join(dir, "app"), "v1")
	polPath := writeFile(t, filepath.Join(dir, "policy.yaml"), "measure:\n  - file: "+app+"\n")
	pol, err := policy.Load(polPath)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	log := filepath.Join(dir, "m.log")
	var stderr bytes.Buffer
	certPEM, keyPEM := selfSigned(t)
	cert, key := writeFile(t, filepath.Join(dir, "cert.pem"), string(certPEM)), writeFile(t, filepath.Join(dir, "key.pem"), string(keyPEM))
	g := &globals{tpm: "sim", log: log, stdout: &bytes.Buffer{}, stderr: &syncWriter{w: &stderr}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runWatchServe(ctx, g, pol, polPath, "text", 0, serveFlags{listen: addr, cert: cert, key: key})
	}()
	defer func() {
		cancel()
		<-done
	}()
	// The simulator belongs to the agent's process, so its AK is read from a
	// first evidence document and pinned from then on.
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	ak := filepath.Join(dir, "ak.pem")
	if err := fetchAK(addr, cert, ak); err != nil {
		t.Fatal(err)
	}
	if r := rimon(t, "attest", "--agent", "https://"+addr, "--ak", ak); r.code != exitError || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("attest without the CA: exit %d, %s", r.code, r.stderr)
	}
	r := rimon(t, "attest", "--agent", "https://"+addr, "--ca", cert, "--ak", ak)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "TRUSTED") {
		t.Errorf("rimon attest: exit %d\n%s%s\nagent:\n%s", r.code, r.stdout, r.stderr, stderr.String())
	}
	if r := rimon(t, "attest", "--agent", "http://127.0.0.1:1", "--ak", ak); r.code != exitError {
		t.Errorf("attest against no agent: exit %d", r.code)
	}

	// With a cache, later rounds fetch only the new records and still verify all.
	cache := filepath.Join(dir, "agent.cache")
	args := []string{"attest", "--agent", "https://" + addr, "--ca", cert, "--ak", ak, "--cache", cache}
	if r := rimon(t, args...); r.code != 0 {
		t.Fatalf("attest --cache, first round: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	writeFile(t, app, "v2")
	time.Sleep(600 * time.Millisecond) // the agent's debounce
	r = rimon(t, args...)
	if r.code != 0 || !strings.Contains(r.stdout, "the first 2 of 2 records") {
		t.Fatalf("attest --cache, second round: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The cache holds the replay state: a PCR value edited there no longer
	// leads the new records to the quote.
	b, _ := os.ReadFile(cache)
	i := bytes.Index(b, []byte(`"23":"`)) + len(`"23":"`)
	if i < len(`"23":"`) {
		t.Fatalf("no PCR 23 value in the cache:\n%s", b)
	}
	// Another hex digit ('f' ^ 1 would be 'g', which fails as a parse
	// error, not as the continuity check this is about).
	if b[i] == '0' {
		b[i] = '1'
	} else {
		b[i] = '0'
	}
	os.WriteFile(cache, b, 0o600)
	if r := rimon(t, args...); r.code != exitError || !strings.Contains(r.stderr, "continuity") {
		t.Errorf("attest with a tampered cache: exit %d\n%s", r.code, r.stderr)
	}
}

func fetchAK(addr, ca, path string) error {
	client, err := httpClient(ca)
	if err != nil {
		return err
	}
	ev, err := attest.Fetch(context.Background(), client, "https://"+addr, []byte(testNonce))
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(ev.AKPublic), 0o644)
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestReferenceGenerateAndImport(t *testing.T) {
	dir := t.TempDir()
	a := writeFile(t, filepath.Join(dir, "tree", "a"), "a")
	writeFile(t, filepath.Join(dir, "tree", "sub", "b"), "b")
	out := mustRimon(t, "reference", "generate", "--from-dir", filepath.Join(dir, "tree"))
	ref, err := policy.ParseReference("gen.yaml", strings.NewReader(out))
	if err != nil {
		t.Fatalf("generated reference does not parse: %v\n%s", err, out)
	}
	if len(ref.Files) != 2 || ref.Files[0].Path != a {
		t.Errorf("generated reference: %+v", ref.Files)
	}
}

// selfSigned makes a certificate for 127.0.0.1 that signs itself.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rimon test agent"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}
