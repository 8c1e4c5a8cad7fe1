// Package tpmalg maps the PCR banks rimon knows to their TPM algorithm IDs
// (TPM 2.0 Part 2, 6.3 TPM_ALG_ID). It holds no TPM code and links no cgo,
// so the verifier side shares the table with the tpm package.
package tpmalg

import (
	"crypto"

	"github.com/google/go-tpm/tpm2"
)

var ids = map[crypto.Hash]tpm2.TPMAlgID{
	crypto.SHA1:   tpm2.TPMAlgSHA1,
	crypto.SHA256: tpm2.TPMAlgSHA256,
	crypto.SHA384: tpm2.TPMAlgSHA384,
	crypto.SHA512: tpm2.TPMAlgSHA512,
}

// ID returns the TPM algorithm ID of a bank's hash.
func ID(h crypto.Hash) (tpm2.TPMAlgID, bool) {
	a, ok := ids[h]
	return a, ok
}

// Hash returns the hash of a TPM algorithm ID.
func Hash(a tpm2.TPMAlgID) (crypto.Hash, bool) {
	for h, id := range ids {
		if id == a {
			return h, true
		}
	}
	return 0, false
}
