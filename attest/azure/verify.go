package azure

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
)

// ErrChain marks a report whose chain of trust does not hold.
var ErrChain = errors.New("SEV-SNP chain invalid")

// StepError says which step of the chain failed. It unwraps to [ErrChain]
// and to the cause.
type StepError struct {
	Step string
	Err  error
}

// Error describes the failure.
func (e *StepError) Error() string { return ErrChain.Error() + ": " + e.Step + ": " + e.Err.Error() }

// Unwrap lets errors.Is find ErrChain and the cause.
func (e *StepError) Unwrap() []error { return []error{ErrChain, e.Err} }

// Step names, in the order [Verify] runs them.
const (
	StepRoots   = "AMD root"
	StepVCEK    = "VCEK"
	StepReport  = "SNP report"
	StepProduct = "product"
	StepChain   = "signature and certificate chain"
	StepPolicy  = "report policy"
	StepClaims  = "runtime claims"
)

// Policy is what the verifier demands of the SNP report. Its zero value is
// the safe default: no debug, no migration agent, VMPL 0.
type Policy struct {
	// AllowDebug accepts guests whose policy allows the host to debug
	// (decrypt) them. Insecure.
	AllowDebug bool
	// AllowMigrationAgent accepts guests that may have a migration agent.
	AllowMigrationAgent bool
	// VMPL is the VM privilege level the report must come from (Azure's
	// paravisor reports at 0).
	VMPL int
	// MinimumTCB, when set, is the lowest acceptable reported TCB.
	MinimumTCB *kds.TCBParts
	// Measurement, when set, is the launch measurement the report must carry.
	Measurement []byte
	// VMUniqueID, when set, is the vmUniqueId the runtime claims must carry.
	VMUniqueID string
}

// Options configures [Verify].
type Options struct {
	// VCEK is the VCEK certificate, PEM or DER. Further certificates in a
	// PEM bundle (ASK, ARK) are ignored: trust comes from TrustedRoots only.
	VCEK []byte
	// TrustedRoots maps a product line ("Milan", "Genoa", "Turin") to the
	// ARK/ASK pairs to trust. Nil means AMD's published roots.
	TrustedRoots map[string][]*trust.AMDRootCerts
	// Now is the time for certificate validity; zero means time.Now.
	Now    time.Time
	Policy Policy
}

// Chain is the result of a verified report, step by step.
type Chain struct {
	// Product is the product line (Milan, Genoa, Turin) whose ARK and ASK
	// issued the VCEK.
	Product string
	// VCEKProduct is the VCEK's product name extension, such as "Milan-B0"
	// or "Genoa".
	VCEKProduct string
	Steps       []string
	ChipID      string
	Measurement string
	TCB         kds.TCBParts
	ReportData  []byte
	VMPL        uint32
	GuestPolicy uint64
	// AK is the HCLAkPub key, now vouched for by the SNP report.
	AK *rsa.PublicKey
}

// AMDRoots returns AMD's published ARK/ASK for every product line rimon
// knows: the trusted roots unless a caller names others.
func AMDRoots() (map[string][]*trust.AMDRootCerts, error) {
	out := map[string][]*trust.AMDRootCerts{}
	for _, line := range []string{Milan, Genoa, Turin} {
		r, err := trust.GetDefaultRootCerts(line)
		if err != nil {
			return nil, err
		}
		out[line] = []*trust.AMDRootCerts{r}
	}
	return out, nil
}

// ParseVCEK reads the first certificate of a PEM bundle, or DER.
func ParseVCEK(b []byte) (*x509.Certificate, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("VCEK: %w", err)
	}
	return c, nil
}

// Verify checks the report's chain of trust: the product line of the chip
// (from the report's CPUID fields when it carries them, else from the
// VCEK's product name), the VCEK against the trusted AMD roots of that
// line, the SNP report's signature by the VCEK, the report's fields
// against the policy, and the binding of the runtime claims (and so of
// HCLAkPub) into REPORT_DATA. It returns the chain only when every step
// passed; a failure is a [*StepError].
func Verify(r *Report, o Options) (*Chain, error) {
	fail := func(step string, err error) error { return &StepError{Step: step, Err: err} }
	roots := o.TrustedRoots
	if roots == nil {
		var err error
		if roots, err = AMDRoots(); err != nil {
			return nil, fail(StepRoots, err)
		}
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	vcek, err := ParseVCEK(o.VCEK)
	if err != nil {
		return nil, fail(StepVCEK, err)
	}
	if err := unsupportedVCEK(vcek); err != nil {
		return nil, fail(StepVCEK, err)
	}
	ext, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		return nil, fail(StepVCEK, fmt.Errorf("not a VCEK certificate: %w", err))
	}
	rep, err := abi.ReportToProto(r.SNP)
	if err != nil {
		return nil, fail(StepReport, err)
	}
	if info, err := abi.ParseSignerInfo(rep.GetSignerInfo()); err != nil {
		return nil, fail(StepReport, err)
	} else if info.SigningKey != abi.VcekReportSigner {
		return nil, fail(StepReport, fmt.Errorf("signed by the %v, not by a VCEK (Azure reports are VCEK-signed)", info.SigningKey))
	}
	line, how, err := productLine(r.SNP, rep.GetVersion(), ext.ProductName)
	if err != nil {
		return nil, fail(StepProduct, err)
	}
	if !bytes.Equal(ext.HWID, rep.GetChipId()) {
		return nil, fail(StepVCEK, fmt.Errorf("the VCEK is for chip %x…, the report comes from chip %x…", first(ext.HWID), first(rep.GetChipId())))
	}
	if len(roots[line]) == 0 {
		return nil, fail(StepRoots, fmt.Errorf("no trusted ARK/ASK for product line %s; the product line comes %s", line, how))
	}
	if err := checkVCEKChain(vcek, line, roots[line], now); err != nil {
		return nil, fail(StepChain, err)
	}
	if err := verify.SnpReportSignature(r.SNP, vcek); err != nil {
		return nil, fail(StepChain, err)
	}
	att := &spb.Attestation{Report: rep, CertificateChain: &spb.CertificateChain{VcekCert: vcek.Raw}}
	vmpl := o.Policy.VMPL
	vo := &validate.Options{
		GuestPolicy:               abi.SnpPolicy{SMT: true, Debug: o.Policy.AllowDebug, MigrateMA: o.Policy.AllowMigrationAgent},
		VMPL:                      &vmpl,
		PermitProvisionalFirmware: true, // Azure hosts run committed TCB below current
		Measurement:               o.Policy.Measurement,
	}
	if o.Policy.MinimumTCB != nil {
		vo.MinimumTCB = *o.Policy.MinimumTCB
	}
	if err := validate.SnpAttestation(att, vo); err != nil {
		return nil, fail(StepPolicy, err)
	}
	d := r.ClaimsDigest()
	if !bytes.Equal(rep.GetReportData()[:32], d[:]) {
		return nil, fail(StepClaims, fmt.Errorf("REPORT_DATA[0:32] is %x, SHA-256 of the claims is %x: the claims were altered", rep.GetReportData()[:32], d))
	}
	ak, err := r.AKPublic()
	if err != nil {
		return nil, err
	}
	if o.Policy.VMUniqueID != "" && !strings.EqualFold(o.Policy.VMUniqueID, r.VMConfig.VMUniqueID) {
		return nil, fail(StepClaims, fmt.Errorf("vmUniqueId is %s, the reference wants %s: another VM", r.VMConfig.VMUniqueID, o.Policy.VMUniqueID))
	}
	c := &Chain{
		Product:     line,
		VCEKProduct: ext.ProductName,
		ChipID:      hex.EncodeToString(rep.GetChipId()),
		Measurement: hex.EncodeToString(rep.GetMeasurement()),
		TCB:         kds.DecomposeTCBVersion(kds.TCBVersion(rep.GetReportedTcb())),
		ReportData:  rep.GetReportData(),
		VMPL:        rep.GetVmpl(),
		GuestPolicy: rep.GetPolicy(),
		AK:          ak,
	}
	c.Steps = []string{
		fmt.Sprintf("AMD root: ARK and ASK for %s from the trusted roots; the product line %s", line, how),
		fmt.Sprintf("VCEK: issued by the ASK, valid at %s, for chip %s…", now.UTC().Format(time.RFC3339), c.ChipID[:16]),
		"SNP report: signed by the VCEK (ECDSA P-384, SHA-384)",
		fmt.Sprintf("report fields: VMPL %d, policy 0x%x (no debug, no migration agent), TCB bl%d tee%d snp%d ucode%d",
			c.VMPL, c.GuestPolicy, c.TCB.BlSpl, c.TCB.TeeSpl, c.TCB.SnpSpl, c.TCB.UcodeSpl),
		"runtime claims: SHA-256 equals REPORT_DATA[0:32]; vmUniqueId " + r.VMConfig.VMUniqueID,
		"HCLAkPub: taken from the bound runtime claims",
	}
	return c, nil
}

func first(b []byte) []byte {
	if len(b) > 4 {
		return b[:4]
	}
	return b
}

// SameKey reports whether a public key is the HCLAkPub RSA key.
func SameKey(ak *rsa.PublicKey, k any) bool {
	rk, ok := k.(*rsa.PublicKey)
	return ok && rk.E == ak.E && rk.N.Cmp(ak.N) == 0
}
