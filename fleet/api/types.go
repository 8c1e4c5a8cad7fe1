package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// Duration is a [time.Duration] on the wire: written as a Go duration
// string ("1m0s"), read from such a string ("60s", "1m30s") or from an
// integer number of nanoseconds, as a time.Duration marshals itself.
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "1m0s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads "60s" or an integer number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, `"`) {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		v, err := time.ParseDuration(str)
		if err != nil {
			return &durationError{fmt.Sprintf("want a duration such as \"60s\", not %q", str)}
		}
		*d = Duration(v)
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return &durationError{"want a duration such as \"60s\" (or an integer number of nanoseconds)"}
	}
	*d = Duration(n)
	return nil
}

// AgentSpec is an agent's registration as the API takes it (POST
// /v1/agents, PUT /v1/agents/{name}) and gives it back. Omitted PCRs,
// banks and interval take their defaults ([23], ["sha256"], 60s).
type AgentSpec struct {
	// Name: 1 to 128 characters of A-Z a-z 0-9 . _ -
	Name string `json:"name"`
	// URL of the agent's evidence endpoint (http or https); empty with Push.
	URL string `json:"url,omitempty"`
	// AgentCA: PEM certificates to pin for the agent's TLS certificate.
	AgentCA string `json:"agent_ca,omitempty"`
	// AK: the pinned attestation key (PEM); empty with Azure.
	AK string `json:"ak,omitempty"`
	// Azure: the AK is vouched for by the Azure SEV-SNP chain; VMID then
	// pins the report's vmUniqueId.
	Azure bool   `json:"azure,omitempty"`
	VMID  string `json:"vm_id,omitempty"`
	// Reference names a stored reference; empty for none.
	Reference string   `json:"reference,omitempty"`
	PCRs      []int    `json:"pcrs,omitempty"`
	Banks     []string `json:"banks,omitempty"`
	Interval  Duration `json:"interval,omitempty"`
	// Push: the agent posts its evidence (rimon watch --push).
	Push bool `json:"push,omitempty"`
	// EKCA: PEM certificates of the TPM vendors' CAs. Instead of a pinned
	// AK, the agent's AK is enrolled once through its EK certificate and
	// credential activation, and attested with from then on.
	EKCA string `json:"ek_ca,omitempty"`
	// AKCA: PEM certificates of cloud roots that vouch for the AK
	// certificate of a cloud vTPM (enrolled once, as with EKCA).
	AKCA string `json:"ak_ca,omitempty"`
}

// Enrollment is what vouched for an enrolled agent's AK.
type Enrollment struct {
	// Path: "ek-activation" (a vendor CA vouched for the EK, credential
	// activation for the AK) or "ak-certificate" (a cloud root vouched
	// for the AK's certificate).
	Path string    `json:"path"`
	Time time.Time `json:"time"`
	// AKName is the enrolled AK's TPM name (hex).
	AKName string `json:"ak_name"`
	// EKIndex is the NV index of the EK certificate that vouched.
	EKIndex uint32 `json:"ek_nv_index,omitempty"`
	// Certificate is the EK (or AK) certificate that vouched, PEM.
	Certificate string `json:"certificate,omitempty"`
	// Steps are the links of the chain of trust, from the CA to the AK.
	Steps []EnrollmentStep `json:"steps"`
}

// EnrollmentStep is one link of the chain of trust.
type EnrollmentStep struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

// EnrollRequest is the optional body of POST /v1/agents/{name}/enroll.
type EnrollRequest struct {
	// Reason is recorded in the agent's history.
	Reason string `json:"reason,omitempty"`
}

// Agent is an agent as the API shows it: its registration and what the
// verifier knows of it. Lists leave out the AK, the agent CA, the last
// result's findings and checks, and the events.
type Agent struct {
	AgentSpec
	State  fleet.Status `json:"state"`
	Reason string       `json:"reason"`
	Since  time.Time    `json:"since"`
	// LastPoll: when the last attestation ended (absent: never).
	LastPoll time.Time `json:"last_poll,omitzero"`
	NextDue  time.Time `json:"next_due,omitzero"`
	// Failures counts consecutive unreachable rounds.
	Failures int `json:"failures,omitempty"`
	// Findings ([]attest.Finding) and Checks ([]verifier.Check) of the
	// last result.
	Findings json.RawMessage `json:"findings,omitempty"`
	Checks   json.RawMessage `json:"checks,omitempty"`
	// Boot is what the verifier holds of the agent's current boot.
	Boot *Boot `json:"boot,omitempty"`
	// Events are the latest continuity events and operator actions
	// (reboot, clear, reference), newest first.
	Events []Event `json:"events,omitempty"`
	// Enrollment says what vouched for the AK of an agent registered with
	// ek_ca or ak_ca (absent until enrolled).
	Enrollment *Enrollment `json:"enrollment,omitempty"`
	// PushToken is the agent's push token, in the reply that created it
	// only: it is not stored, and cannot be shown again.
	PushToken string `json:"push_token,omitempty"`
}

// Boot is the accepted state of an agent's current boot.
type Boot struct {
	// ResetCount and RestartCount of the last accepted quote.
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
	// Records is the number of log records accepted in this boot.
	Records uint64 `json:"records"`
}

// Event is one entry of an agent's history.
type Event struct {
	ID    int64     `json:"id"`
	Agent string    `json:"agent"`
	Time  time.Time `json:"time"`
	// Event: "state" (a change of state), "reboot", "clear", "reference",
	// "enroll".
	Event    string          `json:"event"`
	OldState fleet.Status    `json:"old_state,omitempty"`
	NewState fleet.Status    `json:"new_state,omitempty"`
	Reason   string          `json:"reason"`
	Findings json.RawMessage `json:"findings,omitempty"`
}

// Reference is a stored reference. Body (the reference file) is given by
// GET /v1/references/{name} only.
type Reference struct {
	Name        string    `json:"name"`
	Fingerprint string    `json:"fingerprint"`
	Updated     time.Time `json:"updated"`
	// Agents counts the agents using it.
	Agents int    `json:"agents"`
	Body   string `json:"body,omitempty"`
}

// ReferenceRequest adds (POST /v1/references) or replaces (PUT
// /v1/references/{name}, where the name may be left out) a reference.
type ReferenceRequest struct {
	Name string `json:"name"`
	// Body is the reference file (YAML), as rimon reference generate
	// writes it.
	Body string `json:"body"`
}

// ClearRequest is the optional body of POST /v1/agents/{name}/clear.
type ClearRequest struct {
	// Reason is recorded in the agent's history.
	Reason string `json:"reason,omitempty"`
}

// Summary is GET /v1/summary: how many agents are in each state.
type Summary struct {
	Agents int                  `json:"agents"`
	States map[fleet.Status]int `json:"states"`
}

// Error is the body of every error reply.
type Error struct {
	Error string `json:"error"`
	// Field names the request field at fault, when one is.
	Field string `json:"field,omitempty"`
}
