// Package agent is the attester side of evidence: it takes a TPM quote
// and reads the log under the log's shared lock ([Collect]), and serves
// evidence to verifiers over HTTP ([Handler], [LimitListener]).
//
// # What it needs
//
// It drives a TPM (package tpm) and reads the log's file (package
// eventlog), so it runs on the machine being attested. The evidence format
// it writes is package attest's; verifiers check it with package
// attest/verifier, which imports neither this package nor the TPM.
//
// # What is trusted
//
// Nothing it produces is trusted by a verifier on its word: the quote is
// signed by the TPM's attestation key, and the log and PCR values are
// checked against it. Its limits (one quote at a time, a rate, turns per
// client) protect the agent's TPM and memory, not the verdict.
package agent
