package enroll

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// IdentityVersion is the version of the [Identity] document.
const IdentityVersion = 1

// Bounds of the messages, far above what a TPM produces.
const (
	// MaxIdentity bounds an identity document.
	MaxIdentity = 256 << 10
	// MaxActivation bounds an activation request or response.
	MaxActivation = 16 << 10
	maxEKs        = 16
	maxAKCerts    = 8
	maxCert       = 8 << 10 // a large NV index
	maxPublic     = 1 << 10 // TPMT_PUBLIC of an RSA 4096 key is ~550 bytes
	maxIDObject   = 512     // TPMS_ID_OBJECT: HMAC and an encrypted digest of at most 64 bytes each
	maxEncSecret  = 1 << 10 // an RSA 4096 or ECC P-521 encrypted seed
)

// Identity is what an agent serves at GET /v1/identity: the EK
// certificates its TPM holds with the EK each certifies, the AK, and the
// AK certificates of a cloud vTPM. Its JSON byte fields are base64.
// Nothing in it is trusted by itself (see the package documentation).
type Identity struct {
	Version int `json:"version"`
	// EKs are the TPM's endorsement keys that have a certificate.
	EKs []EKInfo `json:"eks"`
	// AK is the attestation key the agent quotes with.
	AK AKInfo `json:"ak"`
	// AKCerts are AK certificates found in NV (cloud vTPMs).
	AKCerts []NVCert `json:"ak_certificates,omitempty"`
}

// EKInfo is one endorsement key and its certificate.
type EKInfo struct {
	// NVIndex is the certificate's NV index; activation requests name the
	// EK by it.
	NVIndex uint32 `json:"nv_index"`
	// Template names the TCG template, such as "RSA 2048 (L-1)".
	Template string `json:"template,omitempty"`
	// Certificate is the NV index's contents as read.
	Certificate []byte `json:"certificate"`
	// Public is the EK's TPMT_PUBLIC.
	Public []byte `json:"public"`
	// Handle is the persistent handle of the EK, 0 when the agent makes it
	// from the template.
	Handle uint32 `json:"handle,omitempty"`
}

// AKInfo is the attestation key.
type AKInfo struct {
	// Handle is the AK's persistent handle.
	Handle uint32 `json:"handle"`
	// Public is the AK's TPMT_PUBLIC.
	Public []byte `json:"public"`
	// Name is the TPM name of the AK, hex (as tpm2_readpublic -n prints it).
	Name string `json:"name"`
}

// NVCert is a certificate read from an NV index.
type NVCert struct {
	NVIndex     uint32 `json:"nv_index"`
	Certificate []byte `json:"certificate"`
}

// ParseIdentity reads an identity document (at most [MaxIdentity]
// bytes): known fields only, the version this package writes, and sizes
// within bounds. The values are not checked: [Enroll] does that.
func ParseIdentity(b []byte) (*Identity, error) {
	if len(b) > MaxIdentity {
		return nil, fmt.Errorf("identity: %d bytes, more than the %d allowed", len(b), MaxIdentity)
	}
	var id Identity
	if err := decodeStrict(b, &id); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if id.Version != IdentityVersion {
		return nil, fmt.Errorf("identity: version %d (want %d)", id.Version, IdentityVersion)
	}
	if len(id.EKs) > maxEKs || len(id.AKCerts) > maxAKCerts {
		return nil, fmt.Errorf("identity: %d EKs and %d AK certificates (at most %d and %d)", len(id.EKs), len(id.AKCerts), maxEKs, maxAKCerts)
	}
	for i, ek := range id.EKs {
		if len(ek.Certificate) == 0 || len(ek.Certificate) > maxCert {
			return nil, fmt.Errorf("identity: eks[%d].certificate: %d bytes (want 1 to %d)", i, len(ek.Certificate), maxCert)
		}
		if len(ek.Public) == 0 || len(ek.Public) > maxPublic {
			return nil, fmt.Errorf("identity: eks[%d].public: %d bytes (want 1 to %d)", i, len(ek.Public), maxPublic)
		}
	}
	for i, c := range id.AKCerts {
		if len(c.Certificate) == 0 || len(c.Certificate) > maxCert {
			return nil, fmt.Errorf("identity: ak_certificates[%d]: %d bytes (want 1 to %d)", i, len(c.Certificate), maxCert)
		}
	}
	if len(id.AK.Public) == 0 || len(id.AK.Public) > maxPublic {
		return nil, fmt.Errorf("identity: ak.public: %d bytes (want 1 to %d)", len(id.AK.Public), maxPublic)
	}
	if len(id.AK.Name) == 0 || len(id.AK.Name) > 2*(2+64) {
		return nil, errors.New("identity: ak.name: want the AK's name in hex")
	}
	return &id, nil
}

// Marshal encodes the document as JSON.
func (id *Identity) Marshal() ([]byte, error) { return json.Marshal(id) }

// ActivationRequest is what a verifier POSTs to /v1/activate: a
// credential made with [MakeCredential] for the agent's AK under the EK
// whose certificate is at NVIndex.
type ActivationRequest struct {
	NVIndex uint32 `json:"nv_index"`
	// Credential is the TPMS_ID_OBJECT.
	Credential []byte `json:"credential"`
	// Secret is the encrypted seed.
	Secret []byte `json:"secret"`
}

// ActivationResponse is the agent's answer: the secret its TPM recovered.
type ActivationResponse struct {
	Secret []byte `json:"secret"`
}

// ParseActivationRequest reads an activation request (at most
// [MaxActivation] bytes) and checks its sizes.
func ParseActivationRequest(b []byte) (*ActivationRequest, error) {
	if len(b) > MaxActivation {
		return nil, fmt.Errorf("activation request: %d bytes, more than the %d allowed", len(b), MaxActivation)
	}
	var r ActivationRequest
	if err := decodeStrict(b, &r); err != nil {
		return nil, fmt.Errorf("activation request: %w", err)
	}
	if len(r.Credential) < 4 || len(r.Credential) > maxIDObject {
		return nil, fmt.Errorf("activation request: credential of %d bytes (want 4 to %d)", len(r.Credential), maxIDObject)
	}
	if len(r.Secret) == 0 || len(r.Secret) > maxEncSecret {
		return nil, fmt.Errorf("activation request: secret of %d bytes (want 1 to %d)", len(r.Secret), maxEncSecret)
	}
	return &r, nil
}

// ParseActivationResponse reads an agent's answer.
func ParseActivationResponse(b []byte) (*ActivationResponse, error) {
	if len(b) > MaxActivation {
		return nil, fmt.Errorf("activation response: %d bytes, more than the %d allowed", len(b), MaxActivation)
	}
	var r ActivationResponse
	if err := decodeStrict(b, &r); err != nil {
		return nil, fmt.Errorf("activation response: %w", err)
	}
	if len(r.Secret) == 0 || len(r.Secret) > 64 {
		return nil, fmt.Errorf("activation response: secret of %d bytes (want 1 to 64)", len(r.Secret))
	}
	return &r, nil
}

// decodeStrict decodes one JSON value with known fields only and nothing
// after it.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}
