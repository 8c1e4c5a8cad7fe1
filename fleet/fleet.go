// Package fleet holds what the fleet verifier's parts share: an agent's
// registration and state, the states and their transitions, the
// observations kept per path, and the Store interface the engine, the API
// and the webhook sender use (implemented on SQLite and PostgreSQL by
// package fleet/sqlstore).
//
// It is pure: types, validation and the rules that decide a state; no
// goroutines, logging, clocks or I/O.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// Status is an agent's state. The six values are part of the CLI and API
// contract.
type Status string

// The states.
const (
	// Pending: registered, not attested yet (or cleared, not attested since).
	Pending Status = "pending"
	// Trusted: valid evidence, content approved by the reference.
	Trusted Status = "trusted"
	// Untrusted: valid evidence, content not approved (the findings say which files).
	Untrusted Status = "untrusted"
	// Invalid: the evidence failed a check (the reason names it).
	Invalid Status = "invalid"
	// Compromised: continuity broken within a boot; stays until an operator clears it.
	Compromised Status = "compromised"
	// Unreachable: the agent could not be asked (network, timeout, TLS, no push in time).
	Unreachable Status = "unreachable"
)

// Statuses lists the states, worst first (the order of dashboards).
var Statuses = []Status{Compromised, Invalid, Untrusted, Unreachable, Pending, Trusted}

// Valid reports whether s is one of the six states.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Severity orders states for "worst first": 0 is the worst.
func (s Status) Severity() int {
	for i, v := range Statuses {
		if s == v {
			return i
		}
	}
	return len(Statuses)
}

// DefaultInterval is an agent's polling interval when none is given.
const DefaultInterval = 60 * time.Second

// MinInterval is the shortest interval accepted.
const MinInterval = time.Second

// Spec is what an operator registers for an agent.
type Spec struct {
	// Name identifies the agent: 1 to 128 bytes of [A-Za-z0-9._-].
	Name string `json:"name"`
	// URL is the agent's evidence endpoint base (http or https); empty
	// for an agent that pushes.
	URL string `json:"url,omitempty"`
	// AgentCA is a PEM bundle to pin for the agent's TLS certificate.
	AgentCA string `json:"agent_ca,omitempty"`
	// AK is the pinned attestation key (PEM public key). Empty with Azure.
	AK string `json:"ak,omitempty"`
	// Azure says the AK is vouched for by the Azure SEV-SNP chain.
	Azure bool `json:"azure,omitempty"`
	// VMID, with Azure, pins the report's vmUniqueId.
	VMID string `json:"vm_id,omitempty"`
	// Reference names a stored reference; empty for none (authenticity only).
	Reference string `json:"reference,omitempty"`
	// PCRs and Banks to quote (default [23] and ["sha256"]).
	PCRs  []int    `json:"pcrs"`
	Banks []string `json:"banks"`
	// Interval between attestations (jittered by the scheduler).
	Interval time.Duration `json:"interval"`
	// Push says the agent posts its evidence (rimon watch --push) instead
	// of being polled; PushTokenHash is the SHA-256 (hex) of its token.
	Push          bool   `json:"push,omitempty"`
	PushTokenHash string `json:"-"`
	// EKCA, when set, is a PEM bundle of TPM vendor CAs: the AK is not
	// pinned but enrolled once, through the agent's EK certificate and
	// credential activation (package attest/enroll), and attested with
	// from then on.
	EKCA string `json:"ek_ca,omitempty"`
	// AKCA, when set, is a PEM bundle of cloud roots that vouch for the
	// AK certificate a cloud vTPM carries (enrolled once, as with EKCA).
	AKCA string `json:"ak_ca,omitempty"`
}

// Enrolls reports whether the agent's AK is enrolled (EKCA or AKCA)
// rather than pinned.
func (s Spec) Enrolls() bool { return s.EKCA != "" || s.AKCA != "" }

// Agent is a registered agent and what the verifier knows of it.
type Agent struct {
	Spec
	// ID is the store's key.
	ID int64 `json:"-"`
	// Status, the reason for it, and when it began.
	Status Status    `json:"state"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
	// Findings and Checks of the last result (JSON as the verifier library
	// gives them: []attest.Finding and []verifier.Check).
	Findings []byte `json:"-"`
	Checks   []byte `json:"-"`
	// LastPoll is when the last attestation ended (zero: never);
	// NextDue when the next is due.
	LastPoll time.Time `json:"last_poll"`
	NextDue  time.Time `json:"next_due"`
	// Failures counts consecutive unreachable rounds (for backoff).
	Failures int `json:"-"`
	// Boot is what the verifier holds of the agent's current boot.
	Boot Boot `json:"-"`
	// Version increases with every write of the row: a result is stored
	// only over the version it was computed from.
	Version int64 `json:"-"`
	// LeaseOwner and LeaseUntil: which verifier replica polls the agent
	// now (empty and zero when none).
	LeaseOwner string    `json:"-"`
	LeaseUntil time.Time `json:"-"`
	// Enrollment is what vouched for the AK of an agent that enrolls
	// (Spec.Enrolls): an enroll.Record as JSON, nil until enrolled (or
	// after an operator asked for enrollment again); EnrolledAt is when.
	Enrollment []byte    `json:"-"`
	EnrolledAt time.Time `json:"-"`
}

// Boot is the replay state of the agent's current boot: the TPM counters
// of the last accepted quote and the verifier library's saved state.
type Boot struct {
	// Known is false until a quote was accepted.
	Known bool
	// ResetCount, RestartCount and Clock are the last accepted quote's
	// clock info (ResetCount changes only with a TPM reset: a reboot).
	ResetCount   uint32
	RestartCount uint32
	Clock        uint64
	// State is the verifier library's saved state (verifier.State JSON),
	// nil when the next attestation must replay the whole log.
	State []byte
	// Refresh asks the next attestation for the whole log (since=0),
	// verified against State's accepted prefix for continuity: set when
	// the reference changed, so that the reference checks are redone.
	Refresh bool
}

// Observation is one distinct measurement of a path seen in the accepted
// prefix of the current boot: what a reference is checked against when it
// changes, without fetching logs again.
type Observation struct {
	Path string `json:"path"`
	// Kind is the record's kind (file, tree, image, unmeasured).
	Kind string `json:"kind"`
	// Deleted marks a deletion record.
	Deleted bool `json:"deleted,omitempty"`
	// SHA256, ManifestDigest and ConfigDigest as in the record.
	SHA256         string `json:"sha256,omitempty"`
	ManifestDigest string `json:"manifest_digest,omitempty"`
	ConfigDigest   string `json:"config_digest,omitempty"`
	// Cause and Error of an unmeasured record.
	Cause string `json:"cause,omitempty"`
	Error string `json:"error,omitempty"`
	// Record is the latest record number with this observation; Latest
	// says it is the path's latest record.
	Record uint64 `json:"record"`
	Latest bool   `json:"latest"`
}

// Transition is one entry of an agent's history: a change of state, or a
// continuity event (a reboot) that left the state as it was.
type Transition struct {
	ID    int64     `json:"id"`
	Agent string    `json:"agent"`
	At    time.Time `json:"time"`
	// Event is "state" for a change of state, "reboot", "clear" (an
	// operator's acknowledgement), "reference" (re-evaluated after a
	// reference change), "enroll".
	Event    string `json:"event"`
	From     Status `json:"old_state"`
	To       Status `json:"new_state"`
	Reason   string `json:"reason"`
	Findings []byte `json:"findings,omitempty"`
}

// Reference is a stored reference (a reference values file).
type Reference struct {
	Name string `json:"name"`
	// Body is the file as given; Fingerprint identifies what it checks.
	Body        []byte    `json:"-"`
	Fingerprint string    `json:"fingerprint"`
	Updated     time.Time `json:"updated"`
	// Agents counts the agents using it.
	Agents int `json:"agents"`
}

// Result is what one attestation of an agent produced, stored in one
// transaction by [Store.SaveResult].
type Result struct {
	// AgentID and Version: the row the result was computed from; the
	// result is refused ([ErrConflict]) if the row changed since.
	AgentID int64
	Version int64
	// Owner, when set, must still hold the agent's lease.
	Owner string
	At    time.Time
	// Status, Reason, Findings, Checks: the new state (a transition is
	// written when Status differs from the stored one).
	Status   Status
	Reason   string
	Findings []byte
	Checks   []byte
	// Boot replaces the stored boot when not nil.
	Boot *Boot
	// NewBoot clears the stored observations first (a reboot: a new log).
	NewBoot bool
	// Observations are upserted (keyed by path, kind, deleted and
	// digests); the one marked Latest for a path clears the others' mark.
	Observations []Observation
	// Events are continuity events to add to the history (reboot).
	Events []Transition
	// Failures is the new count of consecutive unreachable rounds.
	Failures int
	NextDue  time.Time
	// Enrollment, when not nil, is a new enrollment (an enroll.Record as
	// JSON) stored with the result.
	Enrollment []byte
}

// Delivery is one webhook message in the outbox.
type Delivery struct {
	// ID is the Standard Webhooks message id (webhook-id): msg_ + random.
	ID       string    `json:"id"`
	Endpoint string    `json:"endpoint"`
	Payload  []byte    `json:"-"`
	Created  time.Time `json:"created"`
	Attempts int       `json:"attempts"`
	Next     time.Time `json:"next_attempt"`
	// State is pending, delivered, failed (gave up) or disabled (410).
	State      string `json:"state"`
	LastStatus int    `json:"last_status"`
	LastError  string `json:"last_error,omitempty"`
}

// Filter selects agents in [Store.ListAgents].
type Filter struct {
	Status Status // empty: all
	Name   string // substring; empty: all
}

// Errors the store returns, for callers to branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict: the row changed since it was read (or the lease is
	// another's): the result was not stored.
	ErrConflict = errors.New("changed since it was read")
	// ErrInUse: a reference still used by agents cannot be removed.
	ErrInUse = errors.New("in use")
)

// More errors the store returns.
var (
	// ErrInvalid: the input (a Spec, a Result, a name) was refused; the
	// message names the field.
	ErrInvalid = errors.New("invalid")
	// ErrLimit: storing would pass a bound (such as the observations kept
	// per agent); nothing was stored.
	ErrLimit = errors.New("limit reached")
)

// Store keeps the fleet. Every method is safe for concurrent use; each
// write is one transaction.
type Store interface {
	// AddAgent registers an agent in state pending, due at once.
	AddAgent(ctx context.Context, s Spec, now time.Time) (*Agent, error)
	// UpdateSpec changes an agent's registration (not its state).
	UpdateSpec(ctx context.Context, name string, s Spec) error
	RemoveAgent(ctx context.Context, name string) error
	Agent(ctx context.Context, name string) (*Agent, error)
	ListAgents(ctx context.Context, f Filter) ([]*Agent, error)
	// CountByStatus counts agents per state.
	CountByStatus(ctx context.Context) (map[Status]int, error)

	// PutReference adds (replace false: ErrExists if present) or replaces
	// a reference (replace true: ErrNotFound if absent).
	PutReference(ctx context.Context, r Reference, replace bool) error
	Reference(ctx context.Context, name string) (*Reference, error)
	ListReferences(ctx context.Context) ([]*Reference, error)
	// AgentsUsing lists the agents whose spec names the reference.
	AgentsUsing(ctx context.Context, reference string) ([]*Agent, error)

	// Claim takes up to limit agents due at now that no live lease holds,
	// leases them to owner until now+lease, and returns them. Committed at
	// once: no transaction stays open across an attestation.
	Claim(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]*Agent, error)
	// Release gives a lease back without a result.
	Release(ctx context.Context, agentID int64, owner string) error
	// SaveResult stores a result, its transition, observations, events and
	// one outbox delivery per webhook endpoint for a change of state.
	SaveResult(ctx context.Context, r Result) error
	// Observations lists the agent's stored observations.
	Observations(ctx context.Context, agentID int64) ([]Observation, error)
	// Clear is an operator's acknowledgement: the agent leaves its state
	// for pending, its boot is forgotten (the next attestation replays the
	// whole log), due at once; recorded as a "clear" transition.
	Clear(ctx context.Context, name, reason string, now time.Time) error
	// History lists the agent's transitions, newest first.
	History(ctx context.Context, name string, limit int) ([]Transition, error)
	// Unenroll is an operator's decision to enroll an agent again: its
	// enrollment, boot and observations are forgotten, it goes to pending,
	// due at once; recorded as an "enroll" transition.
	Unenroll(ctx context.Context, name, reason string, now time.Time) error

	// SetEndpoints declares the webhook endpoints (URLs); deliveries are
	// queued for the enabled ones.
	SetEndpoints(ctx context.Context, urls []string) error
	// DisableEndpoint stops deliveries to an endpoint (410 Gone).
	DisableEndpoint(ctx context.Context, url string) error
	// DueDeliveries lists pending deliveries due at now, oldest first.
	DueDeliveries(ctx context.Context, now time.Time, limit int) ([]*Delivery, error)
	// UpdateDelivery stores an attempt's outcome.
	UpdateDelivery(ctx context.Context, d *Delivery) error
	// Deliveries lists an endpoint's deliveries, newest first ("" for all).
	Deliveries(ctx context.Context, endpoint string, limit int) ([]*Delivery, error)

	Close() error
}

// EventEnroll is the history event of an enrollment, and of an
// operator's request to enroll again.
const EventEnroll = "enroll"

// EventStateChanged is the webhook event type of a change of state.
const EventStateChanged = "agent.state_changed"

// Payload is a webhook message's body (Standard Webhooks shape: type,
// timestamp, data).
type Payload struct {
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp"`
	Data      PayloadData `json:"data"`
}

// PayloadData is what a state change says.
type PayloadData struct {
	Agent    string `json:"agent"`
	OldState Status `json:"old_state"`
	NewState Status `json:"new_state"`
	Reason   string `json:"reason"`
	// Findings as the verifier library gives them ([]attest.Finding), or null.
	Findings json.RawMessage `json:"findings"`
	Time     time.Time       `json:"time"`
}

// Metrics is what the fleet's parts report; package fleet/metrics
// implements it on Prometheus. [NopMetrics] discards everything.
type Metrics interface {
	// Attestation counts one attestation by its outcome (a Status, or
	// "error" when nothing could be stored) and observes its duration.
	Attestation(outcome Status, d time.Duration)
	// Lag observes how late an attestation started after its due time.
	Lag(d time.Duration)
	// Records counts records verified.
	Records(n int)
	// Delivery counts one webhook delivery attempt (ok: 2xx).
	Delivery(ok bool)
	// DB observes one store operation's duration (op: "claim", "save", ...).
	DB(op string, d time.Duration)
}

// NopMetrics discards every report.
type NopMetrics struct{}

// Attestation does nothing.
func (NopMetrics) Attestation(Status, time.Duration) {}

// Lag does nothing.
func (NopMetrics) Lag(time.Duration) {}

// Records does nothing.
func (NopMetrics) Records(int) {}

// Delivery does nothing.
func (NopMetrics) Delivery(bool) {}

// DB does nothing.
func (NopMetrics) DB(string, time.Duration) {}

// Engine is what the API asks of the attesting engine (package
// fleet/engine).
type Engine interface {
	// Wake asks for the named agent to be attested soon (after add,
	// change, clear).
	Wake(name string)
	// ReferenceReplaced re-evaluates every agent using the reference from
	// its stored observations, storing each change of state.
	ReferenceReplaced(ctx context.Context, name string) error
	// PushHandler serves /v1/push/ for agents that push (their own
	// tokens, not the API's).
	PushHandler() http.Handler
}
