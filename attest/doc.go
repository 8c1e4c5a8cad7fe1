// Package attest makes and checks evidence: a TPM quote of PCR 23, the
// quoted PCR values and rimon's log.
//
// # Trust
//
// Nothing in evidence is trusted until it is checked, in this order, and
// [Verify] returns its result only when every check passed:
//
//  1. the signature over TPMS_ATTEST, with the attestation key the
//     verifier pins (never the key the evidence carries);
//  2. TPM_GENERATED magic and type TPM_ST_ATTEST_QUOTE;
//  3. extraData equals the verifier's nonce;
//  4. the PCR selection is exactly the one asked for;
//  5. the quote's PCR digest is the hash of the reported PCR values;
//  6. a prefix of the log replays to the quoted value of every quoted PCR,
//     every record's digests recomputed from its content.
//
// Records after that prefix (written while the quote was taken) are
// reported and never trusted. Reference values are then checked against
// the trusted records only.
package attest
