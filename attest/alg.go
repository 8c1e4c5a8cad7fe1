package attest

import (
	"crypto"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/tpm/tpmalg"
)

// algID returns the TPM algorithm ID of a bank's hash. The table is
// tpmalg's, which links no TPM code: the verifier side never links the tpm
// package (and with it the cgo simulator).
func algID(h crypto.Hash) (tpm2.TPMAlgID, error) {
	if a, ok := tpmalg.ID(h); ok {
		return a, nil
	}
	return 0, fmt.Errorf("PCR bank not supported: %v", h)
}

// hashOf returns the hash of a TPM algorithm ID.
func hashOf(a tpm2.TPMAlgID) (crypto.Hash, bool) { return tpmalg.Hash(a) }
