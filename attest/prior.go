package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

// CheckContinuity: the log does not extend the prefix the verifier
// accepted earlier (records edited, removed, reordered, or a different
// history replayed into a reset PCR).
const CheckContinuity = "continuity"

// ErrPriorUnusable: a saved state cannot be continued with these options
// (other banks, or another reference). It is the caller's to handle, by
// verifying the whole log.
var ErrPriorUnusable = errors.New("the saved replay state cannot be continued")

// Prior is what a verifier keeps of an accepted prefix, so that it checks
// only the records that follow and reaches the verdict a replay of the
// whole log reaches: the replay ([eventlog.Checkpoint]) and the reference
// checks' state after the prefix.
//
// The reference checks carry, for the prefix, the findings themselves
// (at most [MaxFindings] listed of each kind, and the totals), each path
// whose latest record says it was not measured (at most 65,536 paths, the
// bound a full replay has; those past it are counted), and the latest
// record of each required path. Findings depend on the reference, so a
// Prior holds the fingerprint of the reference it was checked with
// ([ReferenceFingerprint]) and is refused ([ErrPriorUnusable]) with any
// other: a new reference means verifying the whole log again. Its size is
// bounded by these limits and the reference's required paths, never by
// the log's length.
type Prior struct {
	Log *eventlog.Checkpoint `json:"-"`
	Ref RefState             `json:"-"`
}

// RefState is the reference checks' state after a prefix.
type RefState struct {
	// Reference is the fingerprint of the reference checked ("" for none).
	Reference string `json:"reference"`
	// Measured counts the prefix's covered rimon records.
	Measured     int       `json:"measured_records"`
	Failures     []Finding `json:"failures"`
	Warnings     []Finding `json:"warnings"`
	FailureTotal int       `json:"failure_total"`
	WarningTotal int       `json:"warning_total"`
	// Unmeasured holds each path whose latest record is unmeasured.
	Unmeasured []Finding `json:"unmeasured"`
	// UnmeasuredOver counts unmeasured records past the bound.
	UnmeasuredOver int `json:"unmeasured_over"`
	// Required holds the latest record of each required path seen.
	Required []RequiredState `json:"required"`
}

// RequiredState is a required path's latest record.
type RequiredState struct {
	Path    string   `json:"path"`
	Deleted bool     `json:"deleted"`
	Record  Measured `json:"latest"`
}

// ReferenceFingerprint identifies what a reference checks (not its file
// name): the SHA-256 of its settings, entries, required paths, images,
// ignores and Azure policy. nil gives "".
func ReferenceFingerprint(ref *policy.Reference) string {
	if ref == nil {
		return ""
	}
	type entry struct {
		Path    string
		Allowed []string
	}
	entries := func(es []policy.RefEntry) []entry {
		out := make([]entry, 0, len(es))
		for _, e := range es {
			out = append(out, entry{e.Path, e.Allowed})
		}
		return out
	}
	var ignore []string
	for _, p := range ref.Ignore {
		ignore = append(ignore, p.String())
	}
	b, err := json.Marshal(struct {
		FailUnlisted, AllowDeletions, WarnUnmeasured bool
		Files, Images                                []entry
		Required, Ignore                             []string
		SNP                                          policy.SNPPolicy
	}{ref.FailUnlisted, ref.AllowDeletions, ref.WarnUnmeasured, entries(ref.Files), entries(ref.Images), ref.Required, ignore, ref.SNP})
	if err != nil {
		// Every field is a plain value: this does not happen; fail closed.
		return "unusable:" + err.Error()
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Check validates a RefState read from storage: the lists within their
// bounds and consistent with the totals, every unmeasured path well
// formed, the counts within the checkpoint's records.
func (r *RefState) Check(records uint64) error {
	switch {
	case r.Reference != "" && (len(r.Reference) != 64 || hex.EncodeToString(mustHex(r.Reference)) != r.Reference):
		return fmt.Errorf("reference %q: want a SHA-256 fingerprint in lower-case hex, or empty", r.Reference)
	case r.Measured < 0 || uint64(r.Measured) > records:
		return fmt.Errorf("measured_records %d: want 0 to %d", r.Measured, records)
	case len(r.Failures) > MaxFindings || len(r.Warnings) > MaxFindings:
		return fmt.Errorf("more than %d failures or warnings listed", MaxFindings)
	case r.FailureTotal < len(r.Failures) || r.WarningTotal < len(r.Warnings):
		return errors.New("failure_total or warning_total is less than the findings listed")
	case uint64(r.FailureTotal) > records || uint64(r.WarningTotal) > records:
		return fmt.Errorf("failure_total or warning_total is more than the %d records", records)
	case len(r.Unmeasured) > maxUnmeasuredPaths:
		return fmt.Errorf("more than %d unmeasured paths", maxUnmeasuredPaths)
	case r.UnmeasuredOver < 0 || uint64(r.UnmeasuredOver) > records:
		return fmt.Errorf("unmeasured_over %d: want 0 to %d", r.UnmeasuredOver, records)
	case r.Reference == "" && len(r.Required) > 0:
		return errors.New("required paths without a reference")
	}
	for _, list := range [][]Finding{r.Failures, r.Warnings, r.Unmeasured} {
		for _, f := range list {
			if f.Index < -1 || int64(f.Index) >= int64(records) {
				return fmt.Errorf("finding %q: record %d is not in the %d records", f.Problem, f.Index, records)
			}
		}
	}
	seen := map[string]bool{}
	for _, f := range r.Unmeasured {
		key, err := unmeasuredPath(f.Path, f.PathEscaped)
		if err == nil && !validCause(f.Cause) {
			err = fmt.Errorf("cause %q", f.Cause)
		}
		if err == nil && (f.Kind != KindUnmeasured || f.Index < 0) {
			err = errors.New("not an unmeasured record")
		}
		if err == nil && seen[key] {
			err = errors.New("given twice")
		}
		if err != nil {
			return fmt.Errorf("unmeasured %q: %v", f.Path+f.PathEscaped, err)
		}
		seen[key] = true
	}
	clear(seen)
	for _, q := range r.Required {
		if q.Path == "" || seen[q.Path] || q.Record.Index < 0 || uint64(q.Record.Index) >= records {
			return fmt.Errorf("required %q: empty, given twice, or its record is not in the %d records", q.Path, records)
		}
		seen[q.Path] = true
	}
	return nil
}

func mustHex(s string) []byte {
	b, _ := hex.DecodeString(s)
	return b
}

// seed starts the reference checks where a prior state left them.
func (c *refChecker) seed(r *RefState) {
	c.failures = append([]Finding(nil), r.Failures...)
	c.warnings = append([]Finding(nil), r.Warnings...)
	c.nFail, c.nWarn = r.FailureTotal, r.WarningTotal
	for _, f := range r.Unmeasured {
		key, _ := unmeasuredPath(f.Path, f.PathEscaped)
		c.unmeasured[key] = f
	}
	c.unmOver = r.UnmeasuredOver
	if c.required != nil {
		for _, q := range r.Required {
			if _, ok := c.required[q.Path]; ok {
				c.required[q.Path] = reqState{seen: true, deleted: q.Deleted, m: q.Record}
			}
		}
	}
}

// state returns the committed reference state (after rollback, before finish).
func (c *refChecker) state(fingerprint string, measured int) RefState {
	r := RefState{Reference: fingerprint, Measured: measured,
		Failures: append([]Finding{}, c.failures...), Warnings: append([]Finding{}, c.warnings...),
		FailureTotal: c.nFail, WarningTotal: c.nWarn, UnmeasuredOver: c.unmOver,
		Unmeasured: []Finding{}, Required: []RequiredState{}}
	for _, f := range c.unmeasured {
		r.Unmeasured = append(r.Unmeasured, f)
	}
	sort.Slice(r.Unmeasured, func(i, j int) bool { return r.Unmeasured[i].Index < r.Unmeasured[j].Index })
	for path, st := range c.required {
		if st.seen {
			r.Required = append(r.Required, RequiredState{Path: path, Deleted: st.deleted, Record: st.m})
		}
	}
	sort.Slice(r.Required, func(i, j int) bool { return r.Required[i].Path < r.Required[j].Path })
	return r
}
