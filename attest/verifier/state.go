package verifier

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
)

// State is what a verifier saves after a verdict, to verify the next
// evidence from the same machine incrementally ([Options.State]): the
// replay of the trusted prefix ([eventlog.Checkpoint]: record count, PCR
// values per bank, the prefix digest) and the reference checks' state
// after it ([attest.Prior] says what is kept, and its bounds). A
// [Result] carries the state to save; [ParseState] restores it.
//
// Its saved form is one JSON object,
// {"version":1,"log":CHECKPOINT,"checks":REFSTATE}, in exactly the form
// [State.MarshalJSON] writes.
type State struct {
	attest.Prior
}

// StateVersion is the version of the saved form.
const StateVersion = 1

// ErrState means a saved state does not parse or is not consistent.
var ErrState = errors.New("saved verifier state")

type savedState struct {
	Version int             `json:"version"`
	Log     json.RawMessage `json:"log"`
	Checks  attest.RefState `json:"checks"`
}

// Records is the number of records the state has accepted: the next
// evidence is asked for from this record on (since=Records).
func (s *State) Records() uint64 { return s.Log.Records }

// MarshalJSON saves the state.
func (s *State) MarshalJSON() ([]byte, error) {
	if s.Log == nil {
		return nil, errors.New("verifier state without a log checkpoint")
	}
	log, err := s.Log.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return json.Marshal(savedState{Version: StateVersion, Log: log, Checks: s.Ref})
}

// ParseState restores a state saved by [State.MarshalJSON]. It is
// strict: a known version, no unknown or missing field, the checkpoint as
// [eventlog.ParseCheckpoint] checks it, the reference state as
// [attest.RefState.Check] does, and the text in the one form
// MarshalJSON writes (a final line feed allowed). Errors wrap [ErrState].
func ParseState(b []byte) (*State, error) {
	bad := func(format string, a ...any) (*State, error) {
		return nil, fmt.Errorf("%w: %s", ErrState, fmt.Sprintf(format, a...))
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var s struct {
		Version *int             `json:"version"`
		Log     json.RawMessage  `json:"log"`
		Checks  *attest.RefState `json:"checks"`
	}
	if err := d.Decode(&s); err != nil {
		return bad("%v", err)
	}
	switch {
	case d.More():
		return bad("text after the object")
	case s.Version == nil:
		return bad("version: missing")
	case *s.Version != StateVersion:
		return bad("version %d: this rimon reads version %d", *s.Version, StateVersion)
	case s.Log == nil:
		return bad("log: missing")
	case s.Checks == nil:
		return bad("checks: missing")
	}
	cp, err := eventlog.ParseCheckpoint(s.Log)
	if err != nil {
		return bad("log: %v", err)
	}
	if err := s.Checks.Check(cp.Records); err != nil {
		return bad("checks: %v", err)
	}
	st := &State{attest.Prior{Log: cp, Ref: *s.Checks}}
	again, err := st.MarshalJSON()
	if err != nil {
		return bad("%v", err)
	}
	if !bytes.Equal(again, bytes.TrimSuffix(b, []byte("\n"))) {
		return bad("not in its one saved form (a field given twice, spacing, key order, or a field that does not belong)")
	}
	return st, nil
}
