// Package verifier checks rimon evidence: it is the one place a verdict
// is made, for `rimon verify`, `rimon attest` and any other front end.
//
// # Entry point
//
// [Verify] takes parsed evidence (the header, from [attest.OpenEvidence],
// and a reader positioned at the log) and [Options] (what the verifier
// asked for and what it trusts), and returns a [Result]: every check run,
// by name, with its outcome and detail; the trusted prefix of the log and
// the quoted PCR values it replays to; and the findings on that prefix.
// Evidence that proves nothing is an error, always a [*CheckError] naming
// the check that failed.
//
// # What is trusted
//
// Only what the verifier brings: the attestation key it pins
// ([Options.AK]), or, on an Azure confidential VM, AMD's roots (or test
// roots it is explicitly told to trust, [Options.AzureRoots]); its own
// nonce; its reference values; and its own earlier copy of the log
// ([Options.LogPrefix]) or the state it saved after its last verdict on
// the machine ([Options.State]). Everything in the evidence is checked
// before it counts, in this order:
//
//  1. Azure evidence, when present: the VCEK against the roots of the
//     chip's product line, the SNP report's signature and fields (against
//     the reference's azure section), the runtime claims bound into
//     REPORT_DATA; the AK is then the HCLAkPub of those claims, and a
//     pinned AK must be that key ("azure: " steps, [CheckKeyBinding]);
//  2. the quote: its signature with the AK (never the key the evidence
//     carries), TPM_GENERATED magic and type, the nonce, the PCR
//     selection, the PCR digest of the reported values (package attest);
//  3. the log: the records the evidence leaves out (log_start) come from
//     the verifier's own copy, and a prefix of the whole log must replay to
//     every quoted PCR in every quoted bank, each record's digests
//     recomputed from its content ([attest.MatchLog]); or, from a saved
//     [State], the new records must extend the accepted prefix's replay to
//     the quote ("continuity"), and only they are replayed;
//  4. the reference values, unmeasured records and the evidence's
//     unrecorded changes, against the trusted prefix only.
//
// Records after the trusted prefix are counted and never trusted. The
// evidence's own AK, its unrecorded list and anything after the prefix
// are the attester's word: reported, never relied on.
//
// # Incremental verification
//
// A [Result] carries the [State] to save ([Options.SaveState]): the
// record count and PCR values after the trusted prefix, the prefix's
// digest ([eventlog.Checkpoint]), and the reference checks' state after
// it ([attest.Prior]: the prefix's findings, unmeasured paths and required
// paths, bounded, with the reference's fingerprint). Given back as
// [Options.State] with evidence that starts at its record count (the agent
// asked with since=N), it verifies only the new records, and the verdict
// and the new state are those a replay of the whole log gives. A log that
// does not extend the accepted prefix (records edited, removed,
// reordered, a PCR reset and another history) fails
// [attest.CheckContinuity]; so does a whole log whose first records are
// not, byte for byte, the accepted ones. The findings depend on the
// reference, so a state saved with another reference (or other banks) is
// not continued ([attest.ErrPriorUnusable]): the caller verifies the whole
// log, with the state, once.
//
// A verifier that watches a machine continuously also needs to know which
// boot a quote belongs to: [Result.Clock] is the quote's signed clock
// information (resetCount changes with every TPM Reset, a PCR reset does
// not move it), given once the quote's own checks passed, even when the
// continuity check then failed, so that the caller can tell a reboot (a
// new log from record 0) from a broken history. [Options.Observe] asks
// for the distinct measurements of the newly covered records
// ([attest.Observation]), which such a verifier keeps to check the
// machine against a new reference without its log ([attest.Reevaluate]).
//
// # What it needs
//
// No TPM: the package does not import package tpm (nor the cgo TPM
// simulator it links) and builds with CGO_ENABLED=0. The attester side is
// package attest/agent.
package verifier
