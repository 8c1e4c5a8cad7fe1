package eventlog

import "encoding/json"

// systemdString returns the "string" systemd-pcrextend measured, which is
// what its record's digests hash.
func systemdString(raw json.RawMessage) (string, bool) {
	var c struct {
		String *string `json:"string"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.String == nil {
		return "", false
	}
	return *c.String, true
}
