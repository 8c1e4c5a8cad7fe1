package enroll

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrIdentityChanged means an agent shows another AK or EK than the one
// enrolled. Re-enrolling is the operator's decision, never automatic.
var ErrIdentityChanged = errors.New("the agent's identity changed since enrollment")

// Record is what a verifier keeps of an enrollment (as JSON): the AK it
// attests with from then on, and what vouched for it.
type Record struct {
	// Path is [PathActivation] or [PathAKCert].
	Path string `json:"path"`
	// AKPublic is the AK's TPMT_PUBLIC; AKName its TPM name (hex).
	AKPublic []byte `json:"ak_public"`
	AKName   string `json:"ak_name"`
	// EKIndex and EKCertificate (DER) are the EK certificate that vouched
	// (on [PathActivation]).
	EKIndex       uint32 `json:"ek_nv_index,omitempty"`
	EKCertificate []byte `json:"ek_certificate,omitempty"`
	// AKCertificate is the AK certificate that vouched (DER, on
	// [PathAKCert]).
	AKCertificate []byte `json:"ak_certificate,omitempty"`
	// Steps are the links of the chain of trust, as [Result.Steps].
	Steps []Step `json:"steps"`
}

// Record returns what to keep of the enrollment.
func (r *Result) Record() Record {
	rec := Record{Path: r.Path, AKPublic: r.AK.Public, AKName: hex.EncodeToString(r.AK.Name), EKIndex: r.EKIndex, Steps: r.Steps}
	if r.EK != nil {
		rec.EKCertificate = r.EK.Cert.Raw
	}
	if r.AKCert != nil {
		rec.AKCertificate = r.AKCert.Raw
	}
	return rec
}

// Check compares an identity the agent serves later with the record: it
// returns nil when the agent still shows the enrolled AK and, on
// [PathActivation], still holds the enrolled EK certificate; otherwise an
// error wrapping [ErrIdentityChanged] that says what changed. It proves
// nothing by itself (an agent can show anything): quotes are then checked
// with the recorded AK, which only the enrolled TPM holds.
func (rec Record) Check(id *Identity) error {
	var changed []string
	if !bytes.Equal(id.AK.Public, rec.AKPublic) {
		changed = append(changed, fmt.Sprintf("the AK is %s, enrolled %s", short(id.AK.Name), short(rec.AKName)))
	}
	if rec.Path == PathActivation {
		found := false
		for _, e := range id.EKs {
			if e.NVIndex != rec.EKIndex {
				continue
			}
			if c, err := ParseEKCert(e.Certificate); err == nil && bytes.Equal(c.Cert.Raw, rec.EKCertificate) {
				found = true
			}
		}
		if !found {
			changed = append(changed, fmt.Sprintf("the EK certificate at NV 0x%08X is not the enrolled one", rec.EKIndex))
		}
	}
	if len(changed) > 0 {
		return fmt.Errorf("%w: %s (re-enroll only if the change is expected)", ErrIdentityChanged, strings.Join(changed, "; "))
	}
	return nil
}

func short(name string) string {
	if len(name) > 16 {
		return name[:16] + "..."
	}
	return name
}
