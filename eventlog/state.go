package eventlog

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// A Checkpoint is a replay saved after a number of records, so that a
// later replay continues with only the records that follow: the record
// count, the PCR values per bank, and the digest of the accepted prefix,
// a running hash over the records' bytes exactly as stored. It is a value:
// [Checkpoint.MarshalJSON] and [ParseCheckpoint] save and restore it.
//
// The prefix digest starts as 32 zero bytes and, for each record, becomes
// SHA-256(digest || 0x1E || record JSON || 0x0A): the record as the log
// file holds it. Two logs have the same digest only if they have the same
// records, byte for byte, in the same order; whoever keeps the digest can
// tell whether a later log really extends the prefix it accepted.
type Checkpoint struct {
	// Records is the number of records replayed.
	Records uint64
	// Prefix is the digest of those records.
	Prefix [32]byte
	banks  []crypto.Hash
	values map[PCRKey][]byte // only PCRs that differ from InitialValue are needed, all touched ones are kept
}

// CheckpointVersion is the version of the saved form [ParseCheckpoint] reads.
const CheckpointVersion = 1

// MaxCheckpointRecords bounds a checkpoint's record count: JSON integers
// are exact up to 2^53.
const MaxCheckpointRecords = 1<<53 - 1

// NewCheckpoint is the checkpoint before any record: every PCR of banks at
// its initial value.
func NewCheckpoint(banks []crypto.Hash) *Checkpoint {
	b := append([]crypto.Hash(nil), banks...)
	sort.Slice(b, func(i, j int) bool { return b[i] < b[j] })
	return &Checkpoint{banks: b, values: map[PCRKey][]byte{}}
}

// Banks returns the banks replayed, in order.
func (c *Checkpoint) Banks() []crypto.Hash { return append([]crypto.Hash(nil), c.banks...) }

// Value returns a PCR's value after the checkpoint's records.
func (c *Checkpoint) Value(pcr int, bank crypto.Hash) []byte {
	if v, ok := c.values[PCRKey{pcr, bank}]; ok {
		return append([]byte(nil), v...)
	}
	return InitialValue(pcr, bank)
}

// Equal reports whether two checkpoints are the same replay.
func (c *Checkpoint) Equal(o *Checkpoint) bool {
	if c.Records != o.Records || c.Prefix != o.Prefix || len(c.banks) != len(o.banks) {
		return false
	}
	for i := range c.banks {
		if c.banks[i] != o.banks[i] {
			return false
		}
	}
	for _, b := range c.banks {
		for pcr := 0; pcr <= MaxPCR; pcr++ {
			if !bytes.Equal(c.Value(pcr, b), o.Value(pcr, b)) {
				return false
			}
		}
	}
	return true
}

// state returns a replay state at the checkpoint.
func (c *Checkpoint) state() *State {
	s := NewState(c.banks)
	for k, v := range c.values {
		s.values[k] = append([]byte(nil), v...)
	}
	return s
}

// Replayer continues a replay from a checkpoint, keeping the prefix digest
// as it goes.
type Replayer struct {
	st     *State
	n      uint64
	prefix [32]byte
	hash   bool
}

// Resume starts a replay at the checkpoint.
func (c *Checkpoint) Resume() *Replayer {
	return &Replayer{st: c.state(), n: c.Records, prefix: c.Prefix, hash: true}
}

// NewReplayer starts a replay of a whole log that keeps no prefix digest,
// for a caller that wants no checkpoint: it saves the SHA-256 pass over
// the log's bytes, and its Checkpoint is nil.
func NewReplayer(banks []crypto.Hash) *Replayer {
	return &Replayer{st: NewState(banks)}
}

// Visit verifies and replays the records read from r, which are the
// records that follow the checkpoint (the first is record number
// Records), as [ReplayVisit] does: it checks each record's number against
// its position in the whole log, and calls visit after each record. It
// returns the number of records of the whole log replayed so far. It may
// be called once.
func (p *Replayer) Visit(r io.Reader, visit func(i int, st *State, v *View) bool) (int, error) {
	var onRecord func([]byte)
	if p.hash {
		h := sha256.New()
		rs, lf := []byte{0x1e}, []byte{'\n'}
		onRecord = func(body []byte) {
			h.Reset()
			h.Write(p.prefix[:])
			h.Write(rs)
			h.Write(body)
			h.Write(lf)
			h.Sum(p.prefix[:0])
			p.n++
		}
	}
	_, n, err := replayVisit(r, p.st, int(p.n), onRecord, visit)
	return n, err
}

// Checkpoint returns the replay after the records visited so far (when
// called from visit, after the record just visited); nil for a replay
// started by NewReplayer.
func (p *Replayer) Checkpoint() *Checkpoint {
	if !p.hash {
		return nil
	}
	c := &Checkpoint{Records: p.n, Prefix: p.prefix, banks: append([]crypto.Hash(nil), p.st.banks...), values: map[PCRKey][]byte{}}
	sort.Slice(c.banks, func(i, j int) bool { return c.banks[i] < c.banks[j] })
	for k, v := range p.st.values {
		c.values[k] = append([]byte(nil), v...)
	}
	return c
}

// savedCheckpoint is the saved form.
type savedCheckpoint struct {
	Version int                          `json:"version"`
	Records uint64                       `json:"records"`
	Prefix  string                       `json:"prefix"`
	Banks   map[string]map[string]string `json:"banks"`
}

// MarshalJSON saves the checkpoint, in the one form [ParseCheckpoint]
// accepts: {"version":1,"records":N,"prefix":HEX,"banks":{"sha256":{"23":HEX}}},
// keys in order, lower-case hex, every bank replayed present (its map
// holding the PCRs records extended).
func (c *Checkpoint) MarshalJSON() ([]byte, error) {
	s := savedCheckpoint{Version: CheckpointVersion, Records: c.Records, Prefix: hex.EncodeToString(c.Prefix[:]),
		Banks: map[string]map[string]string{}}
	for _, b := range c.banks {
		s.Banks[BankName(b)] = map[string]string{}
	}
	for k, v := range c.values {
		m, ok := s.Banks[BankName(k.Bank)]
		if !ok {
			return nil, fmt.Errorf("checkpoint: %s is not in a replayed bank", k)
		}
		m[strconv.Itoa(k.PCR)] = hex.EncodeToString(v)
	}
	return json.Marshal(s)
}

// ErrCheckpoint means a saved checkpoint does not parse or is not
// consistent.
var ErrCheckpoint = errors.New("saved replay state")

// ParseCheckpoint restores a checkpoint saved by [Checkpoint.MarshalJSON].
// It is strict: the version is known, every field is present and checked
// (banks known, PCR numbers 0 to 31 as in records, each value as long as its bank's
// digest, the count within [MaxCheckpointRecords], a checkpoint of zero
// records with the zero digest and initial values), and the text is the
// one form MarshalJSON writes (so no field is given twice); a final line
// feed is allowed. Errors wrap [ErrCheckpoint] and name the field.
func ParseCheckpoint(b []byte) (*Checkpoint, error) {
	bad := func(format string, a ...any) (*Checkpoint, error) {
		return nil, fmt.Errorf("%w: %s", ErrCheckpoint, fmt.Sprintf(format, a...))
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var s struct {
		Version *int                         `json:"version"`
		Records *uint64                      `json:"records"`
		Prefix  *string                      `json:"prefix"`
		Banks   map[string]map[string]string `json:"banks"`
	}
	if err := d.Decode(&s); err != nil {
		return bad("%v", err)
	}
	if d.More() {
		return bad("text after the object")
	}
	switch {
	case s.Version == nil:
		return bad("version: missing")
	case *s.Version != CheckpointVersion:
		return bad("version %d: this rimon reads version %d (delete the file to start over)", *s.Version, CheckpointVersion)
	case s.Records == nil:
		return bad("records: missing")
	case *s.Records > MaxCheckpointRecords:
		return bad("records %d: more than %d", *s.Records, uint64(MaxCheckpointRecords))
	case s.Prefix == nil:
		return bad("prefix: missing")
	case len(s.Banks) == 0:
		return bad("banks: missing or empty")
	}
	c := &Checkpoint{Records: *s.Records, values: map[PCRKey][]byte{}}
	p, err := hex.DecodeString(*s.Prefix)
	if err != nil || len(p) != len(c.Prefix) {
		return bad("prefix %q: want %d bytes in hex", *s.Prefix, len(c.Prefix))
	}
	copy(c.Prefix[:], p)
	for name, pcrs := range s.Banks {
		bank, err := ParseBank(name)
		if err != nil {
			return bad("banks: %v", err)
		}
		c.banks = append(c.banks, bank)
		for ps, vs := range pcrs {
			pcr, err := strconv.Atoi(ps)
			if err != nil || pcr < 0 || pcr > MaxPCR || strconv.Itoa(pcr) != ps {
				return bad("banks.%s: PCR %q: want 0 to %d", name, ps, MaxPCR)
			}
			v, err := hex.DecodeString(vs)
			if err != nil || len(v) != bank.Size() {
				return bad("banks.%s.%s: value %q: want %d bytes in hex", name, ps, vs, bank.Size())
			}
			c.values[PCRKey{pcr, bank}] = v
		}
	}
	sort.Slice(c.banks, func(i, j int) bool { return c.banks[i] < c.banks[j] })
	if c.Records == 0 {
		if c.Prefix != ([32]byte{}) {
			return bad("prefix: a state of 0 records has the zero digest")
		}
		for k, v := range c.values {
			if !bytes.Equal(v, InitialValue(k.PCR, k.Bank)) {
				return bad("banks.%s.%d: a state of 0 records has initial PCR values", BankName(k.Bank), k.PCR)
			}
		}
	} else if c.Prefix == ([32]byte{}) {
		return bad("prefix: zero digest for %d records", c.Records)
	}
	again, err := c.MarshalJSON()
	if err != nil {
		return bad("%v", err)
	}
	if !bytes.Equal(again, bytes.TrimSuffix(b, []byte("\n"))) {
		return bad("not in its one saved form (a field given twice, spacing, key order or upper-case hex)")
	}
	return c, nil
}
