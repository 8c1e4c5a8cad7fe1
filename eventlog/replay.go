package eventlog

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
)

// ErrDigestMismatch means a record's digest is not the hash of its content:
// the record was edited after it was written.
var ErrDigestMismatch = errors.New("digest does not match content")

// ReplayError says which record broke replay and why.
type ReplayError struct {
	Index  int    // position in the log, from 0
	RecNum uint64 // the record's own number, when it has one
	Err    error
}

func (e *ReplayError) Error() string {
	return fmt.Sprintf("replay: record %d: %v", e.Index, e.Err)
}

func (e *ReplayError) Unwrap() error { return e.Err }

// PCRKey names one PCR in one bank.
type PCRKey struct {
	PCR  int
	Bank crypto.Hash
}

func (k PCRKey) String() string { return fmt.Sprintf("PCR %d %s", k.PCR, BankName(k.Bank)) }

// InitialValue is a PCR's value after TPM reset: all ones for PCRs 17 to 22
// (reset only by a dynamic launch), zeros for the others.
func InitialValue(pcr int, bank crypto.Hash) []byte {
	v := make([]byte, bank.Size())
	if pcr >= 17 && pcr <= 22 {
		for i := range v {
			v[i] = 0xff
		}
	}
	return v
}

// State is the set of PCR values a replay reaches.
type State struct {
	banks  []crypto.Hash
	values map[PCRKey][]byte
	buf    []byte
}

// NewState starts a replay over the given banks, every PCR at its initial value.
func NewState(banks []crypto.Hash) *State {
	return &State{banks: append([]crypto.Hash(nil), banks...), values: map[PCRKey][]byte{}}
}

// Banks returns the banks this state tracks.
func (s *State) Banks() []crypto.Hash { return s.banks }

// Value returns a PCR's replayed value.
func (s *State) Value(pcr int, bank crypto.Hash) []byte {
	if v, ok := s.values[PCRKey{pcr, bank}]; ok {
		return v
	}
	return InitialValue(pcr, bank)
}

// PCRs lists the PCRs the replay has touched, in order.
func (s *State) PCRs() []int {
	seen := map[int]bool{}
	var out []int
	for k := range s.values {
		if !seen[k.PCR] {
			seen[k.PCR] = true
			out = append(out, k.PCR)
		}
	}
	sort.Ints(out)
	return out
}

// Clone returns an independent copy.
func (s *State) Clone() *State {
	c := NewState(s.banks)
	for k, v := range s.values {
		c.values[k] = append([]byte(nil), v...)
	}
	return c
}

// Apply verifies rec and extends its digests into the state. A record that
// has no digest for a tracked bank leaves that bank unchanged, as
// TPM2_PCR_Extend does.
func (s *State) Apply(rec *Record) error {
	if err := Verify(rec); err != nil {
		return err
	}
	for _, bank := range s.banks {
		d, ok := rec.Digest(bank)
		if !ok {
			continue
		}
		k := PCRKey{rec.PCR, bank}
		cur := s.Value(rec.PCR, bank)
		h := bank.New()
		s.buf = append(append(s.buf[:0], cur...), d...)
		h.Write(s.buf)
		s.values[k] = h.Sum(cur[:0])
	}
	return nil
}

// Verify checks that every digest of rec is the hash of its content. rimon
// records hash their canonical encoding; systemd records hash the string
// they carry. Records of other content types cannot be checked and are refused.
func Verify(rec *Record) error {
	var data []byte
	switch rec.ContentType {
	case ContentTypeRimon:
		data = rec.Content.Canonical()
	case ContentTypeSystemd:
		s, ok := systemdString(rec.RawContent)
		if !ok {
			return errors.New(`systemd record without a "string" to verify`)
		}
		data = []byte(s)
	default:
		return fmt.Errorf("content_type %q cannot be verified", rec.ContentType)
	}
	for _, d := range rec.Digests {
		h := d.Alg.New()
		h.Write(data)
		if got := h.Sum(nil); !bytes.Equal(got, d.Value) {
			return fmt.Errorf("%s %w: recorded %s, content hashes to %s", BankName(d.Alg), ErrDigestMismatch,
				hex.EncodeToString(d.Value), hex.EncodeToString(got))
		}
	}
	return nil
}

// Replay verifies and replays records in order over banks. The error is a
// *ReplayError naming the first record that does not verify.
func Replay(records []Record, banks []crypto.Hash) (*State, error) {
	s := NewState(banks)
	for i := range records {
		if err := checkSequence(records, i); err != nil {
			return nil, &ReplayError{Index: i, RecNum: records[i].RecNum, Err: err}
		}
		if err := s.Apply(&records[i]); err != nil {
			return nil, &ReplayError{Index: i, RecNum: records[i].RecNum, Err: err}
		}
	}
	return s, nil
}

// ErrSequence means record numbers do not count up by one: a record was
// removed, inserted or moved.
var ErrSequence = errors.New("record numbers out of sequence")

func checkSequence(records []Record, i int) error {
	if i == 0 || !records[i].HasRecNum || !records[i-1].HasRecNum {
		return nil
	}
	if want := records[i-1].RecNum + 1; records[i].RecNum != want {
		return fmt.Errorf("%w: recnum %d follows %d (want %d)", ErrSequence, records[i].RecNum, records[i-1].RecNum, want)
	}
	return nil
}
