package attest

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

// Measured is one trusted record, reduced to what reference checks need.
type Measured struct {
	Index int    `json:"record"`
	Kind  string `json:"kind"`
	Path  string `json:"path"`
	// PathEscaped is an unmeasured record's path when its name is not
	// UTF-8: the raw bytes, percent-escaped (docs/FORMAT.md).
	PathEscaped    string `json:"path_escaped,omitempty"`
	SHA256         string `json:"sha256,omitempty"`
	Reason         string `json:"reason"`
	ManifestDigest string `json:"manifest_digest,omitempty"`
	ConfigDigest   string `json:"config_digest,omitempty"`
	// Cause and ErrorText are an unmeasured record's (or an unrecorded
	// path's) cause and error text.
	Cause     string `json:"cause,omitempty"`
	ErrorText string `json:"error,omitempty"`
}

// Kinds of findings that are not measurements.
const (
	// KindUnmeasured is a record saying a path could not be measured.
	KindUnmeasured = "unmeasured"
	// KindTrailing is a finding about records after the prefix the quote
	// covers: more than [Options.AllowTrailing] of them.
	KindTrailing = "trailing"
	// KindUnrecorded is a path the evidence header says changed but is
	// not recorded yet.
	KindUnrecorded = "unrecorded"
)

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
	// TailInvalid is set when reading stopped at a complete record that
	// does not verify (edited, or out of sequence), not at a torn end.
	TailInvalid bool
	// TrailingProblem explains why the first record after the covered
	// prefix is not covered: which quoted PCR and bank it moved away from
	// the quote.
	TrailingProblem string
	// Values are the replayed values of the quoted PCRs after the covered records.
	Values map[eventlog.PCRKey][]byte
	// Failures and Warnings are the reference findings on covered records
	// (the first MaxFindings of each); the totals count them all.
	Failures, Warnings         []Finding
	FailureTotal, WarningTotal int
	// Next is the state after the covered records, to continue from with
	// [MatchLogFrom] next time.
	Next *Prior
	// TrailingFailures are what the reference checks (and unmeasured
	// records) find in the records after the covered prefix, which the
	// quote does not vouch for (the first MaxFindings; the total counts
	// them all).
	TrailingFailures     []Finding
	TrailingFailureTotal int
	// Observations are the distinct measurements of the records covered
	// in this call (with From.Observe; at most [MaxObservations], the
	// rest counted in ObservationsOver).
	Observations     []Observation
	ObservationsOver int
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
// record's digests are recomputed from its content. A rimon record that
// extends no quoted PCR in a quoted bank is not vouched for by the quote:
// it is never approved, and it is a failure.
//
// Unmeasured records are checked with or without ref: a path whose latest
// covered record says it could not be measured is a failure (a warning
// when ref says "unmeasured: warn").
func MatchLog(log io.Reader, q *Quoted, ref *policy.Reference) (*LogMatch, error) {
	return MatchLogFrom(log, q, ref, From{})
}

// From says where [MatchLogFrom] starts and whether it keeps the state.
type From struct {
	// Prior: the log holds only the records after the prefix accepted
	// before, and the replay and reference checks continue from it.
	Prior *Prior
	// Extends: the log is the whole log, and must begin with the records
	// this checkpoint was saved after.
	Extends *eventlog.Checkpoint
	// Keep asks for [LogMatch.Next], the state to save. It costs one
	// SHA-256 pass over the log's bytes (the prefix digest); with Prior or
	// Extends it is always kept.
	Keep bool
	// Observe asks for [LogMatch.Observations] (see [Observation]).
	Observe bool
	// Fingerprint, when set, is [ReferenceFingerprint] of the reference,
	// computed once by a caller that checks many logs against it.
	Fingerprint string
}

// MatchLogFrom is [MatchLog] for a verifier that accepted a prefix of the
// log before. With prior, log holds only the records after the prefix
// (from record prior.Log.Records on): the replay and the reference checks
// continue from prior, and the result is the one MatchLog reaches on the
// whole log. With extends, log is the whole log, and its first
// extends.Records records must be, byte for byte, the prefix extends was
// saved after. Either way a log that does not extend the prefix fails
// [CheckContinuity]; a prior that cannot be continued with these banks and
// this reference is [ErrPriorUnusable].
func MatchLogFrom(log io.Reader, q *Quoted, ref *policy.Reference, from From) (*LogMatch, error) {
	prior, extends := from.Prior, from.Extends
	banks := map[crypto.Hash]bool{}
	for _, k := range q.Selection {
		banks[k.Bank] = true
	}
	var bl []crypto.Hash
	for b := range banks {
		bl = append(bl, b)
	}
	sort.Slice(bl, func(i, j int) bool { return bl[i] < bl[j] })
	fingerprint := from.fingerprint(ref)
	start := eventlog.NewCheckpoint(bl)
	for _, cp := range []*eventlog.Checkpoint{prior.log(), extends} {
		if cp == nil {
			continue
		}
		if !slices.Equal(cp.Banks(), bl) {
			return nil, fmt.Errorf("%w: it replays banks %s, the quote covers %s", ErrPriorUnusable, bankList(cp.Banks()), bankList(bl))
		}
	}
	if prior != nil {
		if prior.Ref.Reference != fingerprint {
			return nil, fmt.Errorf("%w: it was checked against another reference (or none): the whole log must be verified again", ErrPriorUnusable)
		}
		start = prior.Log
	}
	replayer := start.Resume()
	if !from.Keep && prior == nil && extends == nil {
		replayer = eventlog.NewReplayer(bl)
	}
	// last holds the quoted PCRs' values after the records so far, in
	// selection order, to see which of them each record extends and
	// whether they equal the quote.
	last := make([][]byte, len(q.Selection))
	want := make([][]byte, len(q.Selection))
	for j, k := range q.Selection {
		last[j] = start.Value(k.PCR, k.Bank)
		want[j] = q.Values[k]
	}
	matches := func() bool {
		if q.Values != nil {
			for j := range last {
				if !bytes.Equal(last[j], want[j]) {
					return false
				}
			}
			return true
		}
		d := q.Hash.New()
		for _, v := range last {
			d.Write(v)
		}
		return bytes.Equal(d.Sum(nil), q.PCRDigest)
	}
	var moved []eventlog.PCRKey
	m := &LogMatch{Covered: -1}
	chk := newRefCheckerFor(ref, from.Fingerprint)
	obs := newObserver(from.Observe)
	if prior != nil {
		chk.seed(&prior.Ref)
		m.Measured = prior.Ref.Measured
	}
	var final *eventlog.State
	var next *eventlog.Checkpoint
	if matches() {
		m.Covered = int(start.Records)
		m.Values = map[eventlog.PCRKey][]byte{}
		for _, k := range q.Selection {
			m.Values[k] = start.Value(k.PCR, k.Bank)
		}
		next = start
	}
	pendingMeasured := 0
	var broken string     // why the log does not extend the checkpoint extends was saved after
	var brokenCause error // the read error behind broken, when the log did not read
	if extends != nil && extends.Records == 0 && extends.Prefix != start.Prefix {
		broken = "the saved state is not a replay of zero records"
	}
	n, err := replayer.Visit(log, func(i int, st *eventlog.State, v *eventlog.View) bool {
		final = st
		if extends != nil && uint64(i+1) == extends.Records {
			if cp := replayer.Checkpoint(); !cp.Equal(extends) {
				broken = fmt.Sprintf("its first %d records are not the ones accepted before (prefix digest %x, accepted %x)", extends.Records, cp.Prefix, extends.Prefix)
				return false
			}
		}
		moved = moved[:0]
		for j, k := range q.Selection {
			if cur := st.Value(k.PCR, k.Bank); !bytes.Equal(cur, last[j]) {
				moved = append(moved, k)
				last[j] = append(last[j][:0], cur...)
			}
		}
		if v.IsRimon() {
			obs.record(i, v, len(moved) > 0)
			if len(moved) > 0 {
				pendingMeasured++
				chk.record(i, v)
			} else {
				chk.unbound(i, v)
			}
		}
		if matches() {
			m.Covered = i + 1
			m.Measured += pendingMeasured
			pendingMeasured = 0
			chk.commit()
			obs.commit()
			m.snapshot(st, q.Selection)
			next = replayer.Checkpoint()
			m.TrailingProblem = ""
		} else if i == m.Covered {
			m.TrailingProblem = q.divergence(i, v, st, moved)
		}
		return true
	})
	m.Records = n
	if extends != nil && broken == "" && uint64(n) < extends.Records {
		broken = fmt.Sprintf("it holds %d records, fewer than the %d accepted before", n, extends.Records)
		if err != nil {
			broken = fmt.Sprintf("only %d records of the %d accepted before read back (%v)", n, extends.Records, err)
			brokenCause = err
		}
	}
	if broken != "" {
		return nil, &CheckError{Check: CheckContinuity, Err: &causeError{"the log does not extend the prefix accepted before: " + broken, brokenCause}}
	}
	if extends != nil && m.Covered >= 0 && uint64(m.Covered) < extends.Records {
		return nil, &CheckError{Check: CheckContinuity, Err: fmt.Errorf("the quote covers %d records, fewer than the %d accepted before", m.Covered, extends.Records)}
	}
	if err != nil {
		m.TailProblem = err.Error()
		var re *eventlog.ReplayError
		if errors.As(err, &re) {
			m.TailInvalid = true
			m.Records = re.Index
			if re.Index == m.Covered && m.TrailingProblem == "" {
				m.TrailingProblem = err.Error()
			}
		}
	}
	if m.Covered < 0 && prior != nil {
		why := fmt.Sprintf("no record after the %d accepted before brings the replay to the quoted PCR values: the log does not extend the prefix accepted before "+
			"(records edited, removed or reordered, or a PCR reset and a different history replayed)", start.Records)
		if m.TailProblem != "" {
			why += " (" + m.TailProblem + ")"
		}
		return nil, &CheckError{Check: CheckContinuity, Err: &causeError{why, err}}
	}
	if m.Covered < 0 {
		why := "no prefix of the log replays to the quoted PCR values: the log was edited, reordered, truncated, or belongs to another machine or boot"
		if final == nil {
			final = eventlog.NewState(bl)
		}
		if d := q.disagreement(final); d != "" && err == nil {
			why += " (" + d + ")"
		}
		if m.TailProblem != "" {
			why += " (" + m.TailProblem + ")"
		}
		return nil, &CheckError{Check: CheckLog, Err: errors.New(why)}
	}
	m.TrailingFailures = append([]Finding(nil), chk.pending...)
	m.TrailingFailureTotal = chk.nPending
	if ref == nil || !ref.WarnUnmeasured {
		var unm []Finding
		for _, st := range chk.unmPending {
			if st.set {
				unm = append(unm, st.f)
			}
		}
		sort.Slice(unm, func(i, j int) bool { return unm[i].Index < unm[j].Index })
		m.TrailingFailureTotal += len(unm) + chk.unmPOver
		m.TrailingFailures = appendCapped(m.TrailingFailures, unm)
	}
	sort.SliceStable(m.TrailingFailures, func(i, j int) bool { return m.TrailingFailures[i].Index < m.TrailingFailures[j].Index })
	chk.rollback()
	if next != nil && (from.Keep || prior != nil || extends != nil) {
		m.Next = &Prior{Log: next, Ref: chk.state(fingerprint, m.Measured)}
	}
	m.Failures, m.Warnings = chk.finish()
	m.FailureTotal, m.WarningTotal = chk.nFail, chk.nWarn
	m.Observations, m.ObservationsOver = obs.result()
	return m, nil
}

func (p *Prior) log() *eventlog.Checkpoint {
	if p == nil {
		return nil
	}
	return p.Log
}

func bankList(bs []crypto.Hash) string {
	var names []string
	for _, b := range bs {
		names = append(names, eventlog.BankName(b))
	}
	return strings.Join(names, ", ")
}

// divergence says why record i, the first after the covered prefix, is not
// covered: which quoted PCRs it moved away from the quote.
func (q *Quoted) divergence(i int, v *eventlog.View, st *eventlog.State, moved []eventlog.PCRKey) string {
	what := fmt.Sprintf("record %d", i)
	if v.IsRimon() {
		if p := v.Str("path"); p != "" {
			what += fmt.Sprintf(" (%s %s)", v.Str("kind"), p)
		}
	}
	if len(moved) == 0 {
		return what + " is the first record the quote does not cover"
	}
	byPCR := map[int][]string{}
	var pcrs []int
	shown := moved[0]
	for _, k := range moved {
		if byPCR[k.PCR] == nil {
			pcrs = append(pcrs, k.PCR)
		}
		byPCR[k.PCR] = append(byPCR[k.PCR], eventlog.BankName(k.Bank))
		if k.Bank == crypto.SHA256 || shown.Bank == crypto.SHA1 {
			shown = k
		}
	}
	var ext []string
	for _, p := range pcrs {
		ext = append(ext, fmt.Sprintf("PCR %d in %s", p, strings.Join(byPCR[p], ", ")))
	}
	key := eventlog.BankName(shown.Bank) + ":" + strconv.Itoa(shown.PCR)
	after := key + " then moves away from the quoted PCR digest"
	if want, ok := q.Values[shown]; ok {
		after = fmt.Sprintf("%s then replays to %x, the quote says %x", key, st.Value(shown.PCR, shown.Bank), want)
	}
	return what + " is the first record the quote does not cover: it extends " + strings.Join(ext, "; ") + ", and " + after +
		" (written after the quote was taken, or never extended into the TPM)"
}

// disagreement names the quoted PCRs whose value the whole log's replay
// does not reach ("" when no values were reported).
func (q *Quoted) disagreement(st *eventlog.State) string {
	if q.Values == nil {
		return ""
	}
	var bad, good []string
	for _, k := range q.Selection {
		key := eventlog.BankName(k.Bank) + ":" + strconv.Itoa(k.PCR)
		if got := st.Value(k.PCR, k.Bank); bytes.Equal(got, q.Values[k]) {
			good = append(good, key)
		} else {
			bad = append(bad, fmt.Sprintf("%s: the log replays to %x, the quote says %x", key, got, q.Values[k]))
		}
	}
	s := strings.Join(bad, "; ")
	if len(good) > 0 {
		s += "; " + strings.Join(good, ", ") + " agree, but every quoted bank must"
	}
	return s
}

// Finding is a measured path that reference values do not approve, a path
// that could not be measured or recorded, or a record the quote does not
// vouch for.
type Finding struct {
	Measured
	Allowed []string `json:"allowed,omitempty"`
	Problem string   `json:"problem"`
}

// String formats it for people.
func (f Finding) String() string {
	path := f.Path
	if path == "" && f.PathEscaped != "" {
		path = "path_escaped " + f.PathEscaped
	}
	var s string
	switch f.Kind {
	case KindUnmeasured, KindUnrecorded, KindTrailing:
		s = f.Problem
		if path != "" {
			s += ": " + path
		}
		if f.ErrorText != "" {
			s += " (" + f.ErrorText + ")"
		}
	default:
		s = fmt.Sprintf("%s %s: %s", f.Kind, path, f.Problem)
	}
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
// Findings, the state of required paths and of unmeasured paths stay
// pending until a later record proves to be covered by the quote.
type refChecker struct {
	ref                *policy.Reference
	exact              map[string]*policy.RefEntry
	patterns           []*policy.RefEntry
	required           map[string]reqState
	journal            []journalEntry
	unmeasured         map[string]Finding  // raw path -> its latest covered record, when that says "unmeasured"
	unmPending         map[string]unmState // the same for records not yet known to be covered
	unmOver, unmPOver  int                 // unmeasured paths past maxUnmeasuredPaths: covered, pending
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

// unmState is a path's latest pending record: unmeasured (set) or a
// measurement that supersedes an unmeasured record.
type unmState struct {
	f   Finding
	set bool
}

// maxUnmeasuredPaths bounds the unmeasured paths tracked one by one, so
// that hostile evidence cannot make the verifier hold one entry per record;
// paths past it fail (or warn) together and cannot be superseded.
var maxUnmeasuredPaths = 1 << 16

func newRefChecker(ref *policy.Reference) *refChecker {
	c := &refChecker{ref: ref, unmeasured: map[string]Finding{}, unmPending: map[string]unmState{}}
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

// unbound notes a rimon record that extends no quoted PCR in a quoted bank.
// unbound handles a rimon record that extends no quoted PCR in a quoted
// bank: the quote says nothing of it, so what it records is unknown to the
// verifier. It is never approved, and it fails the verdict: a quote of
// other PCRs than the log's must not vouch for a log it does not cover.
func (c *refChecker) unbound(i int, v fields) {
	c.add(false, func() Finding {
		return Finding{Measured: c.measured(i, v.Str("path"), v),
			Problem: "extends no PCR the quote covers: not vouched for"}
	})
}

// setUnmeasured records path's latest state (f nil: a measurement).
func (c *refChecker) setUnmeasured(path string, f *Finding) {
	_, committed := c.unmeasured[path]
	p, pending := c.unmPending[path]
	switch {
	case f == nil && committed:
		c.unmPending[path] = unmState{}
	case f == nil:
		if pending && p.set {
			delete(c.unmPending, path)
		}
	case !committed && !pending && len(c.unmeasured)+len(c.unmPending) >= maxUnmeasuredPaths:
		c.unmPOver++
	default:
		c.unmPending[path] = unmState{f: *f, set: true}
	}
}

func (c *refChecker) record(i int, v fields) {
	if v.Is("kind", eventlog.KindContainer) {
		c.container(i, v) // attest/container.go
		return
	}
	path := v.Str("path")
	if v.Is("kind", KindUnmeasured) {
		c.unmeasuredRecord(i, path, v)
		return
	}
	// A measurement (or deletion) of the path supersedes an unmeasured record.
	c.setUnmeasured(path, nil)
	if c.ref == nil {
		return
	}
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

// unmeasuredRecord handles a record saying a path could not be measured:
// the path is not approved until a later record measures it. A malformed
// one fails on its own.
func (c *refChecker) unmeasuredRecord(i int, path string, v fields) {
	m := c.measured(i, path, v)
	m.PathEscaped, m.Cause, m.ErrorText = v.Str("path_escaped"), v.Str("cause"), v.Str("error")
	key, err := unmeasuredPath(m.Path, m.PathEscaped)
	if err == nil && !validCause(m.Cause) {
		err = fmt.Errorf("cause %q is not one of %s", m.Cause, strings.Join(unmeasuredCauses, ", "))
	}
	if err != nil {
		c.add(false, func() Finding { return Finding{Measured: m, Problem: "malformed unmeasured record: " + err.Error()} })
		return
	}
	if c.ref != nil {
		if st, ok := c.required[key]; ok {
			c.journal = append(c.journal, journalEntry{key, st})
			c.required[key] = reqState{seen: true, m: m}
		}
	}
	c.setUnmeasured(key, &Finding{Measured: m, Problem: "not measured (" + m.Cause + ")"})
}

// unmeasuredCauses are the causes an unmeasured record may give (docs/FORMAT.md).
var unmeasuredCauses = []string{"unstable", "unreadable", "name_not_utf8", "too_large", "timeout", "unsupported_type", "symlink_refused", "error"}

func validCause(s string) bool { return slices.Contains(unmeasuredCauses, s) }

// unmeasuredPath returns the raw path an unmeasured record names: its path,
// or its path_escaped decoded. Exactly one must be set, and path_escaped
// must be the canonical escape of a name that is not UTF-8.
func unmeasuredPath(path, escaped string) (string, error) {
	switch {
	case path != "" && escaped != "":
		return "", errors.New("both path and path_escaped are set")
	case path != "":
		return path, nil
	case escaped == "":
		return "", errors.New("neither path nor path_escaped is set")
	}
	raw := make([]byte, 0, len(escaped))
	for i := 0; i < len(escaped); i++ {
		if escaped[i] != '%' {
			raw = append(raw, escaped[i])
			continue
		}
		if i+2 >= len(escaped) || !isUpperHex(escaped[i+1]) || !isUpperHex(escaped[i+2]) {
			return "", fmt.Errorf("path_escaped %q: %% at byte %d is not followed by two upper-case hex digits", escaped, i)
		}
		raw = append(raw, unhex(escaped[i+1])<<4|unhex(escaped[i+2]))
		i += 2
	}
	if utf8.Valid(raw) {
		return "", fmt.Errorf("path_escaped %q names a UTF-8 path, which belongs in path", escaped)
	}
	if escapePath(string(raw)) != escaped {
		return "", fmt.Errorf("path_escaped %q is not the canonical escape of its bytes (%q)", escaped, escapePath(string(raw)))
	}
	return string(raw), nil
}

// escapePath writes a path's bytes as an unmeasured record's path_escaped
// field does: every byte that is %, or is not part of a valid UTF-8
// sequence, as %XX (upper-case hex); every other byte as it is.
func escapePath(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); {
		r, size := utf8.DecodeRuneInString(raw[i:])
		switch {
		case r == utf8.RuneError && size <= 1, raw[i] == '%':
			fmt.Fprintf(&b, "%%%02X", raw[i])
			i++
		default:
			b.WriteString(raw[i : i+size])
			i += size
		}
	}
	return b.String()
}

func isUpperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

func (c *refChecker) measured(i int, path string, v fields) Measured {
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
	for path, st := range c.unmPending {
		if st.set {
			c.unmeasured[path] = st.f
		} else {
			delete(c.unmeasured, path)
		}
	}
	clear(c.unmPending)
	c.unmOver += c.unmPOver
	c.unmPOver = 0
}

func appendCapped(dst, src []Finding) []Finding {
	if room := MaxFindings - len(dst); room > 0 {
		dst = append(dst, src[:min(room, len(src))]...)
	}
	return dst
}

// rollback forgets what uncovered records did to the required paths.
func (c *refChecker) rollback() {
	for i := len(c.journal) - 1; i >= 0; i-- {
		c.required[c.journal[i].path] = c.journal[i].prev
	}
	c.journal = c.journal[:0]
}

// finish reports the paths whose
// latest covered record is unmeasured and the required paths.
func (c *refChecker) finish() (failures, warnings []Finding) {
	unm := make([]Finding, 0, len(c.unmeasured))
	for _, f := range c.unmeasured {
		unm = append(unm, f)
	}
	sort.Slice(unm, func(i, j int) bool { return unm[i].Index < unm[j].Index })
	if c.unmOver > 0 {
		unm = append(unm, Finding{Measured: Measured{Index: -1, Kind: KindUnmeasured},
			Problem: fmt.Sprintf("not measured: %d more records name paths that could not be measured (past %d paths, they are not followed one by one)", c.unmOver, maxUnmeasuredPaths)})
	}
	if c.ref != nil && c.ref.WarnUnmeasured {
		c.nWarn += len(unm)
		c.warnings = appendCapped(c.warnings, unm)
	} else {
		c.nFail += len(unm)
		c.failures = appendCapped(c.failures, unm)
	}
	if c.ref == nil {
		return c.failures, c.warnings
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

// nonceDetail says what the quote's extraData was checked against.
func nonceDetail(o Options) string {
	if len(o.Unrecorded) == 0 {
		return "extraData equals the nonce " + hex.EncodeToString(o.Nonce)
	}
	return fmt.Sprintf("extraData binds the nonce and the %d unrecorded changes the evidence lists (%s)", len(o.Unrecorded), hex.EncodeToString(o.Nonce))
}

// causeError is a check's failure with the read error behind it, if any
// (nil when the log read well and diverged): a log that does not read
// proves nothing of a rewrite, and callers tell the two apart with
// errors.As on [*eventlog.RecordError], [*eventlog.ReplayError] or
// errors.Is [eventlog.ErrTorn].
type causeError struct {
	msg   string
	cause error
}

func (e *causeError) Error() string { return e.msg }
func (e *causeError) Unwrap() error { return e.cause }

// contains reports whether s, which is not empty, is in list.
func contains(list []string, s string) bool { return s != "" && slices.Contains(list, s) }

// Options configures [Verify].
type Options struct {
	QuoteOptions
	// Reference, when set, is checked against every trusted measurement.
	Reference *policy.Reference
	// Unrecorded is the evidence header's list of changes the agent has
	// not recorded yet. The quote does not vouch for it, but each entry is
	// a failure: a machine that says it could not record a change is not
	// trusted.
	Unrecorded []Unrecorded
	// AllowTrailing is how many records after the prefix the quote covers
	// the verdict tolerates before it is not trusted; zero means one (a
	// crash between a record's write and its extend leaves one record that
	// was never extended). More are the mark of a PCR that was reset or
	// extended outside rimon, or of records added after the quote: the
	// quote then vouches for less than the log claims, and a reset alone
	// must not turn an untrusted machine into a trusted one. Evidence from
	// a rimon agent is taken under the log's lock and has none; a quote
	// taken apart from the log (tpm2_quote, then the log) may need more.
	AllowTrailing int
	// From is as in [MatchLogFrom]: with From.Prior the log holds only the
	// records after the prefix accepted before; with From.Extends it is the
	// whole log, which must begin with that prefix; From.Keep asks for
	// [Result.Next].
	From From
}

// CheckResult is one passed check, for the report.
type CheckResult struct {
	Name   string `json:"name"`
	Detail string `json:"detail"`
}

// Result is a verdict on evidence that passed every check.
type Result struct {
	// Trusted is true when nothing fails: no measurement breaks the
	// reference values, no path's latest record says it was not measured
	// (unless the reference says "unmeasured: warn"), the evidence lists
	// no unrecorded change, and no more records trail the quote than
	// [Options.AllowTrailing].
	Trusted  bool              `json:"trusted"`
	Checks   []CheckResult     `json:"checks"`
	PCRs     map[string]string `json:"pcrs"`
	Records  int               `json:"records"`
	Covered  int               `json:"covered"`
	Trailing int               `json:"trailing_untrusted"`
	// TailProblem says why reading the log's untrusted tail stopped, if it did.
	TailProblem string `json:"tail_problem,omitempty"`
	// TrailingProblem says why the first trailing record (number Covered)
	// is not covered: which quoted PCR and bank it moves away from the quote.
	TrailingProblem string `json:"trailing_problem,omitempty"`
	// Unrecorded repeats the evidence header's unrecorded changes; each is
	// also a failure.
	Unrecorded []Unrecorded `json:"unrecorded,omitempty"`
	Failures   []Finding    `json:"failures"`
	Warnings   []Finding    `json:"warnings"`
	// FailureTotal and WarningTotal count all findings; the lists hold at most MaxFindings each.
	FailureTotal int `json:"failure_total"`
	WarningTotal int `json:"warning_total"`
	Measured     int `json:"measured_records"`
	// Next is the state after the covered records, for the next round.
	Next *Prior `json:"-"`
	// Observations and ObservationsOver are [LogMatch]'s (with
	// From.Observe).
	Observations     []Observation `json:"-"`
	ObservationsOver int           `json:"-"`
}

// Verify checks a quote, its PCR values (nil to derive them from the log)
// and the log, then the reference values, unmeasured records and
// unrecorded changes. It returns an error wrapping
// [ErrInvalid] when the evidence proves nothing; a Result otherwise, whose
// Trusted field says whether the content is approved.
func Verify(attest, sig []byte, values map[eventlog.PCRKey][]byte, log io.Reader, opts Options) (*Result, error) {
	q, err := VerifyQuote(attest, sig, values, opts.QuoteOptions)
	if err != nil {
		return nil, err
	}
	m, err := MatchLogFrom(log, q, opts.Reference, opts.From)
	if err != nil {
		return nil, err
	}
	res := &Result{Trusted: true, PCRs: map[string]string{}, Records: m.Records, Covered: m.Covered,
		Trailing: m.Records - m.Covered, TailProblem: m.TailProblem, TrailingProblem: m.TrailingProblem, Measured: m.Measured, Next: m.Next,
		Observations: m.Observations, ObservationsOver: m.ObservationsOver}
	fp, _ := Fingerprint(opts.AK)
	res.Checks = []CheckResult{
		{CheckSignature, fmt.Sprintf("signed by the attestation key (SHA-256 fingerprint %s), %v", fp, q.Hash)},
		{CheckMagic, "TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE"},
		{CheckNonce, nonceDetail(opts)},
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
	res.Failures, res.Warnings = m.Failures, m.Warnings
	res.FailureTotal, res.WarningTotal = m.FailureTotal, m.WarningTotal
	if opts.Reference != nil {
		detail := fmt.Sprintf("%d measurements checked against %s", m.Measured, opts.Reference.Source)
		if m.FailureTotal > 0 {
			// The check ran; what it found is the verdict's, not a pass.
			detail += fmt.Sprintf(": %d finding(s) not approved (see the findings)", m.FailureTotal)
		}
		res.Checks = append(res.Checks, CheckResult{"reference values", detail})
	}
	// The agent's own word that changes are unrecorded: reported first.
	var unrec []Finding
	for _, u := range opts.Unrecorded {
		unrec = append(unrec, Finding{Measured: Measured{Index: -1, Kind: KindUnrecorded, Path: u.Path, Cause: u.Cause},
			Problem: fmt.Sprintf("unrecorded change (%s) since %s", u.Cause, u.Since)})
	}
	if len(unrec) > 0 {
		res.Unrecorded = opts.Unrecorded
		res.FailureTotal += len(unrec)
		res.Failures = appendCapped(unrec[:min(len(unrec), MaxFindings):min(len(unrec), MaxFindings)], res.Failures)
	}
	allow := opts.AllowTrailing
	if allow <= 0 {
		allow = 1
	}
	if res.Trailing > allow {
		f := Finding{Measured: Measured{Index: m.Covered, Kind: KindTrailing},
			Problem: fmt.Sprintf("%d records from record %d on are not covered by the quote (at most %d tolerated, --allow-trailing): "+
				"the PCR was reset or extended outside rimon, or records were added after the quote; the quote vouches for %d of the log's %d records",
				res.Trailing, m.Covered, allow, m.Covered, m.Records)}
		res.FailureTotal++
		res.Failures = appendCapped([]Finding{f}, res.Failures)
	}
	if m.TailInvalid {
		// Records after a broken one cannot be counted or checked: what
		// the log holds after the quote is unknown, so it is not trusted.
		f := Finding{Measured: Measured{Index: m.Records, Kind: KindTrailing},
			Problem: "the log after the quote holds a record that does not verify, and nothing after it can be read: " + m.TailProblem}
		res.FailureTotal++
		res.Failures = appendCapped(res.Failures, []Finding{f})
	}
	if n := m.TrailingFailureTotal; n > 0 {
		first := "records naming paths that could not be measured, past the bound on such paths"
		if len(m.TrailingFailures) > 0 {
			first = m.TrailingFailures[0].String()
		}
		// Not vouched for, so never approved; but an honest agent leaves a
		// record after its quote only when a change was recorded and not
		// yet extended (a crash): what it says must not be ignored.
		f := Finding{Measured: Measured{Index: -1, Kind: KindTrailing},
			Problem: fmt.Sprintf("%d finding(s) in the records after the quote, which it does not vouch for; the first: %s", n, first)}
		res.FailureTotal++
		res.Failures = appendCapped(res.Failures, []Finding{f})
	}
	res.Trusted = res.FailureTotal == 0
	return res, nil
}
