package attest

import (
	"crypto/sha256"
	"encoding/binary"
)

// unrecordedLabel starts the data a quote binds when the evidence lists
// unrecorded changes (docs/FORMAT.md, section 5).
const unrecordedLabel = "rimon unrecorded v1\x00"

// QualifyingData is what an agent quotes with (the TPM's extraData) for
// the verifier's nonce and the unrecorded changes it reports in the same
// evidence: the nonce itself when there are none, else
// SHA-256("rimon unrecorded v1" ‖ 0x00 ‖ nonce ‖ entries), each entry its
// path, cause and since as u32 big-endian length and bytes, then tries as
// u64 big-endian. The quote then vouches for the list: a list removed or
// edited on the way fails the nonce check instead of turning a machine
// that said it could not record a change into a trusted one.
func QualifyingData(nonce []byte, unrecorded []Unrecorded) []byte {
	if len(unrecorded) == 0 {
		return nonce
	}
	h := sha256.New()
	h.Write([]byte(unrecordedLabel))
	h.Write(nonce)
	var n [8]byte
	field := func(s string) {
		binary.BigEndian.PutUint32(n[:4], uint32(len(s)))
		h.Write(n[:4])
		h.Write([]byte(s))
	}
	for _, u := range unrecorded {
		field(u.Path)
		field(u.Cause)
		field(u.Since)
		binary.BigEndian.PutUint64(n[:], uint64(u.Tries))
		h.Write(n[:])
	}
	return h.Sum(nil)
}
