package attest_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/policy"
	"github.com/rimon-dev/rimon/tpm"
)

// rawMachine writes records of any content itself, extends them into the
// TPM, and quotes: the records the writer does not make yet (unmeasured)
// are written as docs/FORMAT.md specifies them.
type rawMachine struct {
	t     *testing.T
	tpm   *tpm.TPM
	ak    crypto.PublicKey
	banks []crypto.Hash
	log   string
	n     uint64
}

func newRawMachine(t *testing.T) *rawMachine {
	t.Helper()
	ctx := context.Background()
	tp := testtpm.Open(t)
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tp.ActiveBanks(ctx, 23)
	if err != nil {
		t.Fatal(err)
	}
	m := &rawMachine{t: t, tpm: tp, ak: ak.Key, banks: b.Active, log: filepath.Join(t.TempDir(), "m.log")}
	if err := os.WriteFile(m.log, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// add appends a rimon record with the given fields on pcr and extends it.
func (m *rawMachine) add(pcr int, fields ...eventlog.Field) {
	m.t.Helper()
	c, err := eventlog.NewContent(fields...)
	if err != nil {
		m.t.Fatal(err)
	}
	r := eventlog.Record{RecNum: m.n, HasRecNum: true, PCR: pcr, ContentType: eventlog.ContentTypeRimon, Content: c, Digests: c.Digests(m.banks)}
	b, err := r.Marshal()
	if err != nil {
		m.t.Fatal(err)
	}
	f, err := os.OpenFile(m.log, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		m.t.Fatal(err)
	}
	d := map[crypto.Hash][]byte{}
	for _, x := range r.Digests {
		d[x.Alg] = x.Value
	}
	if err := m.tpm.ExtendPCR(context.Background(), pcr, d); err != nil {
		m.t.Fatal(err)
	}
	m.n++
}

func str(k, v string) eventlog.Field { return eventlog.Field{Key: k, Str: v} }

func (m *rawMachine) file(path, content string) {
	m.add(23, str("kind", "file"), str("path", path), str("reason", "changed"), str("sha256", digestOf(content)),
		eventlog.Field{Key: "size", Num: uint64(len(content)), IsNum: true})
}

func (m *rawMachine) unmeasured(pathField, path, cause string) {
	m.add(23, str("kind", "unmeasured"), str(pathField, path), str("reason", "changed"), str("cause", cause), str("error", "it went wrong"))
}

func (m *rawMachine) verify(ref *policy.Reference, banks ...crypto.Hash) (*attest.Result, error) {
	m.t.Helper()
	if len(banks) == 0 {
		banks = m.banks
	}
	ev, err := agent.Collect(context.Background(), m.tpm, m.log, nonce, []int{23}, banks)
	if err != nil {
		m.t.Fatal(err)
	}
	return verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}, Reference: ref})
}

func mustRef(t *testing.T, yaml string) *policy.Reference {
	t.Helper()
	ref, err := policy.ParseReference("ref.yaml", strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func problems(fs []attest.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}

// TestEveryQuotedBankMustReplay: a quote whose SHA-1 PCR 23 disagrees with
// the log is invalid even though SHA-256 agrees; quoting SHA-256 alone is
// then valid, since the log vouches for that bank.
func TestEveryQuotedBankMustReplay(t *testing.T) {
	m := newRawMachine(t)
	m.file("/bin/app", "v1")
	if err := m.tpm.ExtendPCR(context.Background(), 23, map[crypto.Hash][]byte{crypto.SHA1: bytes.Repeat([]byte{7}, 20)}); err != nil {
		t.Fatal(err)
	}
	for _, withValues := range []bool{true, false} {
		ev, err := agent.Collect(context.Background(), m.tpm, m.log, nonce, []int{23}, []crypto.Hash{crypto.SHA1, crypto.SHA256})
		if err != nil {
			t.Fatal(err)
		}
		vals, _ := ev.Values()
		if !withValues {
			vals = nil
		}
		_, err = attest.Verify(ev.Quote.Attest, ev.Quote.Signature, vals, bytes.NewReader(ev.Log), attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}})
		var ce *attest.CheckError
		if !errors.As(err, &ce) || ce.Check != attest.CheckLog {
			t.Fatalf("values %v: Verify = %v; want the log replay check to fail", withValues, err)
		}
		if withValues && (!strings.Contains(err.Error(), "sha1:23: the log replays to") || !strings.Contains(err.Error(), "sha256:23 agree, but every quoted bank must")) {
			t.Errorf("Verify = %v; want it to name sha1:23 as the bank that disagrees", err)
		}
	}
	if _, err := m.verify(nil, crypto.SHA256); err != nil {
		t.Errorf("sha256 alone: %v", err)
	}
}

// TestDefaultBanks: with no banks asked for, a quote of any banks verifies
// when each PCR is in a bank stronger than SHA-1; banks asked for are
// required; SHA-1 alone is refused.
func TestDefaultBanks(t *testing.T) {
	m := newRawMachine(t)
	m.file("/bin/app", "v1")
	s1, s256, s384, s512 := crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512
	for _, tc := range []struct {
		quote, ask []crypto.Hash
		allowSHA1  bool
		want       string // "" valid
	}{
		{quote: []crypto.Hash{s1, s256, s384, s512}},
		{quote: []crypto.Hash{s1, s256}},
		{quote: []crypto.Hash{s256}},
		{quote: []crypto.Hash{s384}},
		{quote: []crypto.Hash{s1, s256, s384, s512}, ask: []crypto.Hash{s256}},
		{quote: []crypto.Hash{s1, s256}, ask: []crypto.Hash{s1, s256}},
		{quote: []crypto.Hash{s1}, want: "covers PCR 23 only in the SHA-1 bank, which is too weak (--allow-sha1 accepts it"},
		{quote: []crypto.Hash{s1}, allowSHA1: true},
		{quote: []crypto.Hash{s1, s256}, ask: []crypto.Hash{s384}, want: "the quote covers sha1:23+sha256:23, the verifier asked for sha384:23 (--bank), and sha384:23 is missing"},
		{quote: []crypto.Hash{s256}, ask: []crypto.Hash{s256, s512}, want: "sha512:23 is missing"},
	} {
		t.Run(fmt.Sprintf("%v_ask%v_sha1%v", bankNames(tc.quote), bankNames(tc.ask), tc.allowSHA1), func(t *testing.T) {
			ev, err := agent.Collect(context.Background(), m.tpm, m.log, nonce, []int{23}, tc.quote)
			if err != nil {
				t.Fatal(err)
			}
			res, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce, Banks: tc.ask, AllowSHA1: tc.allowSHA1}})
			switch {
			case tc.want == "" && (err != nil || !res.Trusted || res.Covered != 1 || len(res.PCRs) != len(tc.quote)):
				t.Errorf("Verify = %+v, %v; want trusted over every quoted bank", res, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Verify = %v; want %q", err, tc.want)
			}
		})
	}
}

func bankNames(hs []crypto.Hash) string {
	var s []string
	for _, h := range hs {
		s = append(s, eventlog.BankName(h))
	}
	return strings.Join(s, "+")
}
