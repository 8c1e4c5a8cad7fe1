package attest

import (
	"bytes"
	"crypto"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

// obsLog is a random log of rimon records for the observation tests.
type obsLog struct {
	recs []eventlog.Record
}

func (l *obsLog) add(t *testing.T, pcr int, fields ...eventlog.Field) {
	c, err := eventlog.NewContent(fields...)
	if err != nil {
		t.Fatal(err)
	}
	l.recs = append(l.recs, eventlog.Record{RecNum: uint64(len(l.recs)), HasRecNum: true, PCR: pcr, ContentType: "rimon",
		Content: c, Digests: c.Digests([]crypto.Hash{crypto.SHA256})})
}

var obsDigests = []string{strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)}

func (l *obsLog) random(t *testing.T, rng *rand.Rand) {
	f := func(k, v string) eventlog.Field { return eventlog.Field{Key: k, Str: v} }
	path := fmt.Sprintf("/p%d", rng.Intn(4))
	pcr := 23
	if rng.Intn(40) == 0 {
		pcr = 16 // extends no quoted PCR
	}
	switch r := rng.Intn(20); {
	case r < 12:
		l.add(t, pcr, f("kind", "file"), f("path", path), f("reason", "changed"), f("sha256", obsDigests[rng.Intn(3)]))
	case r < 14:
		l.add(t, pcr, f("kind", "file"), f("path", path), f("reason", "deleted"), f("sha256", ""))
	case r < 17:
		l.add(t, pcr, f("kind", "unmeasured"), f("path", path), f("reason", "changed"), f("cause", "unstable"), f("error", fmt.Sprint("busy ", rng.Intn(3))))
	case r < 18:
		l.add(t, pcr, f("kind", "unmeasured"), f("path", path), f("reason", "changed"), f("cause", "no-such-cause"))
	default:
		l.add(t, pcr, f("kind", "image"), f("path", "/img"+path), f("reason", "changed"), f("sha256", obsDigests[rng.Intn(3)]),
			f("manifest_digest", "sha256:"+obsDigests[rng.Intn(3)]))
	}
}

// match runs MatchLogFrom over records [from, to) with the quote after
// record covered (covered >= from).
func (l *obsLog) match(t *testing.T, ref *policy.Reference, prior *Prior, to, covered int) *LogMatch {
	return l.matchFP(t, ref, prior, to, covered, "")
}

func (l *obsLog) matchFP(t *testing.T, ref *policy.Reference, prior *Prior, to, covered int, fp string) *LogMatch {
	t.Helper()
	st, err := eventlog.Replay(l.recs[:covered], []crypto.Hash{crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	k := eventlog.PCRKey{PCR: 23, Bank: crypto.SHA256}
	q := &Quoted{Selection: []eventlog.PCRKey{k}, Values: map[eventlog.PCRKey][]byte{k: st.Value(23, crypto.SHA256)}, Hash: crypto.SHA256}
	from := 0
	if prior != nil {
		from = int(prior.Log.Records)
	}
	var log bytes.Buffer
	for i := from; i < to; i++ {
		b, _ := l.recs[i].Marshal()
		log.Write(b)
	}
	m, err := MatchLogFrom(&log, q, ref, From{Prior: prior, Keep: true, Observe: true, Fingerprint: fp})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randomRef(t *testing.T, rng *rand.Rand) *policy.Reference {
	var b strings.Builder
	if rng.Intn(2) == 0 {
		b.WriteString("unlisted: warn\n")
	}
	if rng.Intn(2) == 0 {
		b.WriteString("deletions: allow\n")
	}
	if rng.Intn(2) == 0 {
		b.WriteString("unmeasured: warn\n")
	}
	b.WriteString("files:\n  /none: [dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd]\n")
	for p := 0; p < 4; p++ {
		if rng.Intn(4) == 0 {
			continue
		}
		var allowed []string
		for _, d := range obsDigests {
			if rng.Intn(3) > 0 {
				allowed = append(allowed, d)
			}
		}
		if len(allowed) == 0 {
			allowed = obsDigests[:1]
		}
		fmt.Fprintf(&b, "  /p%d: [%s]\n", p, strings.Join(allowed, ", "))
	}
	b.WriteString("images:\n  /img/none: ['sha256:0000000000000000000000000000000000000000000000000000000000000000']\n")
	for p := 0; p < 4; p++ {
		if rng.Intn(3) > 0 {
			fmt.Fprintf(&b, "  /img/p%d: ['sha256:%s']\n", p, obsDigests[rng.Intn(3)])
		}
	}
	if rng.Intn(2) == 0 {
		fmt.Fprintf(&b, "required: [/p%d]\n", rng.Intn(4))
	}
	ref, err := policy.ParseReference("r.yaml", strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	return ref
}

// mergeObservations merges rounds of observations as a store keyed by
// measurement does: the latest record of each, the latest mark moved.
func mergeObservations(all, round []Observation) []Observation {
	for _, o := range round {
		found := false
		for i := range all {
			if all[i].key() == o.key() {
				all[i].Record, all[i].Cause, all[i].Error, found = o.Record, o.Cause, o.Error, true
			}
		}
		if !found {
			all = append(all, o)
		}
	}
	return all
}

// TestReevaluateAgreesWithReplay: observations collected round by round
// (incrementally, with the quote covering part of each round's records),
// checked against another reference, give the verdict a replay of the
// whole accepted prefix with that reference gives: failures or none,
// warnings or none.
func TestReevaluateAgreesWithReplay(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	disagreed := 0
	for iter := 0; iter < 400; iter++ {
		var l obsLog
		ref := randomRef(t, rng)
		var prior *Prior
		var obs []Observation
		covered := 0
		for round := 0; round < 1+rng.Intn(4); round++ {
			n := 1 + rng.Intn(8)
			for i := 0; i < n; i++ {
				l.random(t, rng)
			}
			to := len(l.recs)
			cov := covered + rng.Intn(to-covered+1)
			m := l.match(t, ref, prior, to, cov)
			if m.Covered < cov {
				t.Fatalf("covered %d, want at least %d", m.Covered, cov)
			}
			obs = mergeObservations(obs, m.Observations)
			prior, covered = m.Next, m.Covered
		}
		other := randomRef(t, rng)
		full := l.match(t, other, nil, covered, covered)
		// The path lookup shared by fingerprint gives the same verdict.
		if fast := l.matchFP(t, other, nil, covered, covered, ReferenceFingerprint(other)); fast.FailureTotal != full.FailureTotal || fast.WarningTotal != full.WarningTotal {
			t.Fatalf("iteration %d: with the fingerprint %d failures, %d warnings; without %d, %d", iter, fast.FailureTotal, fast.WarningTotal, full.FailureTotal, full.WarningTotal)
		}
		re, err := Reevaluate(obs, other)
		if err != nil {
			t.Fatal(err)
		}
		if (full.FailureTotal == 0) != (re.FailureTotal == 0) || (full.WarningTotal == 0) != (re.WarningTotal == 0) {
			t.Fatalf("iteration %d: replay %d failures %v, %d warnings; re-evaluation %d failures %v, %d warnings\nobservations %+v",
				iter, full.FailureTotal, full.Failures, full.WarningTotal, re.FailureTotal, re.Failures, re.WarningTotal, obs)
		}
		if full.FailureTotal > 0 {
			disagreed++
		}
	}
	if disagreed == 0 || disagreed == 400 {
		t.Errorf("%d of 400 prefixes failed: the cases do not exercise both verdicts", disagreed)
	}
}

// TestObservationsAreDistinct: a digest recorded, replaced and recorded
// again is one observation with its latest record; records after the
// quote give none; the path's latest is marked.
func TestObservationsAreDistinct(t *testing.T) {
	var l obsLog
	f := func(k, v string) eventlog.Field { return eventlog.Field{Key: k, Str: v} }
	file := func(d string) {
		l.add(t, 23, f("kind", "file"), f("path", "/x"), f("reason", "changed"), f("sha256", d))
	}
	file(obsDigests[0])
	file(obsDigests[1])
	file(obsDigests[0])
	file(obsDigests[2]) // after the quote
	m := l.match(t, nil, nil, 4, 3)
	want := []Observation{
		{Path: "/x", Kind: "file", SHA256: obsDigests[1], Record: 1},
		{Path: "/x", Kind: "file", SHA256: obsDigests[0], Record: 2, Latest: true},
	}
	if fmt.Sprint(m.Observations) != fmt.Sprint(want) {
		t.Errorf("observations %+v\nwant %+v", m.Observations, want)
	}
	// A digest seen earlier and later fixed still fails.
	ref, err := policy.ParseReference("r.yaml", strings.NewReader("files:\n  /x: ["+obsDigests[0]+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	re, err := Reevaluate(m.Observations, ref)
	if err != nil || re.FailureTotal != 1 || re.Failures[0].SHA256 != obsDigests[1] {
		t.Errorf("Reevaluate = %+v, %v; want the digest of record 1 refused", re, err)
	}
	if _, err := Reevaluate(append(m.Observations, Observation{Path: "/y", Kind: "file", Record: 2}), ref); err == nil {
		t.Error("two observations of record 2 accepted")
	}
}
