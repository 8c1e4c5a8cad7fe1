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
	// Records is the number of complete records in the log.
	Records int
	// Covered is the number of leading records whose replay equals the quote.
	Covered int
	// Measured are the covered rimon records.
	Measured []Measured
	// TailProblem explains why reading stopped early, if it did.
	TailProblem string
	// Values are the replayed values of the quoted PCRs after the covered records.
	Values map[eventlog.PCRKey][]byte
}

func (m *LogMatch) snapshot(st *eventlog.State, sel []eventlog.PCRKey) {
	m.Values = map[eventlog.PCRKey][]byte{}
	for _, k := range sel {
		m.Values[k] = append([]byte(nil), st.Value(k.PCR, k.Bank)...)
	}
}

// MatchLog finds the longest prefix of the log that replays to the quoted
// PCRs (or, with no reported values, to the quote's PCR digest). Records
// after it are counted and never trusted. Every covered record's digests
// are recomputed from its content.
func MatchLog(log []byte, q *Quoted) (*LogMatch, error) {
	banks := map[crypto.Hash]bool{}
	for _, k := range q.Selection {
		banks[k.Bank] = true
	}
	var bl []crypto.Hash
	for b := range banks {
		bl = append(bl, b)
	}
	sort.Slice(bl, func(i, j int) bool { return bl[i] < bl[j] })
	st := eventlog.NewState(bl)
	matches := func() bool {
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
	if matches() {
		m.Covered = 0
		m.snapshot(st, q.Selection)
	}
	var pending []Measured
	rd := eventlog.NewReader(bytes.NewReader(log), 0)
	var prev *eventlog.Record
	for i := 0; ; i++ {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			m.TailProblem = err.Error()
			break
		}
		if prev != nil && rec.HasRecNum && prev.HasRecNum && rec.RecNum != prev.RecNum+1 {
			m.TailProblem = fmt.Sprintf("record %d: recnum %d follows %d", i, rec.RecNum, prev.RecNum)
			break
		}
		if err := st.Apply(&rec); err != nil {
			m.TailProblem = fmt.Sprintf("record %d: %v", i, err)
			break
		}
		m.Records = i + 1
		r := rec
		prev = &r
		if rec.ContentType == eventlog.ContentTypeRimon {
			e := rec.Event()
			ms := Measured{Index: i, Kind: e.Kind, Path: e.Path, SHA256: e.SHA256, Reason: e.Reason,
				ManifestDigest: rec.Content.Str("manifest_digest"), ConfigDigest: rec.Content.Str("config_digest")}
			pending = append(pending, ms)
		}
		if matches() {
			m.Covered = i + 1
			m.Measured = append(m.Measured, pending...)
			pending = pending[:0]
			m.snapshot(st, q.Selection)
		}
	}
	if m.Covered < 0 {
		why := "no prefix of the log replays to the quoted PCR values: the log was edited, reordered, truncated, or belongs to another machine or boot"
		if m.TailProblem != "" {
			why += " (" + m.TailProblem + ")"
		}
		return nil, &CheckError{Check: CheckLog, Err: errors.New(why)}
	}
	return m, nil
}

// Finding is a measured path that reference values do not approve.
type Finding struct {
	Measured
	Allowed []string `json:"allowed,omitempty"`
	Problem string   `json:"problem"`
}

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

// CheckReference checks every trusted measurement against reference
// values. It returns failures (content not approved) and warnings.
func CheckReference(ms []Measured, ref *policy.Reference) (failures, warnings []Finding) {
	last := map[string]Measured{}
	for _, m := range ms {
		last[m.Path] = m
		if m.Reason == eventlog.ReasonDeleted {
			if !ref.AllowDeletions {
				failures = append(failures, Finding{Measured: m, Problem: "deleted, and the reference does not allow deletions"})
			}
			continue
		}
		if m.Kind == eventlog.KindImage {
			e, ok := policy.Lookup(ref.Images, m.Path)
			if !ok {
				f := Finding{Measured: m, Problem: "image not listed in the reference"}
				addUnlisted(&failures, &warnings, f, ref)
				continue
			}
			if !contains(e.Allowed, m.ManifestDigest) && !contains(e.Allowed, m.ConfigDigest) && !contains(e.Allowed, "sha256:"+m.SHA256) {
				failures = append(failures, Finding{Measured: m, Allowed: e.Allowed, Problem: "image digest not allowed"})
			}
			continue
		}
		e, ok := policy.Lookup(ref.Files, m.Path)
		if !ok {
			addUnlisted(&failures, &warnings, Finding{Measured: m, Problem: "not listed in the reference"}, ref)
			continue
		}
		if !contains(e.Allowed, m.SHA256) {
			failures = append(failures, Finding{Measured: m, Allowed: e.Allowed, Problem: "digest not allowed"})
		}
	}
	for _, p := range ref.Required {
		m, ok := last[p]
		switch {
		case !ok:
			failures = append(failures, Finding{Measured: Measured{Index: -1, Path: p, Kind: "file"}, Problem: "required, but never measured"})
		case m.Reason == eventlog.ReasonDeleted:
			failures = append(failures, Finding{Measured: m, Problem: "required, but deleted"})
		}
	}
	return failures, warnings
}

func addUnlisted(failures, warnings *[]Finding, f Finding, ref *policy.Reference) {
	if ref.FailUnlisted {
		*failures = append(*failures, f)
	} else {
		*warnings = append(*warnings, f)
	}
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
	Measured    int       `json:"measured_records"`
}

// Verify checks a quote, its PCR values (nil to derive them from the log)
// and the log, then the reference values. It returns an error wrapping
// [ErrInvalid] when the evidence proves nothing; a Result otherwise, whose
// Trusted field says whether the content is approved.
func Verify(attest, sig []byte, values map[eventlog.PCRKey][]byte, log []byte, opts Options) (*Result, error) {
	q, err := VerifyQuote(attest, sig, values, opts.QuoteOptions)
	if err != nil {
		return nil, err
	}
	m, err := MatchLog(log, q)
	if err != nil {
		return nil, err
	}
	res := &Result{Trusted: true, PCRs: map[string]string{}, Records: m.Records, Covered: m.Covered,
		Trailing: m.Records - m.Covered, TailProblem: m.TailProblem, Measured: len(m.Measured)}
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
		res.Failures, res.Warnings = CheckReference(m.Measured, opts.Reference)
		res.Trusted = len(res.Failures) == 0
		res.Checks = append(res.Checks, CheckResult{"reference values", fmt.Sprintf("%d measurements checked against %s", len(m.Measured), opts.Reference.Source)})
	}
	return res, nil
}
