package verifier

import (
	"github.com/google/go-tpm/tpm2"
)

// Clock is the quote's clock information (TPMS_CLOCK_INFO, TPM 2.0
// Part 2, 10.11.1), signed with the quote.
//
// ResetCount changes with every TPM Reset (a reboot), RestartCount with
// every TPM Restart or Resume; Clock counts milliseconds the TPM has been
// powered and does not run backwards while ResetCount stays the same.
// For an AK outside the endorsement and platform hierarchies the TPM
// obfuscates ResetCount and RestartCount by adding a constant of the key
// (TPM 2.0 Part 1, "Obfuscation of Clock Info"): compare them with an earlier quote by the same
// key for equality, never expect one more.
type Clock struct {
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
	Clock        uint64 `json:"clock"`
	// Safe is the TPM's word that Clock has not been set back since it
	// was last recorded in NV memory.
	Safe bool `json:"safe"`
}

// clockOf reads the clock information of a quote whose signature has been
// checked (nil when it does not parse).
func clockOf(attest []byte) *Clock {
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
	if err != nil {
		return nil
	}
	c := a.ClockInfo
	return &Clock{ResetCount: c.ResetCount, RestartCount: c.RestartCount, Clock: c.Clock, Safe: bool(c.Safe)}
}
