package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
)

// The paths by which an AK is vouched for.
const (
	// PathActivation: a vendor CA vouches for the EK, and credential
	// activation proved the AK lives in the EK's TPM.
	PathActivation = "ek-activation"
	// PathAKCert: a cloud root vouches for the AK through its certificate.
	PathAKCert = "ak-certificate"
)

// Names of the steps of [Enroll], in the order they run; a
// [*CheckError] names the one that failed.
const (
	StepAK          = "AK public area"
	StepAKCert      = "AK certificate"
	StepEKCert      = "EK certificate"
	StepEKChain     = "vendor CA"
	StepEK          = "EK"
	StepActivation  = "credential activation"
	StepNoTrustPath = "trust path"
)

// ErrRefused is what every [*CheckError] unwraps to: the identity was not
// vouched for.
var ErrRefused = errors.New("enrollment refused")

// CheckError is a failed enrollment step.
type CheckError struct {
	// Step names the step ([StepAK] ...).
	Step string
	Err  error
}

// Error describes the failure with its step.
func (e *CheckError) Error() string { return e.Step + ": " + e.Err.Error() }

// Unwrap gives [ErrRefused] and the cause.
func (e *CheckError) Unwrap() []error { return []error{ErrRefused, e.Err} }

func refuse(step string, format string, a ...any) error {
	return &CheckError{Step: step, Err: fmt.Errorf(format, a...)}
}

// Activator sends an activation request to the agent (POST /v1/activate)
// and returns its answer.
type Activator func(ctx context.Context, req *ActivationRequest) (*ActivationResponse, error)

// Options says what [Enroll] trusts.
type Options struct {
	// EKCAs are the TPM vendors' CAs; nil disables the EK path.
	EKCAs *CAPool
	// AKCAs are cloud roots that vouch for AK certificates; nil disables
	// the AK certificate path.
	AKCAs *CAPool
	// EKIndex, when not 0, picks the EK whose certificate is at that NV
	// index; by default the first EK (in the document's order) whose
	// certificate and key check out is used.
	EKIndex uint32
	// Now is the time certificates are checked at (default time.Now).
	Now func() time.Time
	// Rand makes the secret and the credential's seed (default
	// crypto/rand.Reader).
	Rand io.Reader
}

// AK is an attestation key whose public area passed [CheckAK].
type AK struct {
	// Public is the TPMT_PUBLIC.
	Public []byte
	// Key is the public key.
	Key crypto.PublicKey
	// Name is the TPM name (name algorithm and digest of Public).
	Name []byte
}

// Step is one link of the chain of trust, for the caller to print.
type Step struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

// Result is a vouched AK and how it was vouched for.
type Result struct {
	// Path is [PathActivation] or [PathAKCert].
	Path string
	// AK is the vouched attestation key.
	AK *AK
	// EK is the EK certificate (on [PathActivation]).
	EK *EKCert
	// EKIndex is the EK certificate's NV index (on [PathActivation]).
	EKIndex uint32
	// AKCert is the AK certificate (on [PathAKCert]).
	AKCert *x509.Certificate
	// Chain is the certificate chain that vouched, leaf first.
	Chain []*x509.Certificate
	// Steps are the links of the chain of trust, from the CA to the AK.
	Steps []Step
	// Refused lists, on success, what an earlier path said (an AK
	// certificate that did not verify before the EK path vouched).
	Refused []string
}

// Enroll decides whether to trust the AK of id. On the AK certificate
// path (when o.AKCAs is set and id carries AK certificates) it checks that
// one of them chains to o.AKCAs and certifies exactly the AK. Otherwise,
// or when that fails and o.EKCAs is set, it checks an EK certificate
// against o.EKCAs, that the EK public area's key is the certificate's,
// makes a credential for the AK's name under that EK with a fresh random
// secret, has activate deliver it, and checks the secret comes back.
// It returns a [*CheckError] naming the step that failed.
func Enroll(ctx context.Context, id *Identity, o Options, activate Activator) (*Result, error) {
	if o.EKCAs == nil && o.AKCAs == nil {
		return nil, refuse(StepNoTrustPath, "no CA given: nothing can vouch for the AK (give the EK CAs or a cloud AK root)")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	ak, err := CheckAK(id.AK.Public, id.AK.Name)
	if err != nil {
		return nil, err
	}
	var refused []string
	if o.AKCAs != nil && len(id.AKCerts) > 0 {
		res, err := viaAKCert(id, ak, o)
		if err == nil {
			return res, nil
		}
		if o.EKCAs == nil {
			return nil, err
		}
		refused = append(refused, err.Error())
	} else if o.EKCAs == nil {
		return nil, refuse(StepAKCert, "the agent shows no AK certificate (GCE 0x01C10000/0x01C10002, Azure 0x01C101D0), and no EK CA was given")
	}
	res, err := viaActivation(ctx, id, ak, o, activate)
	if err != nil {
		return nil, err
	}
	res.Refused = refused
	return res, nil
}

func viaAKCert(id *Identity, ak *AK, o Options) (*Result, error) {
	var errs []string
	for _, nc := range id.AKCerts {
		certs, err := ParseCertificates(nc.Certificate)
		if err != nil {
			errs = append(errs, fmt.Sprintf("0x%08X: %v", nc.NVIndex, err))
			continue
		}
		c := certs[0]
		if c.IsCA || (c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageDigitalSignature == 0) {
			errs = append(errs, fmt.Sprintf("0x%08X: %q is not a signing key's certificate", nc.NVIndex, name(c)))
			continue
		}
		chain, err := o.AKCAs.Verify(c, o.Now())
		if err != nil {
			errs = append(errs, fmt.Sprintf("0x%08X: %v", nc.NVIndex, err))
			continue
		}
		if !SameKey(c.PublicKey, ak.Key) {
			errs = append(errs, fmt.Sprintf("0x%08X: the certificate's key is not the AK the agent quotes with", nc.NVIndex))
			continue
		}
		root := chain[len(chain)-1]
		steps := []Step{{"cloud CA", caLabel(o.AKCAs, root)}}
		for i := len(chain) - 2; i >= 1; i-- {
			steps = append(steps, Step{"intermediate", chain[i].Subject.String()})
		}
		steps = append(steps,
			Step{StepAKCert, fmt.Sprintf("NV 0x%08X, %s, serial %s", nc.NVIndex, name(c), c.SerialNumber)},
			Step{"AK", fmt.Sprintf("%s, name %s (the certificate's key)", keyDesc(ak.Key), hex.EncodeToString(ak.Name))})
		return &Result{Path: PathAKCert, AK: ak, AKCert: c, Chain: chain, Steps: steps}, nil
	}
	return nil, refuse(StepAKCert, "no AK certificate is vouched for by the cloud CA: %s", strings.Join(errs, "; "))
}

func viaActivation(ctx context.Context, id *Identity, ak *AK, o Options, activate Activator) (*Result, error) {
	if len(id.EKs) == 0 {
		return nil, refuse(StepEKCert, "the agent shows no EK certificate")
	}
	var first error
	var msgs []string
	for _, e := range id.EKs {
		if o.EKIndex != 0 && e.NVIndex != o.EKIndex {
			continue
		}
		res, err := checkEK(e, o)
		if err != nil {
			if first == nil {
				first = err
			}
			// The step is named once, in front, when it is the first's.
			var ce, fe *CheckError
			if errors.As(err, &ce) && errors.As(first, &fe) && ce.Step == fe.Step {
				msgs = append(msgs, fmt.Sprintf("EK 0x%08X: %v", e.NVIndex, ce.Err))
			} else {
				msgs = append(msgs, fmt.Sprintf("EK 0x%08X: %v", e.NVIndex, err))
			}
			continue
		}
		return activateWith(ctx, res, e, ak, o, activate)
	}
	if first == nil {
		return nil, refuse(StepEKCert, "the agent shows no EK certificate at NV 0x%08X", o.EKIndex)
	}
	var ce *CheckError
	errors.As(first, &ce)
	if len(msgs) == 1 {
		return nil, first
	}
	return nil, &CheckError{Step: ce.Step, Err: errors.New(strings.Join(msgs, "; "))}
}

// checkEK checks one EK's certificate, chain and public area.
func checkEK(e EKInfo, o Options) (*Result, error) {
	ekc, err := ParseEKCert(e.Certificate)
	if err != nil {
		return nil, &CheckError{Step: StepEKCert, Err: err}
	}
	chain, err := o.EKCAs.Verify(ekc.Cert, o.Now())
	if err != nil {
		return nil, refuse(StepEKChain, "the EK certificate %s: %v", describeEK(ekc), err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](e.Public)
	if err != nil {
		return nil, refuse(StepEK, "EK public area: %v", err)
	}
	a := pub.ObjectAttributes
	if !a.Restricted || !a.Decrypt || a.SignEncrypt || !a.FixedTPM || !a.FixedParent {
		return nil, refuse(StepEK, "the EK public area is not a restricted, fixedTPM decryption key")
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, refuse(StepEK, "EK public key: %v", err)
	}
	if !SameKey(key, ekc.Cert.PublicKey) {
		return nil, refuse(StepEK, "the EK the TPM uses (%s) is not the key of its EK certificate %s", keyDesc(key), describeEK(ekc))
	}
	root := chain[len(chain)-1]
	steps := []Step{{"vendor CA", caLabel(o.EKCAs, root)}}
	for i := len(chain) - 2; i >= 1; i-- {
		steps = append(steps, Step{"intermediate", chain[i].Subject.String()})
	}
	steps = append(steps,
		Step{StepEKCert, fmt.Sprintf("NV 0x%08X, %s", e.NVIndex, describeEK(ekc))},
		Step{StepEK, fmt.Sprintf("the TPM's EK, template %s, key sha256:%s (the certificate's key)", e.Template, fingerprint(key))})
	return &Result{Path: PathActivation, EK: ekc, EKIndex: e.NVIndex, Chain: chain, Steps: steps}, nil
}

func activateWith(ctx context.Context, res *Result, e EKInfo, ak *AK, o Options, activate Activator) (*Result, error) {
	pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](e.Public) // checked by checkEK
	secret := make([]byte, SecretSize)
	if _, err := io.ReadFull(o.Rand, secret); err != nil {
		return nil, fmt.Errorf("random secret: %w", err)
	}
	idObject, encSecret, err := MakeCredential(o.Rand, pub, ak.Name, secret)
	if err != nil {
		return nil, refuse(StepActivation, "%v", err)
	}
	if activate == nil {
		return nil, refuse(StepActivation, "no way to reach the agent's TPM")
	}
	ans, err := activate(ctx, &ActivationRequest{NVIndex: e.NVIndex, Credential: idObject, Secret: encSecret})
	if err != nil {
		return nil, refuse(StepActivation, "the TPM did not release the secret sealed to its EK for AK %s: %v (the AK is not in the TPM that holds this EK)", hex.EncodeToString(ak.Name), err)
	}
	if ans == nil || subtle.ConstantTimeCompare(ans.Secret, secret) != 1 {
		return nil, refuse(StepActivation, "the answer is not the secret just sent (a replayed or forged answer)")
	}
	res.AK = ak
	res.Steps = append(res.Steps,
		Step{StepActivation, fmt.Sprintf("a fresh %d-byte secret sealed to the EK for AK name %s came back", SecretSize, hex.EncodeToString(ak.Name))},
		Step{"AK", fmt.Sprintf("%s, restricted signing key, fixedTPM (in the same TPM as the EK)", keyDesc(ak.Key))})
	return res, nil
}

// CheckAK checks an AK's TPMT_PUBLIC: a restricted signing key
// (restricted, sign, not decrypt), fixedTPM, fixedParent and
// sensitiveDataOrigin (made in this TPM and never leaving it), with a
// signing scheme rimon verifies (RSASSA or RSA-PSS, or ECDSA on NIST
// P-256, P-384 or P-521, with SHA-256 or stronger). claimedName (hex),
// when given, must be the name computed from the area.
func CheckAK(public []byte, claimedName string) (*AK, error) {
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](public)
	if err != nil {
		return nil, refuse(StepAK, "does not parse: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), public) {
		return nil, refuse(StepAK, "bytes after the TPMT_PUBLIC")
	}
	a := pub.ObjectAttributes
	var missing []string
	for _, c := range []struct {
		ok   bool
		name string
	}{{a.Restricted, "restricted"}, {a.SignEncrypt, "sign"}, {!a.Decrypt, "not decrypt"}, {a.FixedTPM, "fixedTPM"},
		{a.FixedParent, "fixedParent"}, {a.SensitiveDataOrigin, "sensitiveDataOrigin"}} {
		if !c.ok {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return nil, refuse(StepAK, "not an attestation key: want %s", strings.Join(missing, ", "))
	}
	switch pub.NameAlg {
	case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
	default:
		return nil, refuse(StepAK, "name algorithm 0x%04x (want SHA-256, SHA-384 or SHA-512)", uint16(pub.NameAlg))
	}
	var scheme tpm2.TPMAlgID
	var hash tpm2.TPMIAlgHash
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		p, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, refuse(StepAK, "RSA parameters: %v", err)
		}
		scheme = p.Scheme.Scheme
		switch scheme {
		case tpm2.TPMAlgRSASSA:
			d, err := p.Scheme.Details.RSASSA()
			if err != nil {
				return nil, refuse(StepAK, "scheme: %v", err)
			}
			hash = d.HashAlg
		case tpm2.TPMAlgRSAPSS:
			d, err := p.Scheme.Details.RSAPSS()
			if err != nil {
				return nil, refuse(StepAK, "scheme: %v", err)
			}
			hash = d.HashAlg
		default:
			return nil, refuse(StepAK, "RSA scheme 0x%04x: rimon verifies RSASSA and RSA-PSS quotes", uint16(scheme))
		}
	case tpm2.TPMAlgECC:
		p, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, refuse(StepAK, "ECC parameters: %v", err)
		}
		if p.Scheme.Scheme != tpm2.TPMAlgECDSA {
			return nil, refuse(StepAK, "ECC scheme 0x%04x: rimon verifies ECDSA quotes", uint16(p.Scheme.Scheme))
		}
		switch p.CurveID {
		case tpm2.TPMECCNistP256, tpm2.TPMECCNistP384, tpm2.TPMECCNistP521:
		default:
			return nil, refuse(StepAK, "curve 0x%04x (want NIST P-256, P-384 or P-521)", uint16(p.CurveID))
		}
		d, err := p.Scheme.Details.ECDSA()
		if err != nil {
			return nil, refuse(StepAK, "scheme: %v", err)
		}
		hash = d.HashAlg
	default:
		return nil, refuse(StepAK, "key type 0x%04x (want RSA or ECC)", uint16(pub.Type))
	}
	switch hash {
	case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
	default:
		return nil, refuse(StepAK, "signing hash 0x%04x (want SHA-256 or stronger)", uint16(hash))
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, refuse(StepAK, "public key: %v", err)
	}
	if _, err := attest.Fingerprint(key); err != nil {
		return nil, refuse(StepAK, "public key: %v", err)
	}
	n, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, refuse(StepAK, "name: %v", err)
	}
	if claimedName != "" && !strings.EqualFold(claimedName, hex.EncodeToString(n.Buffer)) {
		return nil, refuse(StepAK, "the name given (%s) is not the public area's (%s)", claimedName, hex.EncodeToString(n.Buffer))
	}
	return &AK{Public: public, Key: key, Name: n.Buffer}, nil
}

func caLabel(p *CAPool, root *x509.Certificate) string {
	s := root.Subject.String()
	if src := p.Source(root); src != "" {
		s += " (" + src + ")"
	}
	return s
}

func describeEK(ek *EKCert) string {
	var parts []string
	if ek.Manufacturer != "" {
		parts = append(parts, "manufacturer "+ek.Manufacturer)
	}
	if ek.Model != "" {
		parts = append(parts, "model "+ek.Model)
	}
	parts = append(parts, "issued by "+ek.Cert.Issuer.String(), "serial "+ek.Cert.SerialNumber.String())
	if len(ek.Repairs) > 0 {
		parts = append(parts, "read despite: "+strings.Join(ek.Repairs, ", "))
	}
	return strings.Join(parts, ", ")
}

func fingerprint(k crypto.PublicKey) string {
	fp, err := attest.Fingerprint(k)
	if err != nil {
		return fmt.Sprintf("(%T)", k)
	}
	return fp
}

func keyDesc(k crypto.PublicKey) string {
	fp, err := attest.Fingerprint(k)
	if err != nil {
		return fmt.Sprintf("%T", k)
	}
	return fmt.Sprintf("%s key sha256:%s", keyType(k), fp)
}
