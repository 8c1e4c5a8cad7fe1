package attest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/eventlog"
)

// TestUnmeasuredRecords: a path whose latest trusted record says it could
// not be measured is not approved, until a later measurement; "unmeasured:
// warn" makes it a warning; a malformed unmeasured record fails.
func TestUnmeasuredRecords(t *testing.T) {
	m := newRawMachine(t)
	m.file("/bin/app", "v1")
	refYAML := "files:\n  /bin/app: [" + digestOf("v1") + "]\n  /bin/other: [" + digestOf("o") + "]\n"
	ref := mustRef(t, refYAML)
	if res, err := m.verify(ref); err != nil || !res.Trusted {
		t.Fatalf("before: %+v, %v; want trusted", res, err)
	}

	m.unmeasured("path", "/bin/app", "unstable")
	res, err := m.verify(ref)
	if err != nil {
		t.Fatal(err)
	}
	want := "not measured (unstable): /bin/app (it went wrong) [record 1]"
	if res.Trusted || res.FailureTotal != 1 || res.Failures[0].String() != want || res.Failures[0].Cause != "unstable" {
		t.Fatalf("after an unmeasured record: trusted=%v %q; want untrusted with %q", res.Trusted, problems(res.Failures), want)
	}
	// With no reference at all the machine is not trusted either.
	if res, err := m.verify(nil); err != nil || res.Trusted || res.FailureTotal != 1 {
		t.Errorf("no reference: %+v, %v; want untrusted with one failure", res, err)
	}
	warn := mustRef(t, "unmeasured: warn\n"+refYAML)
	if res, err := m.verify(warn); err != nil || !res.Trusted || res.WarningTotal != 1 || res.Warnings[0].String() != want {
		t.Errorf("unmeasured: warn: %+v, %v; want trusted with the warning %q", res, err, want)
	}

	// A later measurement of another path leaves it unapproved; one of the same path supersedes it.
	m.file("/bin/other", "o")
	if res, _ := m.verify(ref); res.Trusted {
		t.Errorf("a measurement of another path approved /bin/app")
	}
	m.file("/bin/app", "v1")
	if res, err := m.verify(ref); err != nil || !res.Trusted || res.FailureTotal != 0 {
		t.Errorf("after /bin/app was measured again: %+v, %v; want trusted", res, err)
	}

	// A name that is not UTF-8, percent-escaped.
	m.unmeasured("path_escaped", "/bin/evil%FF%25", "name_not_utf8")
	res, _ = m.verify(ref)
	if res.Trusted || res.FailureTotal != 1 || res.Failures[0].PathEscaped != "/bin/evil%FF%25" || res.Failures[0].Path != "" ||
		!strings.HasPrefix(res.Failures[0].String(), "not measured (name_not_utf8): path_escaped /bin/evil%FF%25") {
		t.Errorf("escaped name: %q; want it not measured", problems(res.Failures))
	}
}

// TestMalformedUnmeasuredRecords: each is a failure of its own, naming why.
func TestMalformedUnmeasuredRecords(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields []eventlog.Field
		want   string
	}{
		{"both_paths", []eventlog.Field{str("path", "/a"), str("path_escaped", "/a%FF"), str("cause", "unstable")}, "both path and path_escaped"},
		{"no_path", []eventlog.Field{str("cause", "unstable")}, "neither path nor path_escaped"},
		{"lower_case_escape", []eventlog.Field{str("path_escaped", "/a%ff"), str("cause", "name_not_utf8")}, `path_escaped "/a%ff": % at byte 2 is not followed by two upper-case hex digits`},
		{"escaped_utf8", []eventlog.Field{str("path_escaped", "/a%C3%A9"), str("cause", "name_not_utf8")}, "names a UTF-8 path"},
		{"needless_escape", []eventlog.Field{str("path_escaped", "/%41%FF"), str("cause", "name_not_utf8")}, "not the canonical escape"},
		{"unknown_cause", []eventlog.Field{str("path", "/a"), str("cause", "bored")}, `cause "bored" is not one of`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newRawMachine(t)
			m.add(23, append(tc.fields, str("kind", "unmeasured"), str("reason", "changed"))...)
			res, err := m.verify(mustRef(t, "unmeasured: warn\nunlisted: warn\nfiles: {}\n"))
			if err != nil {
				t.Fatal(err)
			}
			if res.Trusted || res.FailureTotal != 1 || !strings.HasPrefix(res.Failures[0].Problem, "malformed unmeasured record: ") || !strings.Contains(res.Failures[0].Problem, tc.want) {
				t.Errorf("failures %q; want one saying %q", problems(res.Failures), tc.want)
			}
		})
	}
}

// TestRecordsOnUnquotedPCRsAreNotTrusted: a record that extends no quoted
// PCR is not vouched for by the quote: it cannot supersede an unmeasured
// record, nor satisfy a required path.
func TestRecordsOnUnquotedPCRsAreNotTrusted(t *testing.T) {
	m := newRawMachine(t)
	m.unmeasured("path", "/bin/app", "unreadable")
	m.add(16, str("kind", "file"), str("path", "/bin/app"), str("reason", "changed"), str("sha256", digestOf("v1")))
	m.add(16, str("kind", "file"), str("path", "/bin/req"), str("reason", "changed"), str("sha256", digestOf("r")))
	res, err := m.verify(mustRef(t, "files:\n  /bin/*: ["+digestOf("v1")+", "+digestOf("r")+"]\nrequired: [/bin/req]\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(problems(res.Failures), "\n")
	if res.Trusted || res.FailureTotal != 4 || !strings.Contains(got, "not measured (unreadable): /bin/app") || !strings.Contains(got, "/bin/req: required, but never measured") ||
		strings.Count(got, "extends no PCR the quote covers") != 2 {
		t.Errorf("failures:\n%s\nwant /bin/app not measured, /bin/req never measured and the two PCR 16 records named", got)
	}
}

// TestQuoteOfOtherPCRsIsNotTrusted: a quote of a PCR the log never extends
// (--pcrs 16 over a log of PCR 23) replays at its initial value and so
// "covers" every record; none of them is vouched for, and the verdict must
// not be TRUSTED.
func TestQuoteOfOtherPCRsIsNotTrusted(t *testing.T) {
	m := newRawMachine(t)
	m.add(23, str("kind", "file"), str("path", "/bin/evil"), str("reason", "changed"), str("sha256", digestOf("evil")))
	ev, err := agent.Collect(context.Background(), m.tpm, m.log, nonce, []int{16}, m.banks)
	if err != nil {
		t.Fatal(err)
	}
	res, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce, PCRs: []int{16}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Trusted || res.FailureTotal != 1 || !strings.Contains(res.Failures[0].Problem, "extends no PCR the quote covers") {
		t.Errorf("Verify = %+v; want UNTRUSTED naming the record the quote does not cover", res)
	}
}

// TestTrailingRecordsExplained: an unmeasured record after the quote is
// neither trusted nor counted; the trailing records are explained; more of
// them than a crash leaves make the verdict untrusted.
func TestTrailingRecordsExplained(t *testing.T) {
	m := newRawMachine(t)
	m.file("/bin/app", "v1")
	ev, err := agent.Collect(context.Background(), m.tpm, m.log, nonce, []int{23}, m.banks)
	if err != nil {
		t.Fatal(err)
	}
	m.unmeasured("path", "/bin/app", "unstable")
	m.file("/bin/app", "v2")
	ev.Log, _ = os.ReadFile(m.log)
	// Two trailing records are one more than a crash explains: not trusted.
	res, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Trusted || res.FailureTotal != 1 || res.Failures[0].Kind != attest.KindTrailing ||
		!strings.Contains(res.Failures[0].Problem, "2 records from record 1 on are not covered by the quote") {
		t.Fatalf("Verify = %+v; want untrusted for 2 trailing records", res)
	}
	res, err = verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}, AllowTrailing: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Trusted || res.Covered != 1 || res.Trailing != 2 {
		t.Fatalf("Verify = %+v; want trusted, 1 covered, 2 trailing", res)
	}
	for _, w := range []string{"record 1 (unmeasured /bin/app) is the first record the quote does not cover: it extends PCR 23 in sha1, sha256, sha384, sha512, and sha256:23 then replays to ", ", the quote says "} {
		if !strings.Contains(res.TrailingProblem, w) {
			t.Errorf("TrailingProblem = %q; want it to say %q", res.TrailingProblem, w)
		}
	}

	// An edited trailing record: the replay error is the explanation.
	recs := splitLog(ev.Log)
	recs[1] = bytes.Replace(recs[1], []byte("unstable"), []byte("timeout!"), 1)
	ev.Log = bytes.Join(recs, nil)
	res, err = verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}})
	if err != nil || !strings.Contains(res.TrailingProblem, "record 1") || !strings.Contains(res.TrailingProblem, "digest does not match content") {
		t.Errorf("edited trailing record: %+v, %v; want the replay error", res, err)
	}
	// Nothing after a broken record can be counted or checked: not trusted,
	// however many records the verdict tolerates after the quote.
	res, err = verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}, AllowTrailing: 5})
	if err != nil || res.Trusted || res.FailureTotal != 1 || !strings.Contains(res.Failures[0].Problem, "holds a record that does not verify") {
		t.Errorf("edited trailing record: %+v, %v; want UNTRUSTED for the record that does not verify", res, err)
	}
}

// TestUnrecordedChanges: an evidence header that lists unrecorded changes
// makes the verdict untrusted, listing each.
func TestUnrecordedChanges(t *testing.T) {
	m := newRawMachine(t)
	m.file("/bin/app", "v1")
	ev, err := agent.Collect(context.Background(), m.tpm, m.log, nonce, []int{23}, m.banks)
	if err != nil {
		t.Fatal(err)
	}
	ev.Unrecorded = []attest.Unrecorded{
		{Path: "/bin/app", Cause: "unstable", Since: "2026-01-02T03:04:05Z", Tries: 7},
		{Path: "/bin/evil%FF", Cause: "error", Since: "2026-01-02T03:04:06Z", Tries: 1},
	}
	// Through the wire format, as a verifier receives it.
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ev, err = attest.ParseEvidence(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	ref := mustRef(t, "files:\n  /bin/app: ["+digestOf("v1")+"]\n")
	vals, _ := ev.Values()
	res, err := attest.Verify(ev.Quote.Attest, ev.Quote.Signature, vals, bytes.NewReader(ev.Log),
		attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}, Reference: ref, Unrecorded: ev.Unrecorded})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"unrecorded change (unstable) since 2026-01-02T03:04:05Z: /bin/app", "unrecorded change (error) since 2026-01-02T03:04:06Z: /bin/evil%FF"}
	if res.Trusted || res.FailureTotal != 2 || strings.Join(problems(res.Failures), "|") != strings.Join(want, "|") || len(res.Unrecorded) != 2 {
		t.Errorf("Verify = trusted %v, failures %q; want untrusted with %q", res.Trusted, problems(res.Failures), want)
	}
	j, _ := json.Marshal(res)
	if !bytes.Contains(j, []byte(`"unrecorded":[{"path":"/bin/app","cause":"unstable"`)) {
		t.Errorf("JSON result lacks the unrecorded list: %s", j)
	}
	// The same evidence without the list is trusted.
	if res, err := attest.Verify(ev.Quote.Attest, ev.Quote.Signature, vals, bytes.NewReader(ev.Log),
		attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}, Reference: ref}); err != nil || !res.Trusted {
		t.Errorf("without unrecorded changes: %+v, %v", res, err)
	}
}

// TestTrailingUnmeasuredHonoursWarn: an unmeasured record after the quote
// is judged as inside it: a failure by default, a warning with the
// reference's "unmeasured: warn".
func TestTrailingUnmeasuredHonoursWarn(t *testing.T) {
	m := newRawMachine(t)
	m.file("/bin/app", "v1")
	ev, err := agent.Collect(context.Background(), m.tpm, m.log, nonce, []int{23}, m.banks)
	if err != nil {
		t.Fatal(err)
	}
	m.unmeasured("path", "/bin/app", "unstable")
	ev.Log, _ = os.ReadFile(m.log)
	for _, tc := range []struct {
		ref     string
		trusted bool
	}{{"files:\n  /bin/app: [" + digestOf("v1") + "]\n", false}, {"unmeasured: warn\nfiles:\n  /bin/app: [" + digestOf("v1") + "]\n", true}} {
		res, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}, Reference: mustRef(t, tc.ref)})
		if err != nil || res.Trusted != tc.trusted {
			t.Errorf("reference %q: %+v, %v; want trusted %v", tc.ref, res, err, tc.trusted)
		}
	}
}
