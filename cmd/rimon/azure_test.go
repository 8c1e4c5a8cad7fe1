package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
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
	"github.com/rimon-dev/rimon/attest/azure"
	"github.com/rimon-dev/rimon/eventlog"
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
	w, _, err := eventlog.OpenWriter(ctx, log, tp, eventlog.WriterOptions{Banks: []cryptoHashT{sha256Hash}, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, 23, eventlog.Event{Kind: "file", Path: "/usr/bin/app", SHA256: strings.Repeat("ab", 32), Reason: "initial"}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// What the attester does: quote under the log's lock, add the HCL report and the VCEK.
	ev, err := attest.Collect(ctx, tp, log, []byte(testNonce), []int{23}, []cryptoHashT{sha256Hash})
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
	r = rimon(t, "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)), "--insecure-trust-test-roots", roots)
	if r.code != 0 || !strings.Contains(r.stdout, "runtime claims: SHA-256 equals REPORT_DATA[0:32]") || !strings.Contains(r.stderr, "WARNING: trusting test roots") {
		t.Errorf("with the test roots: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	other := writeFile(t, filepath.Join(dir, "other.pem"), mustPEM(t))
	r = rimon(t, "verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)), "--insecure-trust-test-roots", roots, "--ak", other)
	if r.code != exitError || !strings.Contains(r.stderr, "not the HCLAkPub") {
		t.Errorf("a pinned AK other than HCLAkPub: exit %d, %s", r.code, r.stderr)
	}
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
