package attest

import (
	"bytes"
	"crypto"
	"fmt"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
)

// TestUnmeasuredPathsAreBounded: past maxUnmeasuredPaths, unmeasured paths
// are counted, not kept one by one, and still fail; those in records the
// quote does not cover are forgotten.
func TestUnmeasuredPathsAreBounded(t *testing.T) {
	defer func(n int) { maxUnmeasuredPaths = n }(maxUnmeasuredPaths)
	maxUnmeasuredPaths = 3
	var recs []eventlog.Record
	add := func(fields ...eventlog.Field) {
		c, err := eventlog.NewContent(fields...)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventlog.Record{RecNum: uint64(len(recs)), HasRecNum: true, PCR: 23, ContentType: "rimon",
			Content: c, Digests: c.Digests([]crypto.Hash{crypto.SHA256})})
	}
	f := func(k, v string) eventlog.Field { return eventlog.Field{Key: k, Str: v} }
	unmeasured := func(p string) {
		add(f("kind", "unmeasured"), f("path", p), f("reason", "changed"), f("cause", "unstable"))
	}
	measured := func(p string) {
		add(f("kind", "file"), f("path", p), f("reason", "changed"), f("sha256", strings.Repeat("a", 64)))
	}
	for i := 0; i < 5; i++ {
		unmeasured(fmt.Sprintf("/p%d", i)) // /p3 and /p4 are past the bound
	}
	measured("/p0") // supersedes /p0
	measured("/p4") // cannot supersede what is not followed
	covered := len(recs)
	for i := 5; i < 9; i++ {
		unmeasured(fmt.Sprintf("/p%d", i)) // after the quote: forgotten
	}
	st, err := eventlog.Replay(recs[:covered], []crypto.Hash{crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	k := eventlog.PCRKey{PCR: 23, Bank: crypto.SHA256}
	q := &Quoted{Selection: []eventlog.PCRKey{k}, Values: map[eventlog.PCRKey][]byte{k: st.Value(23, crypto.SHA256)}, Hash: crypto.SHA256}
	var log bytes.Buffer
	for i := range recs {
		b, _ := recs[i].Marshal()
		log.Write(b)
	}
	m, err := MatchLog(&log, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range m.Failures {
		got = append(got, x.String())
	}
	want := []string{"not measured (unstable): /p1 [record 1]", "not measured (unstable): /p2 [record 2]",
		"not measured: 2 more records name paths that could not be measured (past 3 paths, they are not followed one by one)"}
	if m.Covered != covered || m.FailureTotal != 3 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("covered %d, %d failures:\n%s\nwant %d covered and\n%s", m.Covered, m.FailureTotal, strings.Join(got, "\n"), covered, strings.Join(want, "\n"))
	}
}
