// Package logfile is the durable layer of rimon's measurement log: the log
// as a file on this machine, kept in agreement with the TPM. The format
// (records, canonical encoding, reading, replay) is package
// [github.com/rimon-dev/rimon/eventlog]; a verifier needs only that one.
//
// # Durability
//
// A [Writer] appends under an exclusive flock(2), with O_APPEND and fsync, and
// writes each record before the PCR is extended. [Reconcile] brings log and
// TPM back into agreement after a crash: records written but never extended
// are extended, a torn last record is moved aside, and anything else is a
// [DivergenceError] that names the PCR, bank and values. Readers ([Snapshot],
// [ReplayFile], [Check], [WhileLocked]) take the log's shared lock, so that
// no writer is half-way through an append meanwhile. Every rimon record
// carries the boot ID ([CurrentBootID]), and a writer refuses a log of
// another boot ([ErrOtherBoot]).
//
// The package does not speak TPM commands: it is handed a [PCRs] value.
package logfile
