package logfile

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/rimon-dev/rimon/eventlog"
)

// PCRs is what the log needs of a TPM: read PCR values and extend one PCR.
// tpm.TPM implements it.
type PCRs interface {
	// ReadPCRs returns the value of pcr in each bank.
	ReadPCRs(ctx context.Context, pcr int, banks []crypto.Hash) (map[crypto.Hash][]byte, error)
	// ExtendPCR extends pcr with one digest per bank in a single TPM2_PCR_Extend.
	ExtendPCR(ctx context.Context, pcr int, digests map[crypto.Hash][]byte) error
}

// ReconcileOptions says how [Reconcile] compares and repairs.
type ReconcileOptions struct {
	// Banks are the TPM's active banks that rimon extends; only these are compared.
	Banks []crypto.Hash
	// PCRs are compared even when no record names them (the PCR about to be extended).
	PCRs []int
	// MaxRepair is how many trailing records, written but never extended, may be
	// extended now. A writer holds the log's lock from append to extend, so a crash
	// leaves at most one; 0 repairs nothing and reports them as Pending.
	MaxRepair int
	// Rebuild extends the whole log into a TPM that was just created empty (the
	// in-process simulator, whose state dies with the process). Never set it for a
	// TPM that keeps state: it would hide a PCR reset.
	Rebuild bool
}

// ReconcileResult says what [Reconcile] found and did.
type ReconcileResult struct {
	// Records is the number of complete records in the log.
	Records int
	// Pending lists the indexes of records that were written but not extended and
	// were left so (MaxRepair too small).
	Pending []int
	// Repaired lists the indexes of records extended now.
	Repaired []int
	// State is the replay of all records.
	State *eventlog.State
}

// Mismatch is one PCR whose TPM value is not the replayed one.
type Mismatch struct {
	Key      eventlog.PCRKey
	Expected []byte // replay of every record
	Actual   []byte // read from the TPM
}

// DivergenceError means the TPM's PCRs equal the replay of no prefix of the
// log (or of a prefix shorter than repair allows): the PCR was extended or
// reset outside rimon, or the log was edited or truncated. It is never repaired.
type DivergenceError struct {
	Records    int
	Mismatches []Mismatch
	// MatchedPrefix is the number of leading records whose replay equals the
	// TPM, or -1 when no prefix does.
	MatchedPrefix int
	// Reset is set when every compared PCR is at its reset value while the
	// log says it was extended: the PCR was reset (TPM2_PCR_Reset) or the
	// TPM restarted without its state.
	Reset bool
	Hint  string
}

// crashLeaves is how many records a crash can leave written but not
// extended: a writer holds the log's lock from append to extend.
const crashLeaves = 1

// Error describes the failure.
func (e *DivergenceError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "log and TPM disagree (log has %d records)", e.Records)
	if e.Hint != "" {
		// What happened first; the values after.
		b.WriteString(": ")
		b.WriteString(e.Hint)
	}
	for _, m := range e.Mismatches {
		fmt.Fprintf(&b, "; %s: TPM has %s, replay of the log gives %s", m.Key,
			hex.EncodeToString(m.Actual), hex.EncodeToString(m.Expected))
	}
	return b.String()
}

// Reconcile compares the TPM with the replay of records. When the TPM equals
// the replay of all records, it does nothing. When it equals the replay
// without the last few records, those were written but never extended: it
// extends them (up to MaxRepair) and checks the TPM again. Anything else is a
// *DivergenceError; a record that does not verify is a *ReplayError.
func Reconcile(ctx context.Context, records []eventlog.Record, pcrs PCRs, opts ReconcileOptions) (*ReconcileResult, error) {
	return reconcileFrom(ctx, eventlog.NewState(opts.Banks), 0, nil, records, pcrs, opts)
}

// reconcileFrom is Reconcile for records that follow a prefix of base
// records already known to agree with the TPM and replayed into start; prev
// is the last of those, if any.
func reconcileFrom(ctx context.Context, start *eventlog.State, base int, prev *eventlog.Record, records []eventlog.Record, pcrs PCRs, opts ReconcileOptions) (*ReconcileResult, error) {
	pcrSet := map[int]bool{}
	for _, p := range opts.PCRs {
		pcrSet[p] = true
	}
	for _, p := range start.PCRs() {
		pcrSet[p] = true
	}
	for i := range records {
		pcrSet[records[i].PCR] = true
	}
	var pcrList []int
	for p := range pcrSet {
		pcrList = append(pcrList, p)
	}
	sort.Ints(pcrList)

	actual, err := readAll(ctx, pcrs, pcrList, opts.Banks)
	if err != nil {
		return nil, err
	}
	st := start.Clone()
	matches := func() bool {
		for k, v := range actual {
			if !bytes.Equal(st.Value(k.PCR, k.Bank), v) {
				return false
			}
		}
		return true
	}
	matched := -1
	if matches() {
		matched = 0
	}
	for i := range records {
		if err := eventlog.CheckRecNum(&records[i], base+i); err != nil {
			return nil, &eventlog.ReplayError{Index: base + i, RecNum: records[i].RecNum, Err: err}
		}
		if err := st.Apply(&records[i]); err != nil {
			return nil, &eventlog.ReplayError{Index: base + i, RecNum: records[i].RecNum, Err: err}
		}
		if matches() {
			matched = i + 1
		}
	}
	res := &ReconcileResult{Records: base + len(records), State: st}
	if matched == len(records) {
		return res, nil
	}
	div := &DivergenceError{Records: base + len(records), MatchedPrefix: -1}
	for _, p := range pcrList {
		for _, b := range opts.Banks {
			k := eventlog.PCRKey{PCR: p, Bank: b}
			if exp := st.Value(p, b); !bytes.Equal(exp, actual[k]) {
				div.Mismatches = append(div.Mismatches, Mismatch{Key: k, Expected: exp, Actual: actual[k]})
			}
		}
	}
	pending := len(records) - matched
	div.Reset = allInitial(actual)
	resetHint := fmt.Sprintf("the PCR was reset: it is at its reset value although the log has %d records; the TPM restarted without its state, or a process with TPM access reset the PCR; the log cannot be trusted for this TPM",
		base+len(records))
	switch {
	case matched < 0:
		div.Hint = "no prefix of the log replays to the TPM's values: a PCR was extended outside rimon, or the log was edited or truncated"
		if div.Reset {
			div.Hint = resetHint
		}
		return nil, div
	case opts.Rebuild || pending <= opts.MaxRepair:
		// Records written before a crash and never extended: extend them now.
	case opts.MaxRepair == 0 && pending <= crashLeaves:
		for i := matched; i < len(records); i++ {
			res.Pending = append(res.Pending, base+i)
		}
		return res, nil
	default:
		div.MatchedPrefix = base + matched
		if div.Reset && base+matched == 0 {
			div.Hint = resetHint
			return nil, div
		}
		div.Hint = fmt.Sprintf("the TPM matches the first %d records, and %d records were never extended, more than the %d a crash can leave: the PCR was probably reset",
			base+matched, pending, max(opts.MaxRepair, crashLeaves))
		if div.Reset {
			div.Hint += " (it is at its reset value)"
		}
		return nil, div
	}
	for i := matched; i < len(records); i++ {
		if err := extendRecord(ctx, pcrs, &records[i], opts.Banks); err != nil {
			return nil, fmt.Errorf("repair: extend record %d: %w", base+i, err)
		}
		res.Repaired = append(res.Repaired, base+i)
	}
	actual, err = readAll(ctx, pcrs, pcrList, opts.Banks)
	if err != nil {
		return nil, err
	}
	if !matches() {
		return nil, fmt.Errorf("repair: after extending records %v the TPM still disagrees with the log", res.Repaired)
	}
	return res, nil
}

func readAll(ctx context.Context, pcrs PCRs, pcrList []int, banks []crypto.Hash) (map[eventlog.PCRKey][]byte, error) {
	actual := map[eventlog.PCRKey][]byte{}
	for _, p := range pcrList {
		vals, err := pcrs.ReadPCRs(ctx, p, banks)
		if err != nil {
			return nil, fmt.Errorf("read PCR %d: %w", p, err)
		}
		for _, b := range banks {
			v, ok := vals[b]
			if !ok {
				return nil, fmt.Errorf("read PCR %d: the TPM returned no %s value", p, eventlog.BankName(b))
			}
			actual[eventlog.PCRKey{PCR: p, Bank: b}] = v
		}
	}
	return actual, nil
}

func allInitial(actual map[eventlog.PCRKey][]byte) bool {
	for k, v := range actual {
		if !bytes.Equal(v, eventlog.InitialValue(k.PCR, k.Bank)) {
			return false
		}
	}
	return true
}

// extendRecord extends a record's digests for the given banks.
func extendRecord(ctx context.Context, pcrs PCRs, rec *eventlog.Record, banks []crypto.Hash) error {
	ds := map[crypto.Hash][]byte{}
	for _, b := range banks {
		if d, ok := rec.Digest(b); ok {
			ds[b] = d
		}
	}
	if len(ds) == 0 {
		return nil
	}
	return pcrs.ExtendPCR(ctx, rec.PCR, ds)
}
