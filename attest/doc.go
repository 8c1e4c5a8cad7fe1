// Package attest holds what attester and verifier share: the evidence
// format ([Evidence], [OpenEvidence]), the checks of a quote
// ([VerifyQuote]) and of a log against it ([MatchLog], [Verify]), and the
// client that fetches evidence from an agent ([OpenFetch]). The attester
// side (taking a quote, serving evidence) is package attest/agent; the
// verifier's entry point, which adds the Azure chain and a log prefix the
// verifier holds, is package attest/verifier. This package does not use a
// TPM: it never imports package tpm.
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
