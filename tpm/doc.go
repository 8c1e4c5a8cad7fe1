// Package tpm is the only package of rimon that speaks TPM 2.0 commands.
//
// [Open] takes one specification string for every kind of TPM:
//
//   - a device path such as /dev/tpmrm0 (the kernel's resource manager);
//   - tcp:HOST:PORT, the TPM command port of a swtpm TCP server;
//   - unix:PATH, a swtpm unixio socket;
//   - sim, the in-process TPM simulator from go-tpm-tools (cgo builds only),
//     whose state dies with the process.
//
// Commands that the TPM answers with TPM_RC_RETRY, TPM_RC_YIELDED or
// TPM_RC_TESTING are sent again after a short back-off.
package tpm
