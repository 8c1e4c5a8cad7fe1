package sqlstore

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/rimon-dev/rimon/fleet"
)

// Bounds on what a Spec may carry.
const (
	maxName = 128
	maxPEM  = 64 << 10
	maxURL  = 2048
)

// validName reports whether name is 1 to 128 bytes of [A-Za-z0-9._-].
func validName(name string) bool {
	if len(name) == 0 || len(name) > maxName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// invalid is a refusal of input, naming the field.
func invalid(format string, a ...any) error {
	return storeError{fmt.Errorf("sqlstore: %w: "+format, append([]any{fleet.ErrInvalid}, a...)...)}
}

var knownBanks = map[string]bool{"sha1": true, "sha256": true, "sha384": true, "sha512": true}

// normalizeSpec checks a Spec and fills its defaults (PCRs [23], banks
// [sha256], interval 60 s). forUpdate relaxes the push token's presence
// (an update without one keeps the stored token).
func normalizeSpec(s fleet.Spec, forUpdate bool) (fleet.Spec, error) {
	if !validName(s.Name) {
		return s, invalid("agent name %q: want 1 to %d characters of A-Z a-z 0-9 . _ -", s.Name, maxName)
	}
	if s.URL == "" && !s.Push {
		return s, invalid("agent %s: url: an agent that does not push needs its URL", s.Name)
	}
	if s.URL != "" {
		if len(s.URL) > maxURL {
			return s, invalid("agent %s: url: longer than %d bytes", s.Name, maxURL)
		}
		u, err := url.Parse(s.URL)
		if err != nil {
			return s, invalid("agent %s: url: %v", s.Name, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return s, invalid("agent %s: url %q: want http://HOST[:PORT] or https://HOST[:PORT]", s.Name, s.URL)
		}
	}
	if len(s.AgentCA) > maxPEM || len(s.AK) > maxPEM {
		return s, invalid("agent %s: agent_ca or ak: larger than %d bytes", s.Name, maxPEM)
	}
	if s.Azure && s.AK != "" {
		return s, invalid("agent %s: ak: a pinned AK and azure exclude each other", s.Name)
	}
	if len(s.EKCA) > maxPEM || len(s.AKCA) > maxPEM {
		return s, invalid("agent %s: ek_ca or ak_ca: larger than %d bytes", s.Name, maxPEM)
	}
	if s.Enrolls() && (s.AK != "" || s.Azure) {
		return s, invalid("agent %s: ek_ca, ak_ca: an enrolled AK excludes a pinned AK and azure", s.Name)
	}
	if s.Enrolls() && s.Push {
		return s, invalid("agent %s: ek_ca, ak_ca: enrollment asks the agent, which an agent that pushes cannot be", s.Name)
	}
	if s.VMID != "" && !s.Azure {
		return s, invalid("agent %s: vm_id: only with azure", s.Name)
	}
	if s.Reference != "" && !validName(s.Reference) {
		return s, invalid("agent %s: reference name %q: want 1 to %d characters of A-Z a-z 0-9 . _ -", s.Name, s.Reference, maxName)
	}
	if len(s.PCRs) == 0 {
		s.PCRs = []int{23}
	}
	seen := map[int]bool{}
	for _, p := range s.PCRs {
		if p < 0 || p > 23 {
			return s, invalid("agent %s: pcrs: %d is not a PCR (0 to 23)", s.Name, p)
		}
		if seen[p] {
			return s, invalid("agent %s: pcrs: %d given twice", s.Name, p)
		}
		seen[p] = true
	}
	if len(s.Banks) == 0 {
		s.Banks = []string{"sha256"}
	}
	seenB := map[string]bool{}
	for _, b := range s.Banks {
		if !knownBanks[b] {
			return s, invalid("agent %s: banks: unknown bank %q (sha1, sha256, sha384, sha512)", s.Name, b)
		}
		if seenB[b] {
			return s, invalid("agent %s: banks: %s given twice", s.Name, b)
		}
		seenB[b] = true
	}
	if s.Interval == 0 {
		s.Interval = fleet.DefaultInterval
	}
	if s.Interval < fleet.MinInterval {
		return s, invalid("agent %s: interval %v: the shortest is %v", s.Name, s.Interval, fleet.MinInterval)
	}
	if s.Push {
		if s.PushTokenHash == "" && !forUpdate {
			return s, invalid("agent %s: push: no push token hash", s.Name)
		}
		if s.PushTokenHash != "" {
			if b, err := hex.DecodeString(s.PushTokenHash); err != nil || len(b) != 32 {
				return s, invalid("agent %s: push token hash: want the hex SHA-256 of the token (64 hex digits)", s.Name)
			}
		}
	} else {
		s.PushTokenHash = ""
	}
	return s, nil
}

// validJSON checks an optional JSON document given to the store.
func validJSON(field string, b []byte) error {
	if len(b) > 0 && !json.Valid(b) {
		return invalid("%s: not valid JSON", field)
	}
	return nil
}
