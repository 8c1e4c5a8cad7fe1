package tpm

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// AKHandle is where the attestation key lives: the persistent handle of
// the Azure vTPM's AK, used the same way on every TPM.
const AKHandle tpm2.TPMHandle = 0x81000003

// ErrNoAK means nothing is persisted at AKHandle.
var ErrNoAK = errors.New("no attestation key at 0x81000003 (run rimon provision)")

// akTemplate is a restricted RSA-2048 signing key with RSASSA-PKCS1-v1_5
// and SHA-256, under the owner hierarchy: the scheme tpm2_checkquote checks.
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgRSA,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
		Restricted: true, SignEncrypt: true, NoDA: true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Scheme: tpm2.TPMTRSAScheme{
			Scheme:  tpm2.TPMAlgRSASSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		KeyBits: 2048,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}),
}

// AK is the public part of the attestation key.
type AK struct {
	// Public is the marshalled TPMT_PUBLIC.
	Public []byte
	// Key is the public key.
	Key crypto.PublicKey
	// Name is the TPM name of the key (its handle in policies and attestations).
	Name tpm2.TPM2BName
}

// ReadAK reads the public part of the key at AKHandle.
func (t *TPM) ReadAK(ctx context.Context) (*AK, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	rsp, err := tpm2.ReadPublic{ObjectHandle: AKHandle}.Execute(t.t)
	t.mu.Unlock()
	if err != nil {
		if errors.Is(err, tpm2.TPMRCHandle) {
			return nil, fmt.Errorf("TPM %s: %w", t.name, ErrNoAK)
		}
		return nil, fmt.Errorf("TPM %s: read AK 0x%x: %w", t.name, uint32(AKHandle), err)
	}
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("TPM %s: AK public area: %w", t.name, err)
	}
	if !pub.ObjectAttributes.Restricted || !pub.ObjectAttributes.SignEncrypt || !pub.ObjectAttributes.FixedTPM {
		return nil, fmt.Errorf("TPM %s: the key at 0x%x is not a restricted, fixedTPM signing key: it cannot be an attestation key", t.name, uint32(AKHandle))
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, fmt.Errorf("TPM %s: AK public key: %w", t.name, err)
	}
	return &AK{Public: tpm2.Marshal(pub), Key: key, Name: rsp.Name}, nil
}

// ProvisionAK creates the attestation key and persists it at AKHandle,
// unless a key is there already (as on an Azure confidential VM, whose
// platform AK must never be replaced). created says which happened.
func (t *TPM) ProvisionAK(ctx context.Context) (ak *AK, created bool, err error) {
	ak, err = t.ReadAK(ctx)
	if err == nil {
		return ak, false, nil
	}
	if !errors.Is(err, ErrNoAK) {
		return nil, false, err
	}
	if err := t.createAK(); err != nil {
		return nil, false, err
	}
	ak, err = t.ReadAK(ctx)
	return ak, err == nil, err
}

func (t *TPM) createAK() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	owner := tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	cp, err := tpm2.CreatePrimary{PrimaryHandle: owner, InPublic: tpm2.New2B(akTemplate)}.Execute(t.t)
	if err != nil {
		return fmt.Errorf("TPM %s: create AK: %w", t.name, err)
	}
	defer tpm2.FlushContext{FlushHandle: cp.ObjectHandle}.Execute(t.t)
	_, err = tpm2.EvictControl{
		Auth:             owner,
		ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
		PersistentHandle: AKHandle,
	}.Execute(t.t)
	if err != nil {
		return fmt.Errorf("TPM %s: persist AK at 0x%x: %w", t.name, uint32(AKHandle), err)
	}
	return nil
}

// Quote is a TPM2_Quote: the attestation structure and its signature.
type Quote struct {
	// Attest is the marshalled TPMS_ATTEST that was signed.
	Attest []byte
	// Signature is the marshalled TPMT_SIGNATURE.
	Signature []byte
}

// QuotePCRs quotes pcrs in each bank with the AK, nonce as qualifying data.
func (t *TPM) QuotePCRs(ctx context.Context, nonce []byte, pcrs []int, banks []crypto.Hash) (*Quote, error) {
	if len(nonce) == 0 || len(nonce) > 64 {
		return nil, fmt.Errorf("quote: nonce of %d bytes: want 1 to 64", len(nonce))
	}
	ak, err := t.ReadAK(ctx)
	if err != nil {
		return nil, err
	}
	var sel tpm2.TPMLPCRSelection
	for _, h := range banks {
		a, err := AlgID(h)
		if err != nil {
			return nil, err
		}
		var idx []uint
		for _, p := range pcrs {
			if p < 0 || p > 23 {
				return nil, fmt.Errorf("quote: PCR %d out of range 0-23", p)
			}
			idx = append(idx, uint(p))
		}
		sel.PCRSelections = append(sel.PCRSelections, tpm2.TPMSPCRSelection{Hash: a, PCRSelect: tpm2.PCClientCompatible.PCRs(idx...)})
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	rsp, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: AKHandle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      sel,
	}.Execute(t.t)
	if err != nil {
		return nil, fmt.Errorf("TPM %s: quote: %w", t.name, err)
	}
	return &Quote{Attest: rsp.Quoted.Bytes(), Signature: tpm2.Marshal(&rsp.Signature)}, nil
}
