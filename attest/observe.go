package attest

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

// fields is what the reference checks read of a record: an
// [eventlog.View] while the log streams by, or an [Observation] kept
// from an earlier replay ([Reevaluate]).
type fields interface {
	Str(key string) string
	Is(key, want string) bool
}

// Observation is one distinct measurement of a path in the covered
// records of a log: what the reference checks read of a record, so that a
// verifier that keeps the observations of a machine's accepted prefix can
// check them against another reference without the log ([Reevaluate]).
// Records that are the same measurement (path, kind, deletion, digests)
// make one observation, numbered by the latest of them; every distinct
// measurement is kept, not only a path's latest, because a digest the
// reference refuses fails the verdict even when a later record of the
// path is approved.
type Observation struct {
	Path string
	// PathEscaped is an unmeasured record's path_escaped (a name that is
	// not UTF-8), Path then being empty.
	PathEscaped string
	// Kind is the record's kind, or [ObservedUnbound] or
	// [ObservedMalformed].
	Kind                                 string
	Deleted                              bool
	SHA256, ManifestDigest, ConfigDigest string
	// Cause and Error are an unmeasured record's (the latest record's).
	Cause, Error string
	// Record is the latest covered record with this measurement; Latest
	// says it is the latest covered record of its path.
	Record int
	Latest bool
}

// Kinds of observations that fail whatever the reference says.
const (
	// ObservedUnbound: a rimon record that extends no PCR the quote
	// covers (never vouched for).
	ObservedUnbound = "unbound"
	// ObservedMalformed: an unmeasured record whose path or cause is not
	// valid (Error says why).
	ObservedMalformed = "malformed"
)

// MaxObservations bounds the observations one call of [MatchLogFrom]
// returns; past it they are counted ([LogMatch.ObservationsOver]), and a
// caller must not re-evaluate from an incomplete set.
const MaxObservations = 1 << 16

// Str returns the record field key as the observation holds it.
func (o *Observation) Str(key string) string {
	switch key {
	case "kind":
		return o.Kind
	case "path":
		return o.Path
	case "path_escaped":
		return o.PathEscaped
	case "sha256":
		return o.SHA256
	case "manifest_digest":
		return o.ManifestDigest
	case "config_digest":
		return o.ConfigDigest
	case "cause":
		return o.Cause
	case "error":
		return o.Error
	case "reason":
		if o.Deleted {
			return eventlog.ReasonDeleted
		}
	}
	return ""
}

// Is reports whether a field equals want.
func (o *Observation) Is(key, want string) bool { return o.Str(key) == want }

type obsKey struct {
	path, escaped, kind, sha256, manifest, config string
	deleted                                       bool
}

func (o *Observation) key() obsKey {
	return obsKey{o.Path, o.PathEscaped, o.Kind, o.SHA256, o.ManifestDigest, o.ConfigDigest, o.Deleted}
}

// observer collects observations as the log streams by: pending until a
// later record proves to be covered by the quote, as the reference checks.
type observer struct {
	on      bool
	index   map[obsKey]int
	list    []Observation
	pending []Observation
	over    int // distinct observations past the bound, committed
	pOver   int // pending records past the bound
}

func newObserver(on bool) *observer {
	o := &observer{on: on}
	if on {
		o.index = map[obsKey]int{}
	}
	return o
}

// record notes rimon record i; bound says it extends a quoted PCR.
func (o *observer) record(i int, v fields, bound bool) {
	if !o.on {
		return
	}
	if len(o.pending) >= MaxObservations {
		o.pOver++
		return
	}
	ob := Observation{Path: v.Str("path"), Kind: v.Str("kind"), Deleted: v.Is("reason", eventlog.ReasonDeleted),
		SHA256: v.Str("sha256"), ManifestDigest: v.Str("manifest_digest"), ConfigDigest: v.Str("config_digest"), Record: i}
	switch {
	case !bound:
		ob.Kind = ObservedUnbound
	case ob.Kind == KindUnmeasured:
		ob.PathEscaped, ob.Cause, ob.Error = v.Str("path_escaped"), v.Str("cause"), v.Str("error")
		_, err := unmeasuredPath(ob.Path, ob.PathEscaped)
		if err == nil && !validCause(ob.Cause) {
			err = fmt.Errorf("cause %q is not one of %s", ob.Cause, strings.Join(unmeasuredCauses, ", "))
		}
		if err != nil {
			ob.Kind, ob.Error = ObservedMalformed, err.Error()
		}
	}
	o.pending = append(o.pending, ob)
}

// commit: every record so far is covered.
func (o *observer) commit() {
	if !o.on {
		return
	}
	for _, ob := range o.pending {
		k := ob.key()
		if j, ok := o.index[k]; ok {
			o.list[j].Record, o.list[j].Cause, o.list[j].Error = ob.Record, ob.Cause, ob.Error
			continue
		}
		if len(o.list) >= MaxObservations {
			o.over++
			continue
		}
		o.index[k] = len(o.list)
		o.list = append(o.list, ob)
	}
	o.pending = o.pending[:0]
	o.over += o.pOver
	o.pOver = 0
}

// result returns the committed observations in record order, each path's
// latest marked.
func (o *observer) result() ([]Observation, int) {
	if !o.on {
		return nil, 0
	}
	sort.Slice(o.list, func(i, j int) bool { return o.list[i].Record < o.list[j].Record })
	latest := map[string]int{}
	for i, ob := range o.list {
		latest[ob.Path+"\x00"+ob.PathEscaped] = i
	}
	for _, i := range latest {
		o.list[i].Latest = true
	}
	return o.list, o.over
}

// Reevaluation is what [Reevaluate] finds.
type Reevaluation struct {
	// Failures and Warnings (the first [MaxFindings] of each) and their
	// totals. The totals count distinct observations, not records: a
	// measurement recorded twice is one finding here.
	Failures, Warnings         []Finding
	FailureTotal, WarningTotal int
}

// ErrObservations: the observations given cannot stand for the records
// they came from (two with the same record number).
var ErrObservations = errors.New("observations")

// Reevaluate checks the observations of a machine's accepted prefix (all
// of them: every call's [LogMatch.Observations] since record 0, merged
// by measurement, each with its latest record) against ref, with the
// checks [MatchLog] runs on the records themselves: reference values,
// deletions, required paths (from each path's latest observation), paths
// whose latest observation is unmeasured, and records the quote did not
// vouch for. A prefix it finds nothing in is one whose replay against ref
// finds nothing, and the other way round; the findings themselves may
// differ in number (one per observation, not per record). Checks that do
// not depend on the reference (records after the quote, unrecorded
// changes) are the caller's to carry over.
func Reevaluate(obs []Observation, ref *policy.Reference) (*Reevaluation, error) {
	list := append([]Observation(nil), obs...)
	sort.Slice(list, func(i, j int) bool { return list[i].Record < list[j].Record })
	chk := newRefChecker(ref)
	for i := range list {
		o := &list[i]
		if i > 0 && list[i-1].Record == o.Record {
			return nil, fmt.Errorf("%w: two observations of record %d", ErrObservations, o.Record)
		}
		switch o.Kind {
		case ObservedUnbound:
			chk.unbound(o.Record, o)
		case ObservedMalformed:
			m := chk.measured(o.Record, o.Path, o)
			m.PathEscaped, m.Cause, m.ErrorText = o.PathEscaped, o.Cause, o.Error
			chk.add(false, func() Finding { return Finding{Measured: m, Problem: "malformed unmeasured record: " + o.Error} })
		default:
			chk.record(o.Record, o)
		}
	}
	chk.commit()
	// Past the bound a replay stops following unmeasured paths one by one
	// and fails them together; the observations come in another order, so
	// fail whenever the replay may have reached the bound.
	unmeasured := map[string]bool{}
	for i := range list {
		if list[i].Kind == KindUnmeasured {
			unmeasured[list[i].Path+"\x00"+list[i].PathEscaped] = true
		}
	}
	if len(unmeasured) > maxUnmeasuredPaths {
		chk.nFail++
		chk.failures = appendCapped(chk.failures, []Finding{{Measured: Measured{Index: -1, Kind: KindUnmeasured},
			Problem: fmt.Sprintf("not measured: %d paths could not be measured, past the %d followed one by one", len(unmeasured), maxUnmeasuredPaths)}})
	}
	r := &Reevaluation{}
	r.Failures, r.Warnings = chk.finish()
	r.FailureTotal, r.WarningTotal = chk.nFail, chk.nWarn
	return r, nil
}

// refIndexes holds the path lookup of references by fingerprint, for
// callers that give the fingerprint ([From.Fingerprint]): a verifier that
// checks many machines against one reference builds it once. The
// fingerprint covers every entry, so two references with the same one
// look paths up alike.
var refIndexes = struct {
	sync.Mutex
	m map[string]*refChecker
}{m: map[string]*refChecker{}}

// maxRefIndexes bounds the references indexed at once.
const maxRefIndexes = 64

// newRefCheckerFor is newRefChecker, with the path lookup shared between
// checkers of references with the same (given) fingerprint.
func newRefCheckerFor(ref *policy.Reference, fp string) *refChecker {
	if ref == nil || fp == "" {
		return newRefChecker(ref)
	}
	refIndexes.Lock()
	idx, ok := refIndexes.m[fp]
	refIndexes.Unlock()
	if !ok {
		idx = newRefChecker(ref)
		refIndexes.Lock()
		if len(refIndexes.m) >= maxRefIndexes {
			clear(refIndexes.m)
		}
		refIndexes.m[fp] = idx
		refIndexes.Unlock()
	}
	c := &refChecker{ref: ref, exact: idx.exact, patterns: idx.patterns, unmeasured: map[string]Finding{}, unmPending: map[string]unmState{},
		required: map[string]reqState{}}
	for _, p := range ref.Required {
		c.required[p] = reqState{}
	}
	return c
}

// fingerprint is from.Fingerprint, or ref's computed.
func (from From) fingerprint(ref *policy.Reference) string {
	if from.Fingerprint != "" && ref != nil {
		return from.Fingerprint
	}
	return ReferenceFingerprint(ref)
}
