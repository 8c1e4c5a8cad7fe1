package azure

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
)

// Real captured Azure data; testdata/azure/SOURCES.md says where each file
// comes from. Certificates are checked at a pinned time so they never expire.
var at = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/azure/" + p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type evidenceV1 struct {
	HCLReport string `json:"hcl_report"`
	VCEK      string `json:"vcek"`
	TPMQuote  struct {
		Signature string   `json:"signature"`
		Message   string   `json:"message"`
		PCRs      []string `json:"pcrs"`
	} `json:"tpm_quote"`
}

type evidenceV0 struct {
	Report []byte `json:"-"`
	Raw    []int  `json:"report"`
	VCEK   string `json:"vcek"`
	Quote  struct {
		Signature []int   `json:"signature"`
		Message   []int   `json:"message"`
		PCRs      [][]int `json:"pcrs"`
	} `json:"quote"`
}

func ints(v []int) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

func TestRealReportsVerify(t *testing.T) {
	v1 := func() ([]byte, []byte) {
		var e evidenceV1
		json.Unmarshal(read(t, "trustee/evidence-v1.json"), &e)
		r, _ := base64.URLEncoding.DecodeString(e.HCLReport)
		v, _ := base64.URLEncoding.DecodeString(e.VCEK)
		return r, v
	}
	v0 := func() ([]byte, []byte) {
		var e evidenceV0
		json.Unmarshal(read(t, "trustee/evidence-v0.json"), &e)
		return ints(e.Raw), []byte(e.VCEK)
	}
	for _, tc := range []struct {
		name         string
		report, vcek func() ([]byte, []byte)
		product      string
		vmid         string
	}{
		{"trustee_milan_v2", func() ([]byte, []byte) { return read(t, "trustee/hcl-report.bin"), read(t, "trustee/vcek.pem") }, nil, "Milan", "911B0EF8-9DBA-48B0-B275-4E4DF2D39252"},
		{"trustee_2023_older_format", func() ([]byte, []byte) {
			return read(t, "trustee-2023/az-hcl-data.bin"), read(t, "trustee-2023/az-vcek.pem")
		}, nil, "Milan", "D3A9B6BE"},
		{"trustee_evidence_v1_report_v3", v1, nil, "Milan", "26F8BC30"},
		{"trustee_evidence_v0", v0, nil, "Milan", "26F8BC30"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rb, vcek := tc.report()
			r, err := Parse(rb)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(r.VMConfig.VMUniqueID, tc.vmid) {
				t.Errorf("vmUniqueId = %q, want %s…", r.VMConfig.VMUniqueID, tc.vmid)
			}
			c, err := Verify(r, Options{VCEK: vcek, Now: at})
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.Product != tc.product || c.VMPL != 0 || c.AK == nil {
				t.Errorf("chain = %+v", c)
			}
		})
	}
}

func TestRealQuotesVerifyAgainstHCLAkPub(t *testing.T) {
	r, err := Parse(read(t, "trustee/hcl-report.bin"))
	if err != nil {
		t.Fatal(err)
	}
	ak, _ := r.AKPublic()
	var q struct {
		Signature string   `json:"signature"`
		Message   string   `json:"message"`
		PCRs      []string `json:"pcrs"`
	}
	json.Unmarshal(read(t, "trustee/tpm-quote-v1.json"), &q)
	msg, _ := hex.DecodeString(q.Message)
	sig, _ := hex.DecodeString(q.Signature)
	vals := map[eventlog.PCRKey][]byte{}
	var pcrs []int
	for i, p := range q.PCRs {
		vals[eventlog.PCRKey{PCR: i, Bank: crypto.SHA256}], _ = hex.DecodeString(p)
		pcrs = append(pcrs, i)
	}
	opts := attest.QuoteOptions{AK: ak, Nonce: []byte("challenge"), PCRs: pcrs}
	if _, err := attest.VerifyQuote(msg, sig, vals, opts); err != nil {
		t.Errorf("the quote of the same VM does not verify with its HCLAkPub: %v", err)
	}
	// The 2023 sample: quote of sha256:0-7,14, no PCR values.
	r23, err := Parse(read(t, "trustee-2023/az-hcl-data.bin"))
	if err != nil {
		t.Fatal(err)
	}
	ak23, _ := r23.AKPublic()
	m23, s23 := read(t, "trustee-2023/az-vtpm-quote-msg.bin"), read(t, "trustee-2023/az-vtpm-quote-sig.bin")
	if _, err := attest.VerifyQuote(m23, s23, nil, attest.QuoteOptions{AK: ak23, Nonce: []byte("challenge"), PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 14}}); err != nil {
		t.Errorf("2023 quote: %v", err)
	}
	// And a quote from another VM does not verify with this AK.
	if _, err := attest.VerifyQuote(m23, s23, nil, attest.QuoteOptions{AK: ak, Nonce: []byte("challenge"), PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 14}}); !errors.Is(err, attest.ErrInvalid) {
		t.Errorf("a quote of another VM verified with this HCLAkPub: %v", err)
	}
}

func TestNegativeSamples(t *testing.T) {
	good, vcek := read(t, "trustee/hcl-report.bin"), read(t, "trustee/vcek.pem")
	flip := func(off int) []byte {
		b := append([]byte(nil), good...)
		b[off] ^= 0x01
		return b
	}
	editJSON := func() []byte {
		b := append([]byte(nil), good...)
		i := bytes.Index(b, []byte(`911B0EF8`))
		copy(b[i:], `911B0EF9`)
		return b
	}
	for _, tc := range []struct {
		name   string
		report []byte
		vcek   []byte
		err    error
		text   string
	}{
		{"vcek_of_another_chip", read(t, "kinvolk/hcl-report-snp.bin"), read(t, "kinvolk/certs.pem"), ErrChain, "the VCEK is for chip"},
		{"tdx_report", read(t, "cvm-attestation-tools/snp_hcl_report.bin"), vcek, ErrReport, "Intel TDX"},
		{"flipped_byte_in_signed_report", flip(32 + 0x90), vcek, ErrChain, "signature"},
		{"flipped_byte_in_measurement", flip(32 + 0x90 + 5), vcek, ErrChain, "signature"},
		{"json_edited_by_one_character", editJSON(), vcek, ErrChain, "runtime claims"},
		{"not_hcla", append([]byte("HCLB"), good[4:]...), vcek, ErrReport, `want "HCLA"`},
		{"truncated", good[:1000], vcek, ErrReport, "shorter than"},
		{"bad_hash_type", func() []byte { b := append([]byte(nil), good...); b[1228] = 2; return b }(), vcek, ErrReport, "hash type 2"},
		{"claims_size_too_big", func() []byte { b := append([]byte(nil), good...); b[1233] = 0x40; return b }(), vcek, ErrReport, "do not fit"},
		{"no_hclakpub", func() []byte {
			b := append([]byte(nil), good...)
			i := bytes.Index(b, []byte("HCLAkPub"))
			copy(b[i:], "HCLAkPuX")
			return b
		}(), vcek, ErrReport, `no key with kid "HCLAkPub"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(tc.report)
			if err == nil {
				_, err = Verify(r, Options{VCEK: tc.vcek, Now: at})
			}
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("got %v, want %v containing %q", err, tc.err, tc.text)
			}
		})
	}
}

func TestVCEKMustChainToTrustedRoots(t *testing.T) {
	r, _ := Parse(read(t, "trustee/hcl-report.bin"))
	// Genoa roots only: the Milan VCEK has no trusted root.
	roots, _ := AMDRoots()
	delete(roots, "Milan")
	if _, err := Verify(r, Options{VCEK: read(t, "trustee/vcek.pem"), Now: at, TrustedRoots: roots}); !errors.Is(err, ErrChain) {
		t.Errorf("a VCEK with no trusted root verified: %v", err)
	}
	// Expired: long after the VCEK's validity.
	if _, err := Verify(r, Options{VCEK: read(t, "trustee/vcek.pem"), Now: at.AddDate(20, 0, 0)}); !errors.Is(err, ErrChain) {
		t.Errorf("an expired VCEK verified: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile("../../testdata/azure/trustee/hcl-report.bin")
	f.Add(b)
	f.Add(b[:claimsOffset])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrReport) {
				t.Fatalf("error %v does not wrap ErrReport", err)
			}
			return
		}
		if len(r.SNP) != snpReportSize {
			t.Fatalf("SNP report of %d bytes", len(r.SNP))
		}
		if _, err := r.AKPublic(); err != nil {
			t.Fatalf("accepted a report without HCLAkPub: %v", err)
		}
	})
}

// TestFetchVCEK serves the body of a real THIM response from a local
// stand-in for the instance metadata service.
func TestFetchVCEK(t *testing.T) {
	body := read(t, "ms-sidecar/uvm_host_amd_certificate.json")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata") != "true" {
			http.Error(w, "no Metadata header", http.StatusBadRequest)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	pemb, err := FetchVCEK(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseVCEK(pemb)
	if err != nil || !strings.Contains(c.Subject.CommonName, "SEV-VCEK") {
		t.Errorf("fetched VCEK: %v, %v", c, err)
	}
	if _, err := FetchVCEK(context.Background(), "http://127.0.0.1:1/metadata"); err == nil || !strings.Contains(err.Error(), "--vcek FILE") {
		t.Errorf("fetch off Azure: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	r, err := Parse(read(t, "trustee/hcl-report.bin"))
	if err != nil {
		t.Fatal(err)
	}
	i, err := Describe(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(i.ChipID, "19752a44") || i.VMPL != 0 || i.Policy != 0x3001f || i.TCB != "bl3 tee0 snp8 ucode115" || !i.SecureBoot || len(i.Keys) != 2 {
		t.Errorf("Describe = %+v", i)
	}
	if i.CPUID != "" {
		t.Errorf("a version 2 report names CPUID %q", i.CPUID)
	}
	// Trustee's evidence carries a version 3 report from a Milan host.
	var e evidenceV1
	if err := json.Unmarshal(read(t, "trustee/evidence-v1.json"), &e); err != nil {
		t.Fatal(err)
	}
	b, _ := base64.URLEncoding.DecodeString(e.HCLReport)
	r3, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if i, err := Describe(r3); err != nil || i.SNPVersion != 3 || i.CPUID != "family 0x19, model 0x01, stepping 1 (Milan)" {
		t.Errorf("Describe(version 3 report) = %+v, %v", i, err)
	}
}

func TestPolicyKnobs(t *testing.T) {
	r, _ := Parse(read(t, "trustee/hcl-report.bin"))
	vcek := read(t, "trustee/vcek.pem")
	high := kds.TCBParts{BlSpl: 3, TeeSpl: 0, SnpSpl: 9, UcodeSpl: 115}
	if _, err := Verify(r, Options{VCEK: vcek, Now: at, Policy: Policy{MinimumTCB: &high}}); !errors.Is(err, ErrChain) {
		t.Errorf("a report below the minimum TCB verified: %v", err)
	}
	if _, err := Verify(r, Options{VCEK: vcek, Now: at, Policy: Policy{Measurement: make([]byte, 48)}}); !errors.Is(err, ErrChain) {
		t.Errorf("a report with another measurement verified: %v", err)
	}
	if _, err := Verify(r, Options{VCEK: vcek, Now: at, Policy: Policy{VMPL: 1}}); !errors.Is(err, ErrChain) {
		t.Errorf("a VMPL 0 report verified where VMPL 1 is demanded: %v", err)
	}
	if _, err := Verify(r, Options{VCEK: vcek, Now: at, Policy: Policy{VMUniqueID: "00000000-0000-0000-0000-000000000000"}}); !errors.Is(err, ErrChain) || !strings.Contains(err.Error(), "another VM") {
		t.Errorf("another VM's report verified: %v", err)
	}
	if _, err := Verify(r, Options{VCEK: vcek, Now: at, Policy: Policy{VMUniqueID: "911b0ef8-9dba-48b0-b275-4e4df2d39252"}}); err != nil {
		t.Errorf("the VM's own vmUniqueId: %v", err)
	}
	ok := kds.TCBParts{BlSpl: 3, SnpSpl: 8, UcodeSpl: 115}
	if _, err := Verify(r, Options{VCEK: vcek, Now: at, Policy: Policy{MinimumTCB: &ok}}); err != nil {
		t.Errorf("the report's own TCB as minimum: %v", err)
	}
}

// TestTrusteeEvidenceQuotes checks the quotes inside the v0 and v1 evidence
// documents against the HCLAkPub of the report next to them.
func TestTrusteeEvidenceQuotes(t *testing.T) {
	var e1 evidenceV1
	if err := json.Unmarshal(read(t, "trustee/evidence-v1.json"), &e1); err != nil {
		t.Fatal(err)
	}
	var e0 evidenceV0
	if err := json.Unmarshal(read(t, "trustee/evidence-v0.json"), &e0); err != nil {
		t.Fatal(err)
	}
	rep1, _ := base64.URLEncoding.DecodeString(e1.HCLReport)
	msg1, _ := hex.DecodeString(e1.TPMQuote.Message)
	sig1, _ := hex.DecodeString(e1.TPMQuote.Signature)
	vals1 := map[eventlog.PCRKey][]byte{}
	for i, p := range e1.TPMQuote.PCRs {
		vals1[eventlog.PCRKey{PCR: i, Bank: crypto.SHA256}], _ = hex.DecodeString(p)
	}
	vals0 := map[eventlog.PCRKey][]byte{}
	for i, p := range e0.Quote.PCRs {
		vals0[eventlog.PCRKey{PCR: i, Bank: crypto.SHA256}] = ints(p)
	}
	all := make([]int, 24)
	for i := range all {
		all[i] = i
	}
	for _, tc := range []struct {
		name     string
		report   []byte
		msg, sig []byte
		vals     map[eventlog.PCRKey][]byte
	}{
		{"v1", rep1, msg1, sig1, vals1},
		{"v0", ints(e0.Raw), ints(e0.Quote.Message), ints(e0.Quote.Signature), vals0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(tc.report)
			if err != nil {
				t.Fatal(err)
			}
			ak, _ := r.AKPublic()
			if _, err := attest.VerifyQuote(tc.msg, tc.sig, tc.vals, attest.QuoteOptions{AK: ak, Nonce: []byte("challenge"), PCRs: all}); err != nil {
				t.Errorf("quote: %v", err)
			}
		})
	}
}
