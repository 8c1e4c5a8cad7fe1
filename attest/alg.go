package attest

import (
	"crypto"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// algs maps the banks rimon knows to their TPM algorithm IDs. The verifier
// side keeps its own copy so that it never links the tpm package (and with
// it the cgo simulator).
var algs = map[crypto.Hash]tpm2.TPMAlgID{
	crypto.SHA1:   tpm2.TPMAlgSHA1,
	crypto.SHA256: tpm2.TPMAlgSHA256,
	crypto.SHA384: tpm2.TPMAlgSHA384,
	crypto.SHA512: tpm2.TPMAlgSHA512,
}

// algID returns the TPM algorithm ID of a bank's hash.
func algID(h crypto.Hash) (tpm2.TPMAlgID, error) {
	if a, ok := algs[h]; ok {
		return a, nil
	}
	return 0, fmt.Errorf("PCR bank not supported: %v", h)
}

// hashOf returns the hash of a TPM algorithm ID.
func hashOf(a tpm2.TPMAlgID) (crypto.Hash, bool) {
	for h, id := range algs {
		if id == a {
			return h, true
		}
	}
	return 0, false
}
