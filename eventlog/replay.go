package eventlog

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
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

// Error describes the failure.
func (e *ReplayError) Error() string {
	return fmt.Sprintf("replay: record %d: %v", e.Index, e.Err)
}

// Unwrap returns the underlying error.
func (e *ReplayError) Unwrap() error { return e.Err }

// PCRKey names one PCR in one bank.
type PCRKey struct {
	PCR  int
	Bank crypto.Hash
}

// String formats it for people.
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
	banks   []crypto.Hash
	values  map[PCRKey][]byte
	hashers map[crypto.Hash]hash.Hash
	buf     []byte
	sum     []byte
}

// NewState starts a replay over the given banks, every PCR at its initial value.
func NewState(banks []crypto.Hash) *State {
	return &State{banks: append([]crypto.Hash(nil), banks...), values: map[PCRKey][]byte{}}
}

// Value returns a PCR's replayed value. The caller must not modify it.
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

func (s *State) hasher(h crypto.Hash) hash.Hash {
	if s.hashers == nil {
		s.hashers = map[crypto.Hash]hash.Hash{}
	}
	hh, ok := s.hashers[h]
	if !ok {
		hh = h.New()
		s.hashers[h] = hh
	}
	hh.Reset()
	return hh
}

// Apply verifies rec and extends its digests into the state. A record that
// has no digest for a tracked bank leaves that bank unchanged, as
// TPM2_PCR_Extend does. A record whose digests cannot be recomputed
// ([ErrNotRecomputable]) is extended as it is.
func (s *State) Apply(rec *Record) error {
	if err := s.verify(rec); err != nil && !errors.Is(err, ErrNotRecomputable) {
		return err
	}
	for _, bank := range s.banks {
		d, ok := rec.Digest(bank)
		if !ok {
			continue
		}
		h := s.hasher(bank)
		h.Write(s.Value(rec.PCR, bank))
		h.Write(d)
		s.values[PCRKey{rec.PCR, bank}] = h.Sum(nil)
	}
	return nil
}

// Verify checks that every digest of rec is the hash of its content. rimon
// records hash their canonical encoding; systemd records hash the string
// they carry. For a record whose digests cannot be recomputed it returns an
// error wrapping [ErrNotRecomputable]: such a record is not verified.
func Verify(rec *Record) error { return NewState(nil).verify(rec) }

func (s *State) verify(rec *Record) error {
	var data []byte
	switch rec.ContentType {
	case ContentTypeRimon:
		s.buf = rec.Content.AppendCanonical(s.buf[:0])
		data = s.buf
	case ContentTypeSystemd:
		str, err := systemdString(rec.RawContent)
		if err != nil {
			return err
		}
		data = []byte(str)
	default:
		return fmt.Errorf("%w (content_type %q)", ErrNotRecomputable, rec.ContentType)
	}
	for _, d := range rec.Digests {
		h := s.hasher(d.Alg)
		h.Write(data)
		s.sum = h.Sum(s.sum[:0])
		if !bytes.Equal(s.sum, d.Value) {
			return fmt.Errorf("%s %w: recorded %s, content hashes to %s", BankName(d.Alg), ErrDigestMismatch,
				hex.EncodeToString(d.Value), hex.EncodeToString(s.sum))
		}
	}
	return nil
}

// Replay verifies and replays records in order over banks. The error is a
// *ReplayError naming the first record that does not verify.
func Replay(records []Record, banks []crypto.Hash) (*State, error) {
	s := NewState(banks)
	for i := range records {
		if err := CheckRecNum(&records[i], i); err != nil {
			return nil, &ReplayError{Index: i, RecNum: records[i].RecNum, Err: err}
		}
		if err := s.Apply(&records[i]); err != nil {
			return nil, &ReplayError{Index: i, RecNum: records[i].RecNum, Err: err}
		}
	}
	return s, nil
}

// ErrSequence means a record's number is not its position in the log: a
// record was removed, inserted or moved, or a rimon record has no number.
var ErrSequence = errors.New("record numbers out of sequence")

// CheckRecNum checks the record number of rec, found at position index of
// its log (from 0): a record's recnum, when it has one, is its position,
// counting every record of the log (systemd's, which have none, included);
// a rimon record always has one.
func CheckRecNum(rec *Record, index int) error {
	return checkRecNum(rec.ContentType == ContentTypeRimon, rec.HasRecNum, rec.RecNum, index)
}

func checkRecNum(rimon, has bool, recnum uint64, index int) error {
	switch {
	case !has && rimon:
		return fmt.Errorf("%w: rimon record at position %d has no recnum", ErrSequence, index)
	case has && recnum != uint64(index):
		return fmt.Errorf("%w: recnum %d at position %d (recnum counts every record of the log from 0)", ErrSequence, recnum, index)
	}
	return nil
}

// ReplayReader verifies and replays the records read from r without keeping
// them, so that a log of any length replays in constant memory. It returns
// the state and the number of records. When the log ends in a torn record
// it returns the replay of the complete records with an error wrapping
// [ErrTorn]; any other error comes with a nil state.
func ReplayReader(r io.Reader, banks []crypto.Hash) (*State, int, error) {
	return ReplayVisit(r, banks, nil)
}

// View is a verified record as [ReplayVisit] shows it. It is valid only
// during the visit.
type View struct {
	raw *rawRecord
	rec *Record
}

// IsRimon reports whether the record is one of rimon's.
func (v *View) IsRimon() bool { return v.raw != nil || v.rec.ContentType == ContentTypeRimon }

// Str returns a string field of a rimon record's content ("" when absent).
func (v *View) Str(key string) string {
	if v.raw == nil {
		return v.rec.Content.Str(key)
	}
	for _, f := range v.raw.fields[:v.raw.nfields] {
		if !f.isNum && string(f.key) == key {
			return string(f.val)
		}
	}
	return ""
}

// Is reports whether a string field equals want, without allocating.
func (v *View) Is(key, want string) bool {
	if v.raw == nil {
		return v.rec.Content.Str(key) == want
	}
	for _, f := range v.raw.fields[:v.raw.nfields] {
		if !f.isNum && string(f.key) == key {
			return string(f.val) == want
		}
	}
	return want == ""
}

// ReplayVisit is ReplayReader that calls visit after each record has been
// verified and extended into the state; visit returning false stops the
// replay there (without error).
func ReplayVisit(r io.Reader, banks []crypto.Hash, visit func(i int, st *State, v *View) bool) (*State, int, error) {
	return replayVisit(r, NewState(banks), 0, nil, visit)
}

// replayVisit is ReplayVisit from state s, the first record read being
// number start; onRecord, when set, sees each verified record's body
// before visit does.
func replayVisit(r io.Reader, s *State, start int, onRecord func(body []byte), visit func(i int, st *State, v *View) bool) (*State, int, error) {
	rd := NewReader(r, 0)
	var raw rawRecord
	var view View // one for the whole replay: a View per record would escape, one allocation each
	for i := start; ; i++ {
		body, err := rd.nextBody()
		if err == io.EOF {
			return s, i, nil
		}
		if errors.Is(err, ErrTorn) {
			return s, i, err
		}
		if err != nil {
			return nil, i, err
		}
		view = View{}
		var recnum uint64
		if parseRaw(body, &raw) {
			recnum = raw.recnum
			err = checkRecNum(true, raw.hasRecnum, raw.recnum, i)
			if err == nil {
				err = s.applyRaw(&raw)
			}
			view.raw = &raw
		} else {
			rec, perr := parseRecord(body)
			if perr != nil {
				return nil, i, rd.fail(perr)
			}
			recnum = rec.RecNum
			err = CheckRecNum(&rec, i)
			if err == nil {
				err = s.Apply(&rec)
			}
			view.rec = &rec
		}
		if err != nil {
			return nil, i, &ReplayError{Index: i, RecNum: recnum, Err: err}
		}
		if onRecord != nil {
			onRecord(body)
		}
		rd.advance()
		if visit != nil && !visit(i, s, &view) {
			return s, i + 1, nil
		}
	}
}

// applyRaw is Apply for a record parsed by parseRaw.
func (s *State) applyRaw(r *rawRecord) error {
	s.buf = r.appendCanonical(s.buf[:0])
	for i := 0; i < r.ndig; i++ {
		d := &r.digs[i]
		h := s.hasher(d.alg)
		h.Write(s.buf)
		s.sum = h.Sum(s.sum[:0])
		if !bytes.Equal(s.sum, d.val[:d.n]) {
			return fmt.Errorf("%s %w: recorded %s, content hashes to %s", BankName(d.alg), ErrDigestMismatch,
				hex.EncodeToString(d.val[:d.n]), hex.EncodeToString(s.sum))
		}
	}
	for _, bank := range s.banks {
		d, ok := r.digest(bank)
		if !ok {
			continue
		}
		k := PCRKey{r.pcr, bank}
		cur, ok := s.values[k]
		if !ok {
			cur = InitialValue(r.pcr, bank)
		}
		h := s.hasher(bank)
		h.Write(cur)
		h.Write(d)
		s.values[k] = h.Sum(cur[:0])
	}
	return nil
}
