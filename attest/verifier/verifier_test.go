package verifier_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

var nonce = []byte("verifier-test-nonce")

// attested is evidence a simulated TPM signed over a log of three records.
type attested struct {
	ak  crypto.PublicKey
	ev  *attest.Evidence
	log []byte
}

func newAttested(t *testing.T) *attested {
	t.Helper()
	ctx := context.Background()
	tp := testtpm.Open(t)
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.log")
	w, _, err := logfile.OpenWriter(ctx, path, tp, logfile.WriterOptions{Banks: []crypto.Hash{crypto.SHA256}, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		d := sha256.Sum256([]byte{byte(i)})
		if _, err := w.Append(ctx, 23, eventlog.Event{Kind: "file", Path: fmt.Sprintf("/usr/bin/app%d", i), SHA256: fmt.Sprintf("%x", d), Reason: "initial"}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	ev, err := agent.Collect(ctx, tp, path, nonce, []int{23}, []crypto.Hash{crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	return &attested{ak: ak.Key, ev: ev, log: ev.Log}
}

func (a *attested) input() verifier.Evidence {
	return verifier.Evidence{Header: a.ev, Log: bytes.NewReader(a.ev.Log)}
}

// TestVerify: valid evidence passes every check, in order, and evidence
// that leaves out its first records, given the verifier's own copy of
// them, gets the same verdict as the whole log.
func TestVerify(t *testing.T) {
	a := newAttested(t)
	opts := verifier.Options{AK: a.ak, Nonce: nonce}
	res, err := verifier.Verify(context.Background(), a.input(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range res.Checks {
		if !c.Passed {
			t.Errorf("check %s did not pass: %s", c.Name, c.Detail)
		}
		names = append(names, c.Name)
	}
	want := []string{attest.CheckSignature, attest.CheckMagic, attest.CheckNonce, attest.CheckSelection, attest.CheckDigest, attest.CheckLog}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("checks %q, want %q", names, want)
	}
	v := res.Verdict
	if !v.Trusted || v.Covered != 3 || v.Records != 3 {
		t.Errorf("verdict: trusted %v, %d of %d records covered; want all 3", v.Trusted, v.Covered, v.Records)
	}

	rest, err := attest.SkipRecords(a.log, 2)
	if err != nil {
		t.Fatal(err)
	}
	later := *a.ev
	later.Log, later.LogStart = rest, 2
	opts.LogPrefix = a.log[:len(a.log)-len(rest)]
	res2, err := verifier.Verify(context.Background(), verifier.Evidence{Header: &later, Log: bytes.NewReader(rest)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Checks[0].Name != verifier.CheckLogPrefix || !res2.Checks[0].Passed {
		t.Errorf("first check %+v, want the log prefix, passed", res2.Checks[0])
	}
	if !reflect.DeepEqual(res2.Verdict, v) {
		t.Errorf("from a prefix: %+v\nwhole log: %+v", res2.Verdict, v)
	}
}

// TestVerifyErrors: every way evidence fails is an error a caller can
// act on: a *CheckError naming the check (which unwraps to attest's
// CheckError for quote and log checks, and to ErrInvalid), or ErrNoKey and
// ErrNoPrefix when the caller left out what a check needs.
func TestVerifyErrors(t *testing.T) {
	a := newAttested(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(a.log, []byte("/usr/bin/app1"), []byte("/usr/bin/appX"), 1)
	if bytes.Equal(edited, a.log) {
		t.Fatal("the log does not name /usr/bin/app1")
	}
	for _, tc := range []struct {
		name      string
		edit      func(ev *attest.Evidence, in *verifier.Evidence, o *verifier.Options)
		check     string // the failed check, or "" for a sentinel
		sentinel  error
		quoteErr  bool // unwraps to *attest.CheckError
		passedBef []string
	}{
		{name: "another nonce", edit: func(_ *attest.Evidence, _ *verifier.Evidence, o *verifier.Options) {
			o.Nonce = []byte("another-nonce-here")
		},
			check: attest.CheckNonce, quoteErr: true, passedBef: []string{attest.CheckSignature, attest.CheckMagic}},
		{name: "another AK", edit: func(_ *attest.Evidence, _ *verifier.Evidence, o *verifier.Options) { o.AK = &other.PublicKey },
			check: attest.CheckSignature, quoteErr: true},
		{name: "another bank required", edit: func(_ *attest.Evidence, _ *verifier.Evidence, o *verifier.Options) {
			o.Banks = []crypto.Hash{crypto.SHA384}
		},
			check: attest.CheckSelection, quoteErr: true, passedBef: []string{attest.CheckSignature, attest.CheckMagic, attest.CheckNonce}},
		{name: "edited log", edit: func(_ *attest.Evidence, in *verifier.Evidence, _ *verifier.Options) { in.Log = bytes.NewReader(edited) },
			check: attest.CheckLog, quoteErr: true, passedBef: []string{attest.CheckSignature, attest.CheckMagic, attest.CheckNonce, attest.CheckSelection, attest.CheckDigest}},
		{name: "altered PCR value", edit: func(ev *attest.Evidence, _ *verifier.Evidence, _ *verifier.Options) {
			ev.PCRs = map[string]map[string]string{"sha256": {"23": fmt.Sprintf("%064x", 1)}}
		}, check: attest.CheckDigest, quoteErr: true, passedBef: []string{attest.CheckSignature, attest.CheckMagic, attest.CheckNonce, attest.CheckSelection}},
		{name: "PCR values that do not parse", edit: func(ev *attest.Evidence, _ *verifier.Evidence, _ *verifier.Options) {
			ev.PCRs = map[string]map[string]string{"sha256": {"x": "00"}}
		}, check: verifier.CheckEvidence},
		{name: "HCL report that does not parse", edit: func(ev *attest.Evidence, _ *verifier.Evidence, _ *verifier.Options) {
			ev.Azure = &attest.AzureBlob{HCLReport: []byte("not an HCL report"), VCEK: []byte("x")}
		}, check: verifier.CheckAzureReport},
		{name: "prefix shorter than log_start", edit: func(ev *attest.Evidence, _ *verifier.Evidence, o *verifier.Options) {
			ev.LogStart, o.LogPrefix = 2, a.log[:bytes.IndexByte(a.log, '\n')+1]
		}, check: verifier.CheckLogPrefix},
		{name: "no prefix", edit: func(ev *attest.Evidence, _ *verifier.Evidence, _ *verifier.Options) { ev.LogStart = 2 },
			sentinel: verifier.ErrNoPrefix},
		{name: "no AK", edit: func(_ *attest.Evidence, _ *verifier.Evidence, o *verifier.Options) { o.AK = nil },
			sentinel: verifier.ErrNoKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := *a.ev
			in := verifier.Evidence{Header: &ev, Log: bytes.NewReader(a.log)}
			o := verifier.Options{AK: a.ak, Nonce: nonce}
			tc.edit(&ev, &in, &o)
			res, err := verifier.Verify(context.Background(), in, o)
			if tc.sentinel != nil {
				if !errors.Is(err, tc.sentinel) {
					t.Fatalf("error %v, want %v", err, tc.sentinel)
				}
				return
			}
			var ce *verifier.CheckError
			if !errors.As(err, &ce) || ce.Check != tc.check || !errors.Is(err, attest.ErrInvalid) {
				t.Fatalf("error %v (%T), want a CheckError of %q that is ErrInvalid", err, err, tc.check)
			}
			var qe *attest.CheckError
			if errors.As(err, &qe) != tc.quoteErr || tc.quoteErr && qe.Check != tc.check {
				t.Errorf("errors.As(*attest.CheckError) = %v, want %v", qe, tc.quoteErr)
			}
			if res == nil || res.Verdict != nil || len(res.Checks) != len(tc.passedBef)+1 {
				t.Fatalf("result %+v: want no verdict, %d passed checks and the failed one", res, len(tc.passedBef))
			}
			for i, name := range tc.passedBef {
				if c := res.Checks[i]; c.Name != name || !c.Passed {
					t.Errorf("check %d: %+v, want %s passed", i, c, name)
				}
			}
			if last := res.Checks[len(res.Checks)-1]; last.Name != tc.check || last.Passed || last.Detail != err.Error() {
				t.Errorf("last check %+v, want %s failed with %q", last, tc.check, err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := verifier.Verify(ctx, a.input(), verifier.Options{AK: a.ak, Nonce: nonce}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled context: %v", err)
	}
	// Canceled while the log streams in: no verdict on the part read.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	in := a.input()
	in.Log = &cancelAfter{r: in.Log, n: 200, cancel: cancel}
	if res, err := verifier.Verify(ctx, in, verifier.Options{AK: a.ak, Nonce: nonce}); !errors.Is(err, context.Canceled) || res.Verdict != nil {
		t.Errorf("canceled while reading the log: %v, verdict %+v", err, res.Verdict)
	}
}

// cancelAfter reads at most n bytes at a time, and cancels once it has.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p[:min(len(p), c.n)])
	c.cancel()
	return n, err
}

// TestNoTPM: the verifier links neither the tpm package, the cgo TPM
// simulator nor the log's durable layer (eventlog/logfile), and builds
// without cgo.
func TestNoTPM(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	gocmd, err := exec.LookPath("go") // go test puts its own go first in PATH
	if err != nil {
		t.Fatal(err)
	}
	out, err := command(gocmd, nil, "list", "-deps", ".")
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, line := range bytes.Split(out, []byte("\n")) {
		switch p := string(line); {
		case p == "github.com/rimon-dev/rimon/tpm", bytes.HasPrefix(line, []byte("github.com/google/go-tpm-tools/simulator")),
			p == "github.com/rimon-dev/rimon/attest/agent", p == "github.com/rimon-dev/rimon/eventlog/logfile":
			t.Errorf("the verifier imports %s", p)
		}
	}
	if out, err := command(gocmd, []string{"CGO_ENABLED=0"}, "build", "."); err != nil {
		t.Errorf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
}

// command runs the go command here with env added to the environment.
func command(gocmd string, env []string, args ...string) ([]byte, error) {
	c := exec.Command(gocmd, args...)
	c.Env = append(os.Environ(), env...)
	return c.CombinedOutput()
}
