package verifier

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/azure"
	"github.com/rimon-dev/rimon/policy"
)

// VerifyAzure checks Azure hardware evidence (o.VCEK is taken from the
// blob) and returns the chain, whose AK the SNP report vouches for. A
// failure is a [*CheckError] named after the failed step: [CheckAzure]
// followed by the [azure.StepError] step, [CheckAzureReport], or
// [CheckAzureAK].
func VerifyAzure(blob *attest.AzureBlob, o azure.Options) (*azure.Chain, error) {
	r, err := azure.Parse(blob.HCLReport)
	if err != nil {
		return nil, &CheckError{Check: CheckAzureReport, Err: err}
	}
	o.VCEK = blob.VCEK
	c, err := azure.Verify(r, o)
	if err != nil {
		check := CheckAzureAK
		var se *azure.StepError
		if errors.As(err, &se) {
			check = CheckAzure + se.Step
		}
		return nil, &CheckError{Check: check, Err: err}
	}
	return c, nil
}

// SNPPolicy turns the reference file's azure section into the SNP
// report's policy.
func SNPPolicy(p policy.SNPPolicy) azure.Policy {
	out := azure.Policy{AllowDebug: p.AllowDebug, AllowMigrationAgent: p.AllowMigrationAgent, VMPL: p.VMPL, Measurement: p.Measurement, VMUniqueID: p.VMUniqueID}
	if p.MinimumTCB != nil {
		out.MinimumTCB = &kds.TCBParts{BlSpl: p.MinimumTCB[0], TeeSpl: p.MinimumTCB[1], SnpSpl: p.MinimumTCB[2], UcodeSpl: p.MinimumTCB[3]}
	}
	return out
}

// TestRoots reads a bundle (PEM) of one product line's ASK and ARK, for
// [Options.AzureRoots] in place of AMD's roots: the ARK's subject is
// "ARK-<line>" for a line rimon knows (Milan, Genoa, Turin), the ASK's
// "SEV-<line>", signed by that ARK, in any order. Other certificates (AMD
// ships the ASVK in the same file) are ignored. Trusting roots other than
// AMD's makes a verdict prove nothing about real hardware: for tests only.
func TestRoots(bundle []byte) (line string, root *trust.AMDRootCerts, err error) {
	line, ask, ark, err := productLineOfBundle(bundle)
	if err != nil {
		return "", nil, err
	}
	root = trust.AMDRootCertsProduct(line)
	if err := root.Decode(ask.Raw, ark.Raw); err != nil {
		return "", nil, err
	}
	return line, root, nil
}

// productLineOfBundle returns the product line of a bundle holding an
// ARK and its ASK (see [TestRoots]).
func productLineOfBundle(b []byte) (line string, ask, ark *x509.Certificate, err error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return "", nil, nil, fmt.Errorf("certificate %d: %v", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	for _, c := range certs {
		if strings.HasPrefix(c.Subject.CommonName, "ARK-") {
			ark = c
		}
	}
	if ark == nil {
		return "", nil, nil, errors.New("no ARK certificate (CN ARK-<product line>) in the bundle")
	}
	line = strings.TrimPrefix(ark.Subject.CommonName, "ARK-")
	switch line {
	case azure.Milan, azure.Genoa, azure.Turin:
	default:
		return "", nil, nil, fmt.Errorf("ARK %q is of no product line rimon knows (Milan, Genoa, Turin)", ark.Subject.CommonName)
	}
	var names []string
	for _, c := range certs {
		if c != ark {
			names = append(names, strconv.Quote(c.Subject.CommonName))
		}
		if c.Subject.CommonName == "SEV-"+line {
			ask = c
		}
	}
	if ask == nil {
		return "", nil, nil, fmt.Errorf("no ASK SEV-%s for the ARK %s in the bundle (other certificates: %s)", line, ark.Subject.CommonName, strings.Join(names, ", "))
	}
	if err := ask.CheckSignatureFrom(ark); err != nil {
		return "", nil, nil, fmt.Errorf("the ASK %s is not signed by the ARK %s: %v", ask.Subject.CommonName, ark.Subject.CommonName, err)
	}
	return line, ask, ark, nil
}
