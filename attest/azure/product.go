package azure

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/trust"
)

// The AMD product lines rimon has roots for. Each line has its own ARK
// (AMD root key) and ASK (AMD SEV key); a VCEK is issued by the ASK of its
// chip's line. The Zen 4c parts (Bergamo, Siena) belong to Genoa's line.
const (
	Milan = "Milan"
	Genoa = "Genoa"
	Turin = "Turin"
)

// ErrProductMismatch marks a VCEK whose product line is not the one of the
// CPU that produced the report.
var ErrProductMismatch = errors.New("VCEK of another product line")

// nameLines maps the line part of a VCEK's productName extension
// (1.3.6.1.4.1.3704.1.2) to the line whose roots issue it. AMD's KDS writes
// "Milan-B0" for Milan but the bare "Genoa" and "Turin" for later parts,
// and names Zen 4c parts after themselves (AMD 57230, "product name").
var nameLines = map[string]string{
	"Milan":   Milan,
	"Genoa":   Genoa,
	"Bergamo": Genoa,
	"Siena":   Genoa,
	"Turin":   Turin,
}

// oidFmcSpl is the VCEK extension for the FMC security patch level that
// Turin VCEKs carry (AMD 57230).
var oidFmcSpl = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}

// unsupportedVCEK says why a VCEK rimon cannot check yet is refused.
func unsupportedVCEK(vcek *x509.Certificate) error {
	for _, e := range vcek.Extensions {
		if e.Id.Equal(oidFmcSpl) {
			return fmt.Errorf("the VCEK carries an FMC security patch level (OID %v), as VCEKs of Turin's TCB layout do; "+
				"go-sev-guest v0.15.0 reads neither that extension nor the layout, so rimon cannot check this VCEK's TCB against the report and refuses it", oidFmcSpl)
		}
	}
	return nil
}

// productLineOfName returns the line of a VCEK product name: a name of
// nameLines, alone or followed by a stepping such as "-B0".
func productLineOfName(name string) (string, bool) {
	base, stepping, hasStepping := strings.Cut(name, "-")
	line, ok := nameLines[base]
	if !ok {
		return "", false
	}
	if hasStepping && (len(stepping) != 2 || stepping[0] < 'A' || stepping[0] > 'Z' || stepping[1] < '0' || stepping[1] > '9') {
		return "", false
	}
	return line, true
}

// productLineOfCPUID returns the line of the CPU family and model a
// version 3 or later SNP report carries (CPUID_FAM_ID, CPUID_MOD_ID). The
// ranges are the ones virtee/sev and Trustee use: family 19h models
// 00h-0Fh are Milan, 10h-1Fh Genoa, A0h-AFh the Zen 4c parts on Genoa's
// roots; family 1Ah models 00h-11h are Turin.
func productLineOfCPUID(family, model byte) (string, bool) {
	switch family {
	case 0x19:
		switch {
		case model <= 0x0F:
			return Milan, true
		case model >= 0x10 && model <= 0x1F, model >= 0xA0 && model <= 0xAF:
			return Genoa, true
		}
	case 0x1A:
		if model <= 0x11 {
			return Turin, true
		}
	}
	return "", false
}

// Offsets of the CPUID fields in an SNP report of version 3 or later (SEV
// SNP Firmware ABI 1.55, Table 23 ATTESTATION_REPORT).
const (
	offCPUIDFamily   = 0x188
	offCPUIDModel    = 0x189
	offCPUIDStepping = 0x18A
)

// productLine decides the product line whose ASK must have issued the
// VCEK, and says how. A report of version 3 or later names its CPU: that
// decides, and a VCEK of another line is refused. Its stepping is not
// compared with the VCEK's, because AMD's KDS has issued VCEKs with the
// wrong stepping (google/go-sev-guest issue 115). CPUID fields that are all
// zero, as in a version 2 report, leave the VCEK's product name to decide,
// as go-sev-guest does.
func productLine(snp []byte, version uint32, vcekName string) (line, how string, err error) {
	nameLine, nameOK := productLineOfName(vcekName)
	if version >= 3 && snp[offCPUIDFamily]|snp[offCPUIDModel]|snp[offCPUIDStepping] != 0 {
		fam, mod, step := snp[offCPUIDFamily], snp[offCPUIDModel], snp[offCPUIDStepping]
		cpu := fmt.Sprintf("family 0x%02x, model 0x%02x, stepping %d", fam, mod, step)
		line, ok := productLineOfCPUID(fam, mod)
		if !ok {
			return "", "", fmt.Errorf("the report comes from a CPU of %s, which is no SEV-SNP product line rimon knows (Milan, Genoa with Bergamo and Siena, Turin)", cpu)
		}
		if !nameOK {
			return "", "", fmt.Errorf("the VCEK's product name %q is unknown; the report comes from a %s CPU (%s)", vcekName, line, cpu)
		}
		if nameLine != line {
			return "", "", fmt.Errorf("%w: the VCEK is for product %q (%s), the report comes from a %s CPU (%s)", ErrProductMismatch, vcekName, nameLine, line, cpu)
		}
		return line, fmt.Sprintf("from the report's CPUID (%s); the VCEK says %q", cpu, vcekName), nil
	}
	if !nameOK {
		return "", "", fmt.Errorf("the VCEK's product name %q is unknown (known: Milan, Genoa, Bergamo, Siena, Turin, alone or with a stepping such as -B0), and report version %d names no CPU", vcekName, version)
	}
	return nameLine, fmt.Sprintf("from the VCEK's product name %q (report version %d names no CPU)", vcekName, version), nil
}

// checkVCEKChain checks that the VCEK has the form AMD's KDS gives it and
// was issued by the ASK of one of roots, which chains to its ARK at now.
// roots are the caller's trusted roots for line, never certificates that
// came with the evidence.
func checkVCEKChain(vcek *x509.Certificate, line string, roots []*trust.AMDRootCerts, now time.Time) error {
	switch {
	case vcek.Version != 3:
		return fmt.Errorf("VCEK certificate version %d, want 3", vcek.Version)
	case vcek.SignatureAlgorithm != x509.SHA384WithRSAPSS:
		return fmt.Errorf("VCEK signed with %v, want SHA-384 with RSA-PSS", vcek.SignatureAlgorithm)
	case vcek.Subject.CommonName != "SEV-VCEK":
		return fmt.Errorf("VCEK subject %q, want SEV-VCEK", vcek.Subject.CommonName)
	case vcek.Issuer.CommonName != "SEV-"+line:
		return fmt.Errorf("the VCEK is issued by %q, the ASK of %s is SEV-%s", vcek.Issuer.CommonName, line, line)
	}
	if k, ok := vcek.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P384() {
		return errors.New("the VCEK's key is not ECDSA P-384")
	}
	if err := errors.Join(amdName("VCEK subject", vcek.Subject), amdName("VCEK issuer", vcek.Issuer)); err != nil {
		return err
	}
	var errs []error
	for i, r := range roots {
		opts := r.X509Options(now, abi.VcekReportSigner)
		if opts == nil || r.ProductCerts.Ask.Subject.CommonName != "SEV-"+line || r.ProductCerts.Ark.Subject.CommonName != "ARK-"+line {
			errs = append(errs, fmt.Errorf("trusted root %d for %s is not an ASK SEV-%s and ARK ARK-%s", i+1, line, line, line))
			continue
		}
		if _, err := vcek.Verify(*opts); err != nil {
			errs = append(errs, fmt.Errorf("trusted root %d for %s: %w", i+1, line, err))
			continue
		}
		return nil
	}
	return errors.Join(errs...)
}

// amdName checks the organization fields AMD's KDS writes in every name of
// its certificates (AMD 57230, as go-sev-guest checks them).
func amdName(role string, n pkix.Name) error {
	for _, f := range []struct {
		field string
		got   []string
		want  string
	}{
		{"country", n.Country, "US"},
		{"locality", n.Locality, "Santa Clara"},
		{"state", n.Province, "CA"},
		{"organization", n.Organization, "Advanced Micro Devices"},
		{"organizational unit", n.OrganizationalUnit, "Engineering"},
	} {
		if len(f.got) != 1 || f.got[0] != f.want {
			return fmt.Errorf("%s %s is %q, AMD's is %q", role, f.field, f.got, f.want)
		}
	}
	return nil
}
