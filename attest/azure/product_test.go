package azure

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
)

// Generated chains: one test-only ARK/ASK per product line (each with its
// own keys, so a VCEK of one line can never chain to another line's ASK),
// and VCEKs carrying whatever productName a case needs, as AMD's KDS
// issues them ("Milan-B0", but also the bare "Genoa" and "Turin").

var (
	lineKeysOnce sync.Once
	lineKeys     map[string]*sevtest.AmdKeys
	testAK       *rsa.PrivateKey
)

func keysFor(t *testing.T, line string) *sevtest.AmdKeys {
	t.Helper()
	lineKeysOnce.Do(func() {
		lineKeys = map[string]*sevtest.AmdKeys{}
		for _, l := range []string{"Milan", "Genoa", "Turin"} {
			ark, err1 := rsa.GenerateKey(rand.Reader, 2048)
			ask, err2 := rsa.GenerateKey(rand.Reader, 2048)
			vcek, err3 := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			if err := errors.Join(err1, err2, err3); err != nil {
				panic(err)
			}
			lineKeys[l] = &sevtest.AmdKeys{Ark: ark, Ask: ask, Asvk: ask, Vcek: vcek}
		}
		var err error
		if testAK, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	k, ok := lineKeys[line]
	if !ok {
		t.Fatalf("no test keys for %q", line)
	}
	return k
}

// testHWID and testTCB are what every generated VCEK and report carry.
var (
	testHWID = func() (h [abi.ChipIDSize]byte) {
		for i := range h {
			h[i] = byte(0xa0 + i)
		}
		return h
	}()
	testTCB = kds.TCBParts{BlSpl: 4, TeeSpl: 0, SnpSpl: 22, UcodeSpl: 213}
)

// testChain signs, with line's ASK, a VCEK whose productName is name.
func testChain(t *testing.T, line, name string) *sevtest.AmdSigner {
	t.Helper()
	tcb, err := kds.ComposeTCBParts(testTCB)
	if err != nil {
		t.Fatal(err)
	}
	b := &sevtest.AmdSignerBuilder{
		Keys:             keysFor(t, line),
		ProductName:      line,
		ArkCreationTime:  at.AddDate(-1, 0, 0),
		AskCreationTime:  at.AddDate(-1, 0, 0),
		VcekCreationTime: at.AddDate(-1, 0, 0),
		HWID:             testHWID,
		TCB:              tcb,
		VcekCustom:       sevtest.CertOverride{Extensions: sevtest.CustomExtensions(testTCB, testHWID[:], "", name)},
	}
	s, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testRoots trusts the generated ARK/ASK of every line.
func testRoots(t *testing.T, lines ...string) map[string][]*trust.AMDRootCerts {
	t.Helper()
	out := map[string][]*trust.AMDRootCerts{}
	for _, l := range lines {
		s := testChain(t, l, l)
		r := trust.AMDRootCertsProduct(l)
		if err := r.Decode(s.Ask.Raw, s.Ark.Raw); err != nil {
			t.Fatal(err)
		}
		out[l] = []*trust.AMDRootCerts{r}
	}
	return out
}

// cpuid is the family, model and stepping a version 3 report carries.
type cpuid struct{ family, model, stepping byte }

// testHCLReport builds an HCL report whose SNP report (version v, with
// CPUID fields c when v >= 3) binds runtime claims carrying the test AK,
// signed by s's VCEK.
func testHCLReport(t *testing.T, s *sevtest.AmdSigner, v uint32, c cpuid) []byte {
	t.Helper()
	return testHCLReportWith(t, s, v, c, nil)
}

// testHCLReportWith is testHCLReport with edit applied to the SNP report
// before it is signed.
func testHCLReportWith(t *testing.T, s *sevtest.AmdSigner, v uint32, c cpuid, edit func(raw []byte)) []byte {
	t.Helper()
	keysFor(t, "Milan")
	b64 := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"keys":[{"kid":"HCLAkPub","key_ops":["sign"],"kty":"RSA","e":"%s","n":"%s"}],`+
		`"vm-configuration":{"console-enabled":false,"secure-boot":true,"tpm-enabled":true,"vmUniqueId":"5D3F0000-0000-0000-0000-72696D6F6E00"},"user-data":""}`,
		b64(big.NewInt(int64(testAK.E)).Bytes()), b64(testAK.N.Bytes()))
	d := sha256.Sum256([]byte(claims))
	full := sevtest.CreateRawReport(&sevtest.TestReportOptions{ReportData: d[:], Version: v})
	raw := full[:abi.ReportSize]
	le := binary.LittleEndian
	le.PutUint64(raw[0x08:], abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true}))
	for _, off := range []int{0x38, 0x180, 0x1E0, 0x1F0} {
		le.PutUint64(raw[off:], uint64(s.TCB))
	}
	if v >= 3 {
		raw[0x188], raw[0x189], raw[0x18A] = c.family, c.model, c.stepping
	}
	copy(raw[0x1A0:0x1E0], s.HWID[:])
	if edit != nil {
		edit(raw)
	}
	r, sig, err := s.Sign(abi.SignedComponent(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(r, sig, raw); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 2600)
	copy(out, "HCLA")
	le.PutUint32(out[4:], 2)
	le.PutUint32(out[8:], uint32(claimsOffset+len(claims)))
	le.PutUint32(out[12:], 2)
	copy(out[headerSize:], raw)
	le.PutUint32(out[1216:], uint32(igvmSize+len(claims)))
	le.PutUint32(out[1220:], 1)
	le.PutUint32(out[1224:], ReportTypeSNP)
	le.PutUint32(out[1228:], HashSHA256)
	le.PutUint32(out[1232:], uint32(len(claims)))
	copy(out[claimsOffset:], claims)
	return out
}

var (
	milanCPU  = cpuid{0x19, 0x01, 0x01} // EPYC 7003
	genoaCPU  = cpuid{0x19, 0x11, 0x01} // EPYC 9004
	zen4cCPU  = cpuid{0x19, 0xA0, 0x02} // Bergamo (9704) and Siena (8004): Genoa's line
	turinCPU  = cpuid{0x1A, 0x02, 0x01} // EPYC 9005
	turinDCPU = cpuid{0x1A, 0x11, 0x00} // EPYC 9005 dense (Zen 5c)
	veniceCPU = cpuid{0x1A, 0x50, 0x00} // no roots rimon knows
	romeCPU   = cpuid{0x17, 0x31, 0x00} // no SEV-SNP
)

// TestProductLines verifies generated reports of every product line with
// VCEKs named as AMD's KDS names them, and refuses a VCEK whose product
// disagrees with the report.
func TestProductLines(t *testing.T) {
	all := testRoots(t, "Milan", "Genoa", "Turin")
	for _, tc := range []struct {
		name      string
		chainLine string // whose ASK signs the VCEK
		vcekName  string // the VCEK's productName extension
		version   uint32
		cpu       cpuid
		roots     map[string][]*trust.AMDRootCerts
		product   string // the line verified against, or "" for a refusal
		step      string // in the AMD root step; for a refusal, the failed step
		err       string // in the refusal
	}{
		// Report version 2 carries no CPUID: the VCEK's product name decides.
		{name: "v2_milan_b0", chainLine: "Milan", vcekName: "Milan-B0", version: 2, product: "Milan", step: `from the VCEK's product name "Milan-B0"`},
		{name: "v2_genoa_bare", chainLine: "Genoa", vcekName: "Genoa", version: 2, product: "Genoa", step: `ARK and ASK for Genoa`},
		{name: "v2_genoa_b1", chainLine: "Genoa", vcekName: "Genoa-B1", version: 2, product: "Genoa"},
		{name: "v2_turin_bare", chainLine: "Turin", vcekName: "Turin", version: 2, product: "Turin"},
		{name: "v2_turin_b0", chainLine: "Turin", vcekName: "Turin-B0", version: 2, product: "Turin"},
		{name: "v2_siena_name_uses_genoa_roots", chainLine: "Genoa", vcekName: "Siena", version: 2, product: "Genoa"},
		// Version 3 and later: the report's CPUID decides.
		{name: "v3_milan", chainLine: "Milan", vcekName: "Milan-B0", version: 3, cpu: milanCPU, product: "Milan", step: "from the report's CPUID (family 0x19, model 0x01, stepping 1)"},
		{name: "v3_genoa_bare", chainLine: "Genoa", vcekName: "Genoa", version: 3, cpu: genoaCPU, product: "Genoa"},
		{name: "v3_genoa_stepping_differs_from_vcek", chainLine: "Genoa", vcekName: "Genoa-B0", version: 3, cpu: genoaCPU, product: "Genoa"},
		{name: "v3_zen4c_genoa_vcek", chainLine: "Genoa", vcekName: "Genoa", version: 3, cpu: zen4cCPU, product: "Genoa"},
		{name: "v3_zen4c_siena_vcek", chainLine: "Genoa", vcekName: "Siena-B0", version: 3, cpu: zen4cCPU, product: "Genoa"},
		{name: "v3_turin_bare", chainLine: "Turin", vcekName: "Turin", version: 3, cpu: turinCPU, product: "Turin"},
		{name: "v3_turin_dense", chainLine: "Turin", vcekName: "Turin-B0", version: 3, cpu: turinDCPU, product: "Turin"},
		{name: "v5_genoa", chainLine: "Genoa", vcekName: "Genoa", version: 5, cpu: genoaCPU, product: "Genoa"},
		{name: "v3_without_cpuid_falls_back_to_vcek", chainLine: "Genoa", vcekName: "Genoa", version: 3, cpu: cpuid{}, product: "Genoa", step: `from the VCEK's product name "Genoa"`},

		// Refusals.
		{name: "v3_genoa_cpu_milan_vcek_on_genoa_chain", chainLine: "Genoa", vcekName: "Milan-B0", version: 3, cpu: genoaCPU,
			step: StepProduct, err: `the VCEK is for product "Milan-B0" (Milan), the report comes from a Genoa CPU`},
		{name: "v3_genoa_cpu_milan_vcek", chainLine: "Milan", vcekName: "Milan-B0", version: 3, cpu: genoaCPU,
			err: `the VCEK is for product "Milan-B0" (Milan), the report comes from a Genoa CPU`},
		{name: "v3_milan_cpu_genoa_vcek", chainLine: "Genoa", vcekName: "Genoa", version: 3, cpu: milanCPU,
			err: `the VCEK is for product "Genoa" (Genoa), the report comes from a Milan CPU`},
		{name: "v3_turin_cpu_genoa_vcek", chainLine: "Genoa", vcekName: "Genoa", version: 3, cpu: turinCPU, err: `the VCEK is for product "Genoa" (Genoa), the report comes from a Turin CPU`},
		{name: "v3_unknown_cpu", chainLine: "Turin", vcekName: "Turin", version: 3, cpu: veniceCPU,
			err: "family 0x1a, model 0x50, stepping 0, which is no SEV-SNP product line rimon knows"},
		{name: "v3_cpuid_family_zero", chainLine: "Genoa", vcekName: "Genoa", version: 3, cpu: cpuid{0x00, 0x11, 0x01}, err: "family 0x00, model 0x11"},
		{name: "v3_pre_snp_cpu", chainLine: "Milan", vcekName: "Milan-B0", version: 3, cpu: romeCPU, err: "family 0x17"},
		{name: "v3_unknown_vcek_name", chainLine: "Genoa", vcekName: "Venice", version: 3, cpu: genoaCPU, err: `product name "Venice" is unknown`},
		{name: "v2_unknown_vcek_name", chainLine: "Milan", vcekName: "Rome-B0", version: 2, err: `product name "Rome-B0" is unknown`},
		{name: "v2_malformed_stepping", chainLine: "Genoa", vcekName: "Genoa-", version: 2, err: `product name "Genoa-" is unknown`},
		{name: "v2_lowercase_name", chainLine: "Genoa", vcekName: "genoa", version: 2, err: `product name "genoa" is unknown`},
		{name: "v2_genoa_name_on_milan_chain", chainLine: "Milan", vcekName: "Genoa", version: 2, step: StepChain, err: `the VCEK is issued by "SEV-Milan"`},
		{name: "v2_milan_name_on_genoa_chain", chainLine: "Genoa", vcekName: "Milan-B0", version: 2, err: "signature and certificate chain"},
		{name: "v2_genoa_without_genoa_roots", chainLine: "Genoa", vcekName: "Genoa", version: 2,
			roots: testRoots(t, "Milan", "Turin"), step: StepRoots, err: "no trusted ARK/ASK for product line Genoa"},
		{name: "v3_genoa_with_amd_roots_only", chainLine: "Genoa", vcekName: "Genoa", version: 3, cpu: genoaCPU,
			roots: func() map[string][]*trust.AMDRootCerts { r, _ := AMDRoots(); return r }(), err: "signature and certificate chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testChain(t, tc.chainLine, tc.vcekName)
			r, err := Parse(testHCLReport(t, s, tc.version, tc.cpu))
			if err != nil {
				t.Fatal(err)
			}
			roots := tc.roots
			if roots == nil {
				roots = all
			}
			c, err := Verify(r, Options{VCEK: s.Vcek.Raw, Now: at, TrustedRoots: roots})
			if tc.product == "" {
				if !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Verify = %v, want %v containing %q", err, ErrChain, tc.err)
				}
				if mismatch := strings.Contains(tc.err, "the VCEK is for product"); errors.Is(err, ErrProductMismatch) != mismatch {
					t.Errorf("errors.Is(%v, ErrProductMismatch) = %v, want %v", err, !mismatch, mismatch)
				}
				var se *StepError
				if !errors.As(err, &se) || (tc.step != "" && se.Step != tc.step) {
					t.Errorf("Verify = %#v, want a *StepError of step %q", err, tc.step)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Product != tc.product || c.VCEKProduct != tc.vcekName {
				t.Errorf("Product, VCEKProduct = %q, %q; want %q, %q", c.Product, c.VCEKProduct, tc.product, tc.vcekName)
			}
			if !strings.Contains(c.Steps[0], tc.step) {
				t.Errorf("step %q does not say %q", c.Steps[0], tc.step)
			}
			if !SameKey(c.AK, &testAK.PublicKey) {
				t.Errorf("the chain vouches for another AK")
			}
		})
	}
}

// TestRootsNeverFromEvidence: a VCEK bundle that carries its own ASK and ARK
// does not make them trusted.
func TestRootsNeverFromEvidence(t *testing.T) {
	roots := testRoots(t, "Milan", "Genoa", "Turin")
	// A chain with keys nobody trusts, named like Genoa's.
	ark, _ := rsa.GenerateKey(rand.Reader, 2048)
	ask, _ := rsa.GenerateKey(rand.Reader, 2048)
	vk, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b := &sevtest.AmdSignerBuilder{
		Keys: &sevtest.AmdKeys{Ark: ark, Ask: ask, Asvk: ask, Vcek: vk}, ProductName: "Genoa",
		ArkCreationTime: at.AddDate(-1, 0, 0), AskCreationTime: at.AddDate(-1, 0, 0), VcekCreationTime: at.AddDate(-1, 0, 0),
		HWID: testHWID, VcekCustom: sevtest.CertOverride{Extensions: sevtest.CustomExtensions(testTCB, testHWID[:], "", "Genoa")},
	}
	b.TCB, _ = kds.ComposeTCBParts(testTCB)
	s, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse(testHCLReport(t, s, 3, genoaCPU))
	if err != nil {
		t.Fatal(err)
	}
	var bundle []byte
	for _, c := range [][]byte{s.Vcek.Raw, s.Ask.Raw, s.Ark.Raw} {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	if _, err := Verify(r, Options{VCEK: bundle, Now: at, TrustedRoots: roots}); !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "signature and certificate chain") {
		t.Errorf("a VCEK that chains only to the ASK/ARK shipped with it verified: %v", err)
	}
}

func TestProductLineOfName(t *testing.T) {
	for name, want := range map[string]string{
		"Milan": "Milan", "Milan-B0": "Milan", "Milan-B1": "Milan",
		"Genoa": "Genoa", "Genoa-B0": "Genoa", "Genoa-B2": "Genoa", "Genoa-C1": "Genoa",
		"Bergamo": "Genoa", "Bergamo-A1": "Genoa", "Siena": "Genoa", "Siena-A0": "Genoa",
		"Turin": "Turin", "Turin-B0": "Turin", "Turin-C1": "Turin",
		"": "", "Rome": "", "Venice": "", "genoa": "", "Genoa-": "", "Genoa-b0": "", "Genoa-B": "", "Genoa-B10": "",
		"Genoa B0": "", "GenoaX": "", "Genoa-B0-B1": "", "-B0": "", "Milan\x00": "",
	} {
		got, ok := productLineOfName(name)
		if got != want || ok != (want != "") {
			t.Errorf("productLineOfName(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

func TestProductLineOfCPUID(t *testing.T) {
	for _, tc := range []struct {
		family, model byte
		want          string
	}{
		{0x19, 0x00, "Milan"}, {0x19, 0x01, "Milan"}, {0x19, 0x0F, "Milan"},
		{0x19, 0x10, "Genoa"}, {0x19, 0x11, "Genoa"}, {0x19, 0x1F, "Genoa"},
		{0x19, 0xA0, "Genoa"}, {0x19, 0xAF, "Genoa"},
		{0x1A, 0x00, "Turin"}, {0x1A, 0x02, "Turin"}, {0x1A, 0x11, "Turin"},
		{0x19, 0x20, ""}, {0x19, 0x21, ""}, {0x19, 0x9F, ""}, {0x19, 0xB0, ""}, // client Zen 3/4 parts
		{0x1A, 0x12, ""}, {0x1A, 0x50, ""}, {0x17, 0x31, ""}, {0x00, 0x00, ""}, {0xFF, 0x01, ""},
	} {
		got, ok := productLineOfCPUID(tc.family, tc.model)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("productLineOfCPUID(0x%x, 0x%x) = %q, %v; want %q", tc.family, tc.model, got, ok, tc.want)
		}
	}
}

// TestVCEKForm: a VCEK the trusted ASK did sign, but not in the form AMD's
// KDS issues, is refused.
func TestVCEKForm(t *testing.T) {
	roots := testRoots(t, "Milan", "Genoa", "Turin")
	tcb, _ := kds.ComposeTCBParts(testTCB)
	name := func(cn, org string) *pkix.Name {
		return &pkix.Name{CommonName: cn, Organization: []string{org}, Country: []string{"US"}, Locality: []string{"Santa Clara"},
			Province: []string{"CA"}, OrganizationalUnit: []string{"Engineering"}}
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name     string
		override sevtest.CertOverride
		vcekKey  *ecdsa.PrivateKey
		err      string
	}{
		{"subject_not_sev_vcek", sevtest.CertOverride{Subject: name("SEV-VLEK", "Advanced Micro Devices")}, nil, `VCEK subject "SEV-VLEK"`},
		{"subject_of_another_organization", sevtest.CertOverride{Subject: name("SEV-VCEK", "Example Corp")}, nil, "VCEK subject organization"},
		{"sha256_signature", sevtest.CertOverride{SignatureAlgorithm: x509.SHA256WithRSAPSS}, nil, "want SHA-384 with RSA-PSS"},
		{"p256_key", sevtest.CertOverride{}, p256, "not ECDSA P-384"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := *keysFor(t, "Genoa")
			if tc.vcekKey != nil {
				keys.Vcek = tc.vcekKey
			}
			o := tc.override
			o.Extensions = sevtest.CustomExtensions(testTCB, testHWID[:], "", "Genoa")
			b := &sevtest.AmdSignerBuilder{Keys: &keys, ProductName: "Genoa", HWID: testHWID, TCB: tcb, VcekCustom: o,
				ArkCreationTime: at.AddDate(-1, 0, 0), AskCreationTime: at.AddDate(-1, 0, 0), VcekCreationTime: at.AddDate(-1, 0, 0)}
			s, err := b.TestOnlyCertChain()
			if err != nil {
				t.Fatal(err)
			}
			r, err := Parse(testHCLReport(t, s, 3, genoaCPU))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Verify(r, Options{VCEK: s.Vcek.Raw, Now: at, TrustedRoots: roots})
			var se *StepError
			if !errors.As(err, &se) || se.Step != StepChain || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Verify = %v, want a %q refusal containing %q", err, StepChain, tc.err)
			}
		})
	}
}

// TestTurinFMCRefusedClearly: a VCEK with the FMC SPL extension of Turin's
// TCB layout cannot be checked with go-sev-guest v0.15.0; the refusal says so.
func TestTurinFMCRefusedClearly(t *testing.T) {
	roots := testRoots(t, "Milan", "Genoa", "Turin")
	tcb, _ := kds.ComposeTCBParts(testTCB)
	fmc, _ := asn1.Marshal(1)
	exts := append(sevtest.CustomExtensions(testTCB, testHWID[:], "", "Turin"), pkix.Extension{Id: oidFmcSpl, Value: fmc})
	b := &sevtest.AmdSignerBuilder{Keys: keysFor(t, "Turin"), ProductName: "Turin", HWID: testHWID, TCB: tcb,
		VcekCustom:      sevtest.CertOverride{Extensions: exts},
		ArkCreationTime: at.AddDate(-1, 0, 0), AskCreationTime: at.AddDate(-1, 0, 0), VcekCreationTime: at.AddDate(-1, 0, 0)}
	s, err := b.TestOnlyCertChain()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse(testHCLReport(t, s, 3, turinCPU))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Verify(r, Options{VCEK: s.Vcek.Raw, Now: at, TrustedRoots: roots})
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepVCEK || !strings.Contains(err.Error(), "FMC security patch level (OID 1.3.6.1.4.1.3704.1.3.9)") {
		t.Errorf("Verify = %v, want a clear refusal of the FMC SPL at step %q", err, StepVCEK)
	}
}

// FuzzProductLineOfName: a name is accepted only as a known base, alone or
// with a one-letter, one-digit stepping, and names the base's line.
func FuzzProductLineOfName(f *testing.F) {
	for _, s := range []string{"Milan-B0", "Genoa", "Siena-A1", "Turin-C0", "Genoa-", "Venice", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		line, ok := productLineOfName(name)
		if !ok {
			if line != "" {
				t.Fatalf("productLineOfName(%q) = %q, false", name, line)
			}
			return
		}
		base, stepping, _ := strings.Cut(name, "-")
		if nameLines[base] != line || (stepping != "" && len(stepping) != 2) || (strings.Contains(name, "-") && stepping == "") {
			t.Fatalf("productLineOfName(%q) = %q, true", name, line)
		}
		if again, ok := productLineOfName(base); !ok || again != line {
			t.Fatalf("the base %q of accepted %q is %q, %v", base, name, again, ok)
		}
	})
}

// TestVLEKSignedReportRefused: Azure reports are signed by the VCEK; a
// report that says the VLEK signed it is refused before any chain check.
func TestVLEKSignedReportRefused(t *testing.T) {
	roots := testRoots(t, "Milan", "Genoa", "Turin")
	s := testChain(t, "Genoa", "Genoa")
	// The VLEK key is the VCEK's: the signature itself would verify.
	keys := *s.Keys
	keys.Vlek = keys.Vcek
	s.Keys = &keys
	vlek := func(raw []byte) {
		binary.LittleEndian.PutUint32(raw[0x48:], abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VlekReportSigner}))
	}
	r, err := Parse(testHCLReportWith(t, s, 3, genoaCPU, vlek))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Verify(r, Options{VCEK: s.Vcek.Raw, Now: at, TrustedRoots: roots})
	var se *StepError
	if !errors.As(err, &se) || se.Step != StepReport || !strings.Contains(err.Error(), "not by a VCEK") {
		t.Errorf("Verify = %v, want a refusal at step %q", err, StepReport)
	}
}
