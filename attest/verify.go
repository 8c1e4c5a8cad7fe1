package attest

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

// Measured is one trusted record, reduced to what reference checks need.
type Measured struct {
	Index          int    `json:"record"`
	Kind           string `json:"kind"`
	Path           string `json:"path"`
	SHA256         string `json:"sha256,omitempty"`
	Reason         string `json:"reason"`
	ManifestDigest string `json:"manifest_digest,omitempty"`
	ConfigDigest   string `json:"config_digest,omitempty"`
}

// LogMatch is the part of a log a quote vouches for.
type LogMatch struct {
	// Records is the number of complete, verified records read.
	Records int
	// Covered is the number of leading records whose replay equals the quote.
	Covered int
	// Measured is the number of covered rimon records.
	Measured int
	// TailProblem explains why reading stopped early, if it did.
	TailProblem string
	// Values are the replayed values of the quoted PCRs after the covered records.
	Values map[eventlog.PCRKey][]byte
	// Failures and Warnings are the reference findings on covered records
	// (the first MaxFindings of each); the totals count them all.
	Failures, Warnings         []Finding
	FailureTotal, WarningTotal int
}

// MaxFindings bounds the failures and warnings a result lists one by one.
const MaxFindings = 1000

func (m *LogMatch) snapshot(st *eventlog.State, sel []eventlog.PCRKey) {
	m.Values = map[eventlog.PCRKey][]byte{}
	for _, k := range sel {
		m.Values[k] = append([]byte(nil), st.Value(k.PCR, k.Bank)...)
	}
}

// MatchLog streams the log once: it finds the longest prefix that replays
// to the quoted PCRs (or, with no reported values, to the quote's PCR
// digest), and checks the records of that prefix against ref (when not
// nil). Records after the prefix are counted and never trusted. Every
// record's digests are recomputed from its content.
func MatchLog(log io.Reader, q *Quoted, ref *policy.Reference) (*LogMatch, error) {
	banks := map[crypto.Hash]bool{}
	for _, k := range q.Selection {
		banks[k.Bank] = true
	}
	var bl []crypto.Hash
	for b := range banks {
		bl = append(bl, b)
	}
	sort.Slice(bl, func(i, j int) bool { return bl[i] < bl[j] })
	matches := func(st *eventlog.State) bool {
		if q.Values != nil {
			for k, v := range q.Values {
				if !bytes.Equal(st.Value(k.PCR, k.Bank), v) {
					return false
				}
			}
			return true
		}
		return bytes.Equal(q.digestOf(func(k eventlog.PCRKey) []byte { return st.Value(k.PCR, k.Bank) }), q.PCRDigest)
	}
	m := &LogMatch{Covered: -1}
	if matches(eventlog.NewState(bl)) {
		m.Covered = 0
		m.snapshot(eventlog.NewState(bl), q.Selection)
	}
	chk := newRefChecker(ref)
	pendingMeasured := 0
	_, n, err := eventlog.ReplayVisit(log, bl, func(i int, st *eventlog.State, v *eventlog.View) bool {
		if v.IsRimon() {
			pendingMeasured++
			chk.record(i, v)
		}
		if matches(st) {
			m.Covered = i + 1
			m.Measured += pendingMeasured
			pendingMeasured = 0
			chk.commit()
			m.snapshot(st, q.Selection)
		}
		return true
	})
	m.Records = n
	if err != nil {
		m.TailProblem = err.Error()
		var re *eventlog.ReplayError
		if errors.As(err, &re) {
			m.Records = re.Index
		}
	}
	if m.Covered < 0 {
		why := "no prefix of the log replays to the quoted PCR values: the log was edited, reordered, truncated, or belongs to another machine or boot"
		if m.TailProblem != "" {
			why += " (" + m.TailProblem + ")"
		}
		return nil, &CheckError{Check: CheckLog, Err: errors.New(why)}
	}
	m.Failures, m.Warnings = chk.finish()
	m.FailureTotal, m.WarningTotal = chk.nFail, chk.nWarn
	return m, nil
}

// Finding is a measured path that reference values do not approve.
type Finding struct {
	Measured
	Allowed []string `json:"allowed,omitempty"`
	Problem string   `json:"problem"`
}

// String formats it for people.
func (f Finding) String() string {
	s := fmt.Sprintf("%s %s: %s", f.Kind, f.Path, f.Problem)
	if f.SHA256 != "" {
		s += " (seen " + f.SHA256
		if len(f.Allowed) > 0 {
			s += fmt.Sprintf(", allowed %v", f.Allowed)
		}
		s += ")"
	}
	if f.Index >= 0 {
		s += fmt.Sprintf(" [record %d]", f.Index)
	}
	return s
}

// refChecker checks records against reference values as they stream by.
// Findings and the state of required paths stay pending until a later
// record proves to be covered by the quote.
type refChecker struct {
	ref                *policy.Reference
	exact              map[string]*policy.RefEntry
	patterns           []*policy.RefEntry
	required           map[string]reqState
	journal            []journalEntry
	pending            []Finding
	pendingWarn        []Finding
	nPending, nPendW   int // pending findings, listed or not
	failures, warnings []Finding
	nFail, nWarn       int // all findings committed, listed or not
}

// add queues a finding for a record not yet known to be covered; make
// builds it only when the list has room.
func (c *refChecker) add(warn bool, make func() Finding) {
	list, n := &c.pending, &c.nPending
	if warn {
		list, n = &c.pendingWarn, &c.nPendW
	}
	*n++
	if len(*list) < MaxFindings {
		*list = append(*list, make())
	}
}

type reqState struct {
	seen, deleted bool
	m             Measured
}

type journalEntry struct {
	path string
	prev reqState
}

func newRefChecker(ref *policy.Reference) *refChecker {
	c := &refChecker{ref: ref}
	if ref == nil {
		return c
	}
	c.exact = map[string]*policy.RefEntry{}
	for i := range ref.Files {
		e := &ref.Files[i]
		if e.Pattern == nil {
			c.exact[e.Path] = e
		} else {
			c.patterns = append(c.patterns, e)
		}
	}
	c.required = map[string]reqState{}
	for _, p := range ref.Required {
		c.required[p] = reqState{}
	}
	return c
}

func (c *refChecker) lookupFile(path string) (*policy.RefEntry, bool) {
	if e, ok := c.exact[path]; ok {
		return e, true
	}
	for _, e := range c.patterns {
		if e.Pattern.Match(path) {
			return e, true
		}
	}
	return nil, false
}

func (c *refChecker) record(i int, v *eventlog.View) {
	if c.ref == nil {
		return
	}
	path := v.Str("path")
	deleted := v.Is("reason", eventlog.ReasonDeleted)
	if st, ok := c.required[path]; ok {
		c.journal = append(c.journal, journalEntry{path, st})
		c.required[path] = reqState{seen: true, deleted: deleted, m: c.measured(i, path, v)}
	}
	finding := func(problem string, allowed []string) func() Finding {
		return func() Finding { return Finding{Measured: c.measured(i, path, v), Allowed: allowed, Problem: problem} }
	}
	switch {
	case deleted:
		if !c.ref.AllowDeletions {
			c.add(false, finding("deleted, and the reference does not allow deletions", nil))
		}
	case v.Is("kind", eventlog.KindImage):
		e, ok := policy.Lookup(c.ref.Images, path)
		m := c.measured(i, path, v)
		switch {
		case !ok:
			c.add(!c.ref.FailUnlisted, finding("image not listed in the reference", nil))
		case !contains(e.Allowed, m.ManifestDigest) && !contains(e.Allowed, m.ConfigDigest) && !contains(e.Allowed, "sha256:"+m.SHA256):
			c.add(false, finding("image digest not allowed", e.Allowed))
		}
	case c.ref.Ignored(path):
		// The reference accepts any digest here (an imported Keylime exclude).
	default:
		e, ok := c.lookupFile(path)
		if !ok {
			c.add(!c.ref.FailUnlisted, finding("not listed in the reference", nil))
			return
		}
		for _, a := range e.Allowed {
			if v.Is("sha256", a) {
				return
			}
		}
		c.add(false, finding("digest not allowed", e.Allowed))
	}
}

func (c *refChecker) measured(i int, path string, v *eventlog.View) Measured {
	return Measured{Index: i, Kind: v.Str("kind"), Path: path, SHA256: v.Str("sha256"), Reason: v.Str("reason"),
		ManifestDigest: v.Str("manifest_digest"), ConfigDigest: v.Str("config_digest")}
}

// commit: every record so far is covered.
func (c *refChecker) commit() {
	c.nFail += c.nPending
	c.nWarn += c.nPendW
	c.failures = appendCapped(c.failures, c.pending)
	c.warnings = appendCapped(c.warnings, c.pendingWarn)
	c.pending, c.pendingWarn, c.journal = c.pending[:0], c.pendingWarn[:0], c.journal[:0]
	c.nPending, c.nPendW = 0, 0
}

func appendCapped(dst, src []Finding) []Finding {
	if room := MaxFindings - len(dst); room > 0 {
		dst = append(dst, src[:min(room, len(src))]...)
	}
	return dst
}

// finish undoes what uncovered records did and checks required paths.
func (c *refChecker) finish() (failures, warnings []Finding) {
	if c.ref == nil {
		return nil, nil
	}
	for i := len(c.journal) - 1; i >= 0; i-- {
		c.required[c.journal[i].path] = c.journal[i].prev
	}
	for _, p := range c.ref.Required {
		st := c.required[p]
		switch {
		case !st.seen:
			c.nFail++
			c.failures = appendCapped(c.failures, []Finding{{Measured: Measured{Index: -1, Path: p, Kind: "file"}, Problem: "required, but never measured"}})
		case st.deleted:
			c.nFail++
			c.failures = appendCapped(c.failures, []Finding{{Measured: st.m, Problem: "required, but deleted"}})
		}
	}
	return c.failures, c.warnings
}

func contains(list []string, s string) bool {
	if s == "" {
		return false
	}
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Options configures [Verify].
type Options struct {
	QuoteOptions
	// Reference, when set, is checked against every trusted measurement.
	Reference *policy.Reference
}

// CheckResult is one passed check, for the report.
type CheckResult struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

// Result is a verdict on evidence that passed every check.
type Result struct {
	// Trusted is true when no measurement breaks the reference values.
	Trusted  bool              `json:"trusted"`
	Checks   []CheckResult     `json:"checks"`
	PCRs     map[string]string `json:"pcrs"`
	Records  int               `json:"records"`
	Covered  int               `json:"covered"`
	Trailing int               `json:"trailing_untrusted"`
	// TailProblem says why reading the log's untrusted tail stopped, if it did.
	TailProblem string    `json:"tail_problem,omitempty"`
	Failures    []Finding `json:"failures"`
	Warnings    []Finding `json:"warnings"`
	// FailureTotal and WarningTotal count all findings; the lists hold at most MaxFindings each.
	FailureTotal int `json:"failure_total"`
	WarningTotal int `json:"warning_total"`
	Measured     int `json:"measured_records"`
}

// Verify checks a quote, its PCR values (nil to derive them from the log)
// and the log, then the reference values. It returns an error wrapping
// [ErrInvalid] when the evidence proves nothing; a Result otherwise, whose
// Trusted field says whether the content is approved.
func Verify(attest, sig []byte, values map[eventlog.PCRKey][]byte, log io.Reader, opts Options) (*Result, error) {
	q, err := VerifyQuote(attest, sig, values, opts.QuoteOptions)
	if err != nil {
		return nil, err
	}
	m, err := MatchLog(log, q, opts.Reference)
	if err != nil {
		return nil, err
	}
	res := &Result{Trusted: true, PCRs: map[string]string{}, Records: m.Records, Covered: m.Covered,
		Trailing: m.Records - m.Covered, TailProblem: m.TailProblem, Measured: m.Measured}
	fp, _ := Fingerprint(opts.AK)
	res.Checks = []CheckResult{
		{CheckSignature, fmt.Sprintf("signed by the pinned attestation key (SHA-256 fingerprint %s), %v", fp, q.Hash)},
		{CheckMagic, "TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE"},
		{CheckNonce, "extraData equals the nonce " + hex.EncodeToString(opts.Nonce)},
		{CheckSelection, describeSel(q.Selection)},
	}
	if values != nil {
		res.Checks = append(res.Checks, CheckResult{CheckDigest, "the reported PCR values hash to the quoted digest"})
	} else {
		res.Checks = append(res.Checks, CheckResult{CheckDigest, "no values reported: the log's replay hashes to the quoted digest"})
	}
	detail := fmt.Sprintf("the first %d of %d records replay to the quoted PCRs", m.Covered, m.Records)
	if m.Covered < m.Records {
		detail += fmt.Sprintf("; %d later records are not covered by this quote and are not trusted", m.Records-m.Covered)
	}
	res.Checks = append(res.Checks, CheckResult{CheckLog, detail})
	for _, k := range q.Selection {
		res.PCRs[fmt.Sprintf("%s:%d", eventlog.BankName(k.Bank), k.PCR)] = hex.EncodeToString(m.Values[k])
	}
	if opts.Reference != nil {
		res.Failures, res.Warnings = m.Failures, m.Warnings
		res.FailureTotal, res.WarningTotal = m.FailureTotal, m.WarningTotal
		res.Trusted = m.FailureTotal == 0
		res.Checks = append(res.Checks, CheckResult{"reference values", fmt.Sprintf("%d measurements checked against %s", m.Measured, opts.Reference.Source)})
	}
	return res, nil
}
