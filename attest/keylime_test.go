package attest_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/policy"
)

// TestKeylimeReferenceVerdict verifies a machine against a reference
// imported from Keylime's own policy and exclude list: an excluded path is
// accepted with any digest, a listed one only with its digest.
func TestKeylimeReferenceVerdict(t *testing.T) {
	pol, err := os.ReadFile("../testdata/keylime/runtime-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	excl, err := os.ReadFile("../testdata/keylime/exclude.txt")
	if err != nil {
		t.Fatal(err)
	}
	imp, err := policy.ImportKeylime("runtime-policy.json", pol, policy.KeylimeOptions{Digest256: policy.KeylimeSHA256, Excludes: policy.ParseKeylimeExcludeList(excl)})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := policy.WriteReference(&buf, policy.RefFile{Files: imp.Files, Ignore: imp.Ignore}); err != nil {
		t.Fatal(err)
	}
	ref, err := policy.ParseReference("ref.yaml", &buf)
	if err != nil {
		t.Fatal(err)
	}
	o := attest.Options{QuoteOptions: attest.QuoteOptions{Nonce: nonce}, Reference: ref}

	m := newMachine(t)
	o.AK = m.ak
	m.measure("/usr/bin/foobar-bin", "") // the policy's digest is that of an empty file
	m.measure("/var/log/wtmp", "anything")
	m.measure("/sys/fs/cgroup/memory.max", "anything")
	res, err := verify(m.evidence(nonce), o)
	if err != nil || !res.Trusted {
		t.Fatalf("Verify = %+v, %v; want trusted", res, err)
	}
	m.measure("/usr/bin/foobar-bin", "changed")
	m.measure("/var/log/wtmp\nx", "a newline is never ignored")
	res, err = verify(m.evidence(nonce), o)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, f := range res.Failures {
		failed = append(failed, f.Path)
	}
	if res.Trusted || len(failed) != 2 || failed[0] != "/usr/bin/foobar-bin" || failed[1] != "/var/log/wtmp\nx" {
		t.Errorf("after a change: trusted %v, failures %q; want the changed file and the path with a newline", res.Trusted, failed)
	}
}
