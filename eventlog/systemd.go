package eventlog

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNotRecomputable means a record's digests cannot be recomputed from its
// content: a systemd volume-key record (whose digest is an HMAC keyed with
// the LUKS volume key), a systemd record without a "string", or a record of
// a content type rimon does not know. Replay extends such a record's digests
// as they are, as the TPM did; what its content says is not vouched for.
var ErrNotRecomputable = errors.New("extended digest, not recomputable")

// systemdHashed lists the eventType values of systemd records whose
// digests are the hash of the record's "string" (systemd's
// docs/TPM2_PCR_MEASUREMENTS.md). A record without an eventType (systemd
// before version 253) is hashed too.
var systemdHashed = map[string]bool{
	"": true, "phase": true, "filesystem": true, "machine-id": true, "product-id": true,
	"keyslot": true, "nvpcr-init": true, "nvpcr-separator": true, "dm-verity": true,
}

// systemdString returns the "string" systemd-pcrextend measured, which is
// what the record's digests hash. A record whose digest is not that hash
// (eventType "volume-key", an eventType this version does not know, or no
// "string") returns an error wrapping [ErrNotRecomputable]; a content that
// is not an object of that shape is an error.
func systemdString(raw json.RawMessage) (string, error) {
	var c struct {
		String    *string `json:"string"`
		EventType *string `json:"eventType"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", fmt.Errorf(`systemd record content: want an object with a string "string" and "eventType": %v`, err)
	}
	et := ""
	if c.EventType != nil {
		et = *c.EventType
	}
	switch {
	case !systemdHashed[et]:
		return "", fmt.Errorf("%w (systemd eventType %q)", ErrNotRecomputable, et)
	case c.String == nil:
		return "", fmt.Errorf(`%w (systemd record without a "string")`, ErrNotRecomputable)
	}
	return *c.String, nil
}
