package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/rimon-dev/rimon/attest"
	attestagent "github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/azure"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// hclReport builds an Azure-size (2600-byte) HCL report whose runtime
// claims carry ak as HCLAkPub, with an SNP report signed by a test-only
// AMD-like chain.
func hclReport(t *testing.T, signer *sevtest.AmdSigner, ak *rsa.PublicKey) []byte {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"keys":[{"kid":"HCLAkPub","key_ops":["sign"],"kty":"RSA","e":"%s","n":"%s"}],`+
		`"vm-configuration":{"console-enabled":false,"secure-boot":true,"tpm-enabled":true,"vmUniqueId":"5D3F0000-0000-0000-0000-72696D6F6E00"},"user-data":""}`,
		b64(big.NewInt(int64(ak.E)).Bytes()), b64(ak.N.Bytes()))
	d := sha256.Sum256([]byte(claims))
	full := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: d[:]})
	raw := full[:abi.ReportSize]
	binary.LittleEndian.PutUint64(raw[0x08:], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true}))
	for _, off := range []int{0x38, 0x180, 0x1E0, 0x1F0} {
		binary.LittleEndian.PutUint64(raw[off:], uint64(signer.TCB))
	}
	copy(raw[0x1A0:0x1E0], signer.HWID[:])
	r, s, err := signer.Sign(abi.SignedComponent(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(r, s, raw); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 2600)
	le := binary.LittleEndian
	copy(out, "HCLA")
	le.PutUint32(out[4:], 2)
	le.PutUint32(out[8:], uint32(32+1184+20+len(claims)))
	le.PutUint32(out[12:], 2)
	copy(out[32:], raw)
	le.PutUint32(out[1216:], uint32(20+len(claims)))
	le.PutUint32(out[1220:], 1)
	le.PutUint32(out[1224:], azure.ReportTypeSNP)
	le.PutUint32(out[1228:], azure.HashSHA256)
	le.PutUint32(out[1232:], uint32(len(claims)))
	copy(out[1236:], claims)
	return out
}

// TestAzureChainOnSimulator: the simulator (with a 2600-byte NV index)
// holds an HCL report that binds its AK, signed by a test-only chain. The
// verifier trusts the whole chain only when told to trust those test roots
// with the explicitly insecure flag; with AMD's roots it refuses.
func TestAzureChainOnSimulator(t *testing.T) {
	ctx := context.Background()
	tp := testtpm.Open(t)
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sevtest.DefaultTestOnlyCertChain("Milan-B0", time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.WriteNV(ctx, azure.NVIndex, hclReport(t, signer, ak.Key.(*rsa.PublicKey))); err != nil {
		t.Fatalf("%v (the simulator must be built with CGO_CFLAGS=-DMAX_NV_INDEX_SIZE=4096: use make test)", err)
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	w, _, err := logfile.OpenWriter(ctx, log, tp, logfile.WriterOptions{Banks: []cryptoHashT{sha256Hash}, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, 23, eventlog.Event{Kind: "file", Path: "/usr/bin/app", SHA256: strings.Repeat("ab", 32), Reason: "initial"}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// What the attester does: quote under the log's lock, add the HCL report and the VCEK.
	ev, err := attestagent.Collect(ctx, tp, log, []byte(testNonce), []int{23}, []cryptoHashT{sha256Hash})
	if err != nil {
		t.Fatal(err)
	}
	af := azureFlags{mode: "on", vcek: writeFile(t, filepath.Join(dir, "vcek.der"), string(signer.Vcek.Raw))}
	if ev.Azure, err = af.hardware(ctx, tp); err != nil {
		t.Fatal(err)
	}
	b, _ := ev.Marshal()
	evPath := writeFile(t, filepath.Join(dir, "evidence"), string(b))
	roots := writeFile(t, filepath.Join(dir, "test-roots.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: signer.Ask.Raw}))+
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: signer.Ark.Raw})))

	r := rimon(t, "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)))
	if r.code != exitError || !strings.Contains(r.stderr, "SEV-SNP chain invalid") {
		t.Errorf("with AMD's roots: exit %d, %s; want a refusal", r.code, r.stderr)
	}
	failedCheck(t, "AMD's roots", "azure: signature and certificate chain", "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)))
	r = rimon(t, "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)), "--insecure-trust-test-roots", roots)
	if r.code != 0 || !strings.Contains(r.stdout, "runtime claims: SHA-256 equals REPORT_DATA[0:32]") || !strings.Contains(r.stderr, "WARNING: trusting test roots") {
		t.Errorf("with the test roots: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	other := writeFile(t, filepath.Join(dir, "other.pem"), mustPEM(t))
	r = rimon(t, "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)), "--insecure-trust-test-roots", roots, "--ak", other)
	if r.code != exitError || !strings.Contains(r.stderr, "not the HCLAkPub") {
		t.Errorf("a pinned AK other than HCLAkPub: exit %d, %s", r.code, r.stderr)
	}
	failedCheck(t, "a pinned AK other than HCLAkPub", "azure: key binding", "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)), "--insecure-trust-test-roots", roots, "--ak", other)
	// The report, rewritten with another AK in its claims, no longer matches its signature.
	ev.Azure.HCLReport = append([]byte(nil), ev.Azure.HCLReport...)
	i := strings.Index(string(ev.Azure.HCLReport), `"n":"`) + 6
	if ev.Azure.HCLReport[i] == 'A' { // another valid base64url character
		ev.Azure.HCLReport[i] = 'B'
	} else {
		ev.Azure.HCLReport[i] = 'A'
	}
	b, _ = ev.Marshal()
	os.WriteFile(evPath, b, 0o644)
	if r := rimon(t, "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)), "--insecure-trust-test-roots", roots); r.code != exitError || !strings.Contains(r.stderr, "runtime claims") {
		t.Errorf("altered claims: exit %d, %s", r.code, r.stderr)
	}
	failedCheck(t, "altered claims", "azure: runtime claims", "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)), "--insecure-trust-test-roots", roots)
}

// failedCheck runs rimon with --json on invalid evidence and wants exit 2
// and the failed check named precisely.
func failedCheck(t *testing.T, what, want string, args ...string) {
	t.Helper()
	r := rimon(t, append(args, "--json")...)
	var out struct {
		Invalid     bool   `json:"invalid"`
		FailedCheck string `json:"failed_check"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != exitError || !out.Invalid || out.FailedCheck != want {
		t.Errorf("%s --json: exit %d, failed_check %q (%v), want exit %d and %q\n%s%s", what, r.code, out.FailedCheck, err, exitError, want, r.stdout, r.stderr)
	}
}

type cryptoHashT = crypto.Hash

const sha256Hash = crypto.SHA256

func mustPEM(t *testing.T) string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := attest.PublicKeyPEM(&k.PublicKey)
	return string(p)
}

// TestAzureVerifyEveryProductLine: `rimon azure verify` checks HCL reports
// whose VCEKs are named as AMD's KDS names them (the bare "Genoa" and
// "Turin" as well as "Milan-B0") against the test roots of their own line;
// several lines' test roots can be trusted at once, and a bundle that is
// not one line's ASK and ARK is a usage error.
func TestAzureVerifyEveryProductLine(t *testing.T) {
	dir := t.TempDir()
	ak, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := "2025-06-01T00:00:00Z"
	bundle := func(s *sevtest.AmdSigner) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Ask.Raw})) +
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Ark.Raw}))
	}
	signers := map[string]*sevtest.AmdSigner{}
	roots := map[string]string{}
	for _, name := range []string{"Milan-B0", "Genoa", "Turin"} {
		s, err := sevtest.DefaultTestOnlyCertChain(name, created)
		if err != nil {
			t.Fatal(err)
		}
		signers[name] = s
		line := strings.TrimSuffix(name, "-B0")
		roots[line] = writeFile(t, filepath.Join(dir, line+"-roots.pem"), bundle(s))
		writeFile(t, filepath.Join(dir, name+".hcl"), string(hclReport(t, s, &ak.PublicKey)))
		writeFile(t, filepath.Join(dir, name+".vcek"), string(s.Vcek.Raw))
	}
	verify := func(name string, rootFiles ...string) result {
		args := []string{"azure", "verify", "--report", filepath.Join(dir, name+".hcl"), "--vcek", filepath.Join(dir, name+".vcek"), "--at", at}
		for _, f := range rootFiles {
			args = append(args, "--insecure-trust-test-roots", f)
		}
		return rimon(t, args...)
	}
	for _, tc := range []struct {
		vcek  string
		roots []string
		code  int
		want  string
	}{
		{"Milan-B0", []string{roots["Milan"]}, 0, "ARK and ASK for Milan"},
		{"Genoa", []string{roots["Genoa"]}, 0, `ARK and ASK for Genoa from the trusted roots; the product line from the VCEK's product name "Genoa"`},
		{"Turin", []string{roots["Turin"]}, 0, "ARK and ASK for Turin"},
		{"Genoa", []string{roots["Milan"], roots["Genoa"], roots["Turin"]}, 0, "ARK and ASK for Genoa"},
		{"Genoa", []string{roots["Milan"], roots["Turin"]}, exitError, "no trusted ARK/ASK for product line Genoa"},
		{"Genoa", nil, exitError, "SEV-SNP chain invalid"}, // AMD's own roots
	} {
		r := verify(tc.vcek, tc.roots...)
		out := r.stdout + r.stderr
		if r.code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("verify %s with %d test roots: exit %d, want %d with %q\n%s", tc.vcek, len(tc.roots), r.code, tc.code, tc.want, out)
		}
		if len(tc.roots) > 0 && strings.Count(r.stderr, "WARNING: trusting test roots") != len(tc.roots) {
			t.Errorf("verify %s: one warning per test-root bundle wanted:\n%s", tc.vcek, r.stderr)
		}
	}
	// Bundles that are not one product line's ASK and ARK.
	g, m := signers["Genoa"], signers["Milan-B0"]
	ark := func(s *sevtest.AmdSigner) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Ark.Raw}))
	}
	ask := func(s *sevtest.AmdSigner) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Ask.Raw}))
	}
	other, err := sevtest.DefaultTestOnlyCertChain("Milan-B0", created)
	if err != nil {
		t.Fatal(err)
	}
	otherKeys := *other.Keys
	otherKeys.Ark, _ = rsa.GenerateKey(rand.Reader, 2048)
	foreign, err := (&sevtest.AmdSignerBuilder{Keys: &otherKeys, ProductName: "Genoa", ArkCreationTime: created, AskCreationTime: created, VcekCreationTime: created}).TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := sevtest.DefaultTestOnlyCertChain("Venice", created) // go-sev-guest names its roots ARK-Unknown
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, bundle, want string }{
		{"no_ark", ask(g), "no ARK"},
		{"unknown_line", bundle(unknown), `ARK "ARK-Unknown" is of no product line rimon knows`},
		{"ask_of_another_line", ask(m) + ark(g), `no ASK SEV-Genoa for the ARK ARK-Genoa in the bundle (other certificates: "SEV-Milan")`},
		{"ask_not_signed_by_ark", ask(foreign) + ark(g), "not signed by the ARK"},
	} {
		f := writeFile(t, filepath.Join(dir, tc.name+".pem"), tc.bundle)
		r := verify("Genoa", f)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, want %d with %q\n%s", tc.name, r.code, exitUsage, tc.want, r.stderr)
		}
	}
}
