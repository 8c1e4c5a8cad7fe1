package tpm

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// The endorsement key (EK) and the certificates that vouch for it, as the
// TCG EK Credential Profile for TPM Family 2.0 (version 2.5, section 2.2)
// lays them out: each EK template has an NV index for its certificate, the
// low range (0x01C00002 RSA 2048, 0x01C0000A ECC P-256) and the high range
// (0x01C00012-0x01C0001E, two indices per template: the certificate at the
// even one).

// ErrNoEK means the TPM holds no EK certificate rimon knows where to find.
var ErrNoEK = errors.New("no EK certificate in NV")

// EKSlot is one of the TCG EK templates: where its certificate lives, the
// persistent handle an EK made from it is usually kept at, and the
// template itself.
type EKSlot struct {
	// CertIndex is the NV index of the EK certificate.
	CertIndex uint32
	// Handle is the persistent handle where provisioning software (swtpm_setup,
	// tpm2_createek, Windows) usually keeps the EK; 0 when there is none.
	Handle tpm2.TPMHandle
	// Label names the template, such as "RSA 2048 (L-1)".
	Label string
	// Template is the TCG default template.
	Template tpm2.TPMTPublic
}

// TCG EK Credential Profile 2.5, Table 8: policy B of the high-range
// templates (policy A, of the low range, is in go-tpm's templates).
var (
	policyBSHA256 = []byte{
		0xCA, 0x3D, 0x0A, 0x99, 0xA2, 0xB9, 0x39, 0x06, 0xF7, 0xA3, 0x34, 0x24, 0x14, 0xEF, 0xCF, 0xB3,
		0xA3, 0x85, 0xD4, 0x4C, 0xD1, 0xFD, 0x45, 0x90, 0x89, 0xD1, 0x9B, 0x50, 0x71, 0xC0, 0xB7, 0xA0,
	}
	policyBSHA384 = []byte{
		0xB2, 0x6E, 0x7D, 0x28, 0xD1, 0x1A, 0x50, 0xBC, 0x53, 0xD8, 0x82, 0xBC, 0xF5, 0xFD, 0x3A, 0x1A,
		0x07, 0x41, 0x48, 0xBB, 0x35, 0xD3, 0xB4, 0xE4, 0xCB, 0x1C, 0x0A, 0xD9, 0xBD, 0xE4, 0x19, 0xCA,
		0xCB, 0x47, 0xBA, 0x09, 0x69, 0x96, 0x46, 0x15, 0x0F, 0x9F, 0xC0, 0x00, 0xF3, 0xF8, 0x0E, 0x12,
	}
	policyBSHA512 = []byte{
		0xB8, 0x22, 0x1C, 0xA6, 0x9E, 0x85, 0x50, 0xA4, 0x91, 0x4D, 0xE3, 0xFA, 0xA6, 0xA1, 0x8C, 0x07,
		0x2C, 0xC0, 0x12, 0x08, 0x07, 0x3A, 0x92, 0x8D, 0x5D, 0x66, 0xD5, 0x9E, 0xF7, 0x9E, 0x49, 0xA4,
		0x29, 0xC4, 0x1A, 0x6B, 0x26, 0x95, 0x71, 0xD5, 0x7E, 0xDB, 0x25, 0xFB, 0xDB, 0x18, 0x38, 0x42,
		0x56, 0x08, 0xB4, 0x13, 0xCD, 0x61, 0x6A, 0x5F, 0x6D, 0xB5, 0xB6, 0x07, 0x1A, 0xF9, 0x9B, 0xEA,
	}
)

// highAttrs are the object attributes of the high-range templates: those
// of the low range plus userWithAuth (the empty password authorizes use).
var highAttrs = tpm2.TPMAObject{
	FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
	AdminWithPolicy: true, Restricted: true, Decrypt: true,
}

func rsaEKTemplate(nameAlg tpm2.TPMAlgID, policy []byte, aesBits, keyBits uint16, unique int) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: nameAlg, ObjectAttributes: highAttrs,
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{
				Algorithm: tpm2.TPMAlgAES,
				KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(aesBits)),
				Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
			},
			KeyBits: tpm2.TPMKeyBits(keyBits),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, unique)}),
	}
}

func eccEKTemplate(nameAlg tpm2.TPMAlgID, policy []byte, aesBits uint16, curve tpm2.TPMECCCurve) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: nameAlg, ObjectAttributes: highAttrs,
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{
				Algorithm: tpm2.TPMAlgAES,
				KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(aesBits)),
				Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
			},
			CurveID: curve,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
	}
}

// EKSlots lists the EK templates rimon knows, low range first. The SM2
// template (H-5, 0x01C0001A) is left out: rimon cannot make credentials
// for SM2 keys.
func EKSlots() []EKSlot {
	return []EKSlot{
		{0x01C00002, 0x81010001, "RSA 2048 (L-1)", tpm2.RSAEKTemplate},
		{0x01C0000A, 0x81010002, "ECC NIST P-256 (L-2)", tpm2.ECCEKTemplate},
		{0x01C00012, 0x81010012, "RSA 2048 (H-1)", rsaEKTemplate(tpm2.TPMAlgSHA256, policyBSHA256, 128, 2048, 0)},
		{0x01C00014, 0x81010014, "ECC NIST P-256 (H-2)", eccEKTemplate(tpm2.TPMAlgSHA256, policyBSHA256, 128, tpm2.TPMECCNistP256)},
		{0x01C00016, 0x81010016, "ECC NIST P-384 (H-3)", eccEKTemplate(tpm2.TPMAlgSHA384, policyBSHA384, 256, tpm2.TPMECCNistP384)},
		{0x01C00018, 0x81010018, "ECC NIST P-521 (H-4)", eccEKTemplate(tpm2.TPMAlgSHA512, policyBSHA512, 256, tpm2.TPMECCNistP521)},
		{0x01C0001C, 0x8101001C, "RSA 3072 (H-6)", rsaEKTemplate(tpm2.TPMAlgSHA384, policyBSHA384, 256, 3072, 0)},
		{0x01C0001E, 0x8101001E, "RSA 4096 (H-7)", rsaEKTemplate(tpm2.TPMAlgSHA384, policyBSHA384, 256, 4096, 0)},
	}
}

// EKSlotFor returns the slot whose certificate lives at index.
func EKSlotFor(index uint32) (EKSlot, bool) {
	for _, s := range EKSlots() {
		if s.CertIndex == index {
			return s, true
		}
	}
	return EKSlot{}, false
}

// EK is an endorsement key and the certificate the TPM keeps for it.
type EK struct {
	// Slot is the template the EK was made from.
	Slot EKSlot
	// Cert is the NV index's contents as read: untrusted, possibly with
	// a header or padding around the DER (package attest/enroll parses it).
	Cert []byte
	// Handle is the persistent handle the EK was read from, or 0 when it
	// was made again from the template with TPM2_CreatePrimary.
	Handle tpm2.TPMHandle
	// Public is the marshalled TPMT_PUBLIC.
	Public []byte
	// Key is the public key.
	Key crypto.PublicKey
	// Name is the EK's TPM name.
	Name tpm2.TPM2BName
}

// ReadEKCerts reads the EK certificate of every slot that has one.
// Slots whose index is not defined are skipped; it returns [ErrNoEK] when
// none is.
func (t *TPM) ReadEKCerts(ctx context.Context) (map[uint32][]byte, error) {
	out := map[uint32][]byte{}
	for _, s := range EKSlots() {
		b, err := t.ReadNV(ctx, s.CertIndex)
		if errors.Is(err, ErrNoNV) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[s.CertIndex] = b
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("TPM %s: %w (looked at 0x01C00002, 0x01C0000A and 0x01C00012-0x01C0001E)", t.name, ErrNoEK)
	}
	return out, nil
}

// ReadEKs returns the EK of every slot that has a certificate: the key
// persisted at the slot's handle when its public area is the template's,
// else the key TPM2_CreatePrimary makes from the template (the same key
// every time: the endorsement seed decides it). The caller checks each
// against its certificate ([TPM.CreateEK] makes it afresh when a persisted
// key is not the certificate's).
func (t *TPM) ReadEKs(ctx context.Context) ([]EK, error) {
	certs, err := t.ReadEKCerts(ctx)
	if err != nil {
		return nil, err
	}
	var out []EK
	for _, s := range EKSlots() {
		cert, ok := certs[s.CertIndex]
		if !ok {
			continue
		}
		ek, err := t.persistedEK(ctx, s)
		if err != nil {
			if ek, err = t.CreateEK(ctx, s); err != nil {
				return nil, err
			}
		}
		ek.Cert = cert
		out = append(out, *ek)
	}
	return out, nil
}

// persistedEK reads the key at the slot's handle and returns it if it is
// made from the slot's template.
func (t *TPM) persistedEK(ctx context.Context, s EKSlot) (*EK, error) {
	if s.Handle == 0 {
		return nil, ErrNoEK
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	rsp, err := tpm2.ReadPublic{ObjectHandle: s.Handle}.Execute(t.t)
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, err
	}
	if !SameTemplate(pub, &s.Template) {
		return nil, fmt.Errorf("TPM %s: the key at 0x%08x is not made from the %s EK template", t.name, uint32(s.Handle), s.Label)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, err
	}
	return &EK{Slot: s, Handle: s.Handle, Public: tpm2.Marshal(pub), Key: key, Name: rsp.Name}, nil
}

// SameTemplate reports whether pub has the template's type, name
// algorithm, attributes, policy and parameters (the unique field, the key
// itself, is not compared).
func SameTemplate(pub, tmpl *tpm2.TPMTPublic) bool {
	if pub.Type != tmpl.Type || pub.NameAlg != tmpl.NameAlg || pub.ObjectAttributes != tmpl.ObjectAttributes ||
		string(pub.AuthPolicy.Buffer) != string(tmpl.AuthPolicy.Buffer) {
		return false
	}
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		p, err1 := pub.Parameters.RSADetail()
		q, err2 := tmpl.Parameters.RSADetail()
		if err1 != nil || err2 != nil {
			return false
		}
		// An exponent of 0 means 65537.
		e1, e2 := p.Exponent, q.Exponent
		if e1 == 0 {
			e1 = 65537
		}
		if e2 == 0 {
			e2 = 65537
		}
		pp, qq := *p, *q
		pp.Exponent, qq.Exponent = 0, 0
		return e1 == e2 && string(tpm2.Marshal(&pp)) == string(tpm2.Marshal(&qq))
	case tpm2.TPMAlgECC:
		p, err1 := pub.Parameters.ECCDetail()
		q, err2 := tmpl.Parameters.ECCDetail()
		return err1 == nil && err2 == nil && string(tpm2.Marshal(p)) == string(tpm2.Marshal(q))
	}
	return false
}

// CreateEK makes the slot's EK with TPM2_CreatePrimary in the endorsement
// hierarchy (empty endorsement password) and flushes it again: the key is
// the same every time, so only its public part is kept.
func (t *TPM) CreateEK(ctx context.Context, s EKSlot) (*EK, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	h, name, pub, err := t.createEKLocked(s)
	if err != nil {
		return nil, err
	}
	tpm2.FlushContext{FlushHandle: h}.Execute(t.t)
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, err
	}
	return &EK{Slot: s, Public: tpm2.Marshal(pub), Key: key, Name: name}, nil
}

func (t *TPM) createEKLocked(s EKSlot) (tpm2.TPMHandle, tpm2.TPM2BName, *tpm2.TPMTPublic, error) {
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(s.Template),
	}.Execute(t.t)
	if err != nil {
		return 0, tpm2.TPM2BName{}, nil, fmt.Errorf("TPM %s: create the %s EK: %w", t.name, s.Label, err)
	}
	pub, err := cp.OutPublic.Contents()
	if err != nil {
		tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(t.t)
		return 0, tpm2.TPM2BName{}, nil, err
	}
	return cp.ObjectHandle, cp.Name, pub, nil
}

// ActivateCredential runs TPM2_ActivateCredential with the AK at
// [AKHandle] as the credentialed key and the EK of slot s (at handle, or
// made again from the template when handle is 0) as the key that
// decrypts the seed, and returns the recovered secret. idObject is the
// TPMS_ID_OBJECT (the contents of a TPM2B_ID_OBJECT) and encSecret the
// encrypted seed (of a TPM2B_ENCRYPTED_SECRET). The EK is authorized with
// the empty password when its template sets userWithAuth (the high
// range), else with a policy session satisfying its policy
// (TPM2_PolicySecret with the endorsement hierarchy, the low range).
func (t *TPM) ActivateCredential(ctx context.Context, s EKSlot, handle tpm2.TPMHandle, idObject, encSecret []byte) ([]byte, error) {
	ak, err := t.ReadAK(ctx)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var ekName tpm2.TPM2BName
	var ekPub *tpm2.TPMTPublic
	if handle != 0 {
		rsp, err := tpm2.ReadPublic{ObjectHandle: handle}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("TPM %s: read EK 0x%08x: %w", t.name, uint32(handle), err)
		}
		if ekPub, err = rsp.OutPublic.Contents(); err != nil {
			return nil, err
		}
		ekName = rsp.Name
	} else {
		h, name, pub, err := t.createEKLocked(s)
		if err != nil {
			return nil, err
		}
		defer tpm2.FlushContext{FlushHandle: h}.Execute(t.t)
		handle, ekName, ekPub = h, name, pub
	}
	var ekAuth tpm2.Session = tpm2.PasswordAuth(nil)
	if !ekPub.ObjectAttributes.UserWithAuth {
		sess, closeSess, err := tpm2.PolicySession(t.t, ekPub.NameAlg, 16)
		if err != nil {
			return nil, fmt.Errorf("TPM %s: EK policy session: %w", t.name, err)
		}
		defer closeSess()
		_, err = tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: sess.Handle(),
			NonceTPM:      sess.NonceTPM(),
		}.Execute(t.t)
		if err != nil {
			return nil, fmt.Errorf("TPM %s: EK policy (PolicySecret with the endorsement hierarchy): %w", t.name, err)
		}
		ekAuth = sess
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: AKHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: handle, Name: ekName, Auth: ekAuth},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: idObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
	}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("TPM %s: ActivateCredential with the %s EK: %w", t.name, s.Label, err)
	}
	return rsp.CertInfo.Buffer, nil
}

// Cloud AK certificates: where the vTPMs of Google Compute Engine and
// Azure Trusted Launch keep the certificate of the AK they provisioned.
const (
	// GCEAKCertRSA is the GCE vTPM's RSA AK certificate.
	GCEAKCertRSA uint32 = 0x01C10000
	// GCEAKCertECC is the GCE vTPM's ECC AK certificate.
	GCEAKCertECC uint32 = 0x01C10002
	// AzureAKCert is the Azure Trusted Launch vTPM's certificate of the
	// AK at 0x81000003.
	AzureAKCert uint32 = 0x01C101D0
)

// ReadAKCerts reads the cloud AK certificates the TPM has (none on most
// TPMs: the map is then empty). They are optional evidence: an index that
// exists but cannot be read with its own empty authorization is left out
// (a verifier then has only the EK path), and only a cancelled ctx is an
// error.
func (t *TPM) ReadAKCerts(ctx context.Context) (map[uint32][]byte, error) {
	out := map[uint32][]byte{}
	for _, idx := range []uint32{GCEAKCertRSA, GCEAKCertECC, AzureAKCert} {
		b, err := t.ReadNV(ctx, idx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		out[idx] = b
	}
	return out, nil
}
