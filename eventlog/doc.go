// Package eventlog is rimon's measurement log as a format: records, the
// canonical encoding of their content, reading, and replay into PCR values
// ([State]). It does no file locking, no fsync and no TPM I/O, so a
// verifier can import it alone; the durable log file (the writer, locking,
// fsync, reconciliation with the TPM, the boot ID) is package
// [github.com/rimon-dev/rimon/eventlog/logfile].
//
// # Format
//
// The log is a JSON text sequence (RFC 7464): each record is the byte 0x1E,
// one JSON object, and a line feed. Records are shaped like the TCG Canonical
// Event Log JSON that systemd writes to /run/log/systemd/tpm2-measure.log, and
// a [Reader] accepts systemd's own records too. docs/FORMAT.md specifies the
// record, the canonical encoding of its content and the digests extended.
//
// # Trust
//
// Nothing read from a log is trusted by itself. [Replay] recomputes every
// record's digests from its content before it uses them, so an edited path,
// kind, reason or file digest breaks replay; only a PCR value read from a TPM
// (or proved by a quote) can vouch for a replayed log. A record whose digests
// cannot be recomputed (a systemd volume-key HMAC, an unknown content type:
// [ErrNotRecomputable]) is extended as it is, and its content vouches for
// nothing. Readers refuse every text a lax JSON reader would rewrite
// (invalid UTF-8, unpaired surrogates), so that two different logs never
// replay to the same PCR value.
package eventlog
