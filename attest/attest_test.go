package attest_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/policy"
	"github.com/rimon-dev/rimon/tpm"
)

// machine is a simulated attester: a TPM with an AK and a log.
type machine struct {
	t   *testing.T
	tpm *tpm.TPM
	ak  crypto.PublicKey
	log string
	w   *logfile.Writer
}

func newMachine(t *testing.T) *machine {
	ctx := context.Background()
	tp := testtpm.Open(t)
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	banks, err := tp.ActiveBanks(ctx, 23)
	if err != nil {
		t.Fatal(err)
	}
	m := &machine{t: t, tpm: tp, ak: ak.Key, log: filepath.Join(t.TempDir(), "m.log")}
	m.w, _, err = logfile.OpenWriter(ctx, m.log, tp, logfile.WriterOptions{Banks: banks.Active, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.w.Close() })
	return m
}

func digestOf(s string) string {
	d := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", d)
}

func (m *machine) measure(path, content string) {
	m.t.Helper()
	if _, err := m.w.Append(context.Background(), 23, eventlog.Event{Kind: "file", Path: path, SHA256: digestOf(content), Size: uint64(len(content)), Reason: "initial"}); err != nil {
		m.t.Fatal(err)
	}
}

func (m *machine) evidence(nonce []byte, banks ...crypto.Hash) *attest.Evidence {
	m.t.Helper()
	if len(banks) == 0 {
		banks = []crypto.Hash{crypto.SHA256}
	}
	ev, err := agent.Collect(context.Background(), m.tpm, m.log, nonce, []int{23}, banks)
	if err != nil {
		m.t.Fatal(err)
	}
	return ev
}

func verify(ev *attest.Evidence, o attest.Options) (*attest.Result, error) {
	vals, err := ev.Values()
	if err != nil {
		return nil, err
	}
	return attest.Verify(ev.Quote.Attest, ev.Quote.Signature, vals, bytes.NewReader(ev.Log), o)
}

var nonce = []byte("0123456789abcdef")

func TestTrustedThenUntrusted(t *testing.T) {
	m := newMachine(t)
	m.measure("/usr/bin/app", "v1")
	m.measure("/etc/app.conf", "conf")
	ref, err := policy.ParseReference("ref.yaml", strings.NewReader(fmt.Sprintf(
		"files:\n  /usr/bin/app: [%s]\n  /etc/*.conf: [%s]\nrequired: [/usr/bin/app]\n", digestOf("v1"), digestOf("conf"))))
	if err != nil {
		t.Fatal(err)
	}
	o := attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}, Reference: ref}
	res, err := verify(m.evidence(nonce), o)
	if err != nil || !res.Trusted || res.Covered != 2 {
		t.Fatalf("Verify = %+v, %v; want trusted over 2 records", res, err)
	}
	m.measure("/usr/bin/app", "v2-evil")
	res, err = verify(m.evidence(nonce), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Trusted || len(res.Failures) != 1 || res.Failures[0].Path != "/usr/bin/app" || res.Failures[0].SHA256 != digestOf("v2-evil") {
		t.Errorf("after a change: %+v; want untrusted naming /usr/bin/app", res)
	}
}

// TestAttacks: each attack is refused by the check that should catch it.
func TestAttacks(t *testing.T) {
	m := newMachine(t)
	for i := 0; i < 4; i++ {
		m.measure(fmt.Sprintf("/bin/f%d", i), fmt.Sprint(i))
	}
	good := m.evidence(nonce)
	okOpts := attest.QuoteOptions{AK: m.ak, Nonce: nonce}
	if _, err := verify(good, attest.Options{QuoteOptions: okOpts}); err != nil {
		t.Fatalf("the untouched evidence fails: %v", err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	records := splitLog(good.Log)
	join := func(rs ...[]byte) []byte { return bytes.Join(rs, nil) }
	edit := func(i int, from, to string) []byte {
		rs := append([][]byte(nil), records...)
		rs[i] = bytes.Replace(rs[i], []byte(from), []byte(to), 1)
		if bytes.Equal(rs[i], records[i]) {
			t.Fatalf("edit %q did not apply", from)
		}
		return join(rs...)
	}
	// A valid record an attacker could write: right digests, wrong place.
	forged := func() []byte {
		c, _ := eventlog.Event{Kind: "file", Path: "/bin/evil", SHA256: digestOf("x"), Reason: "initial"}.Content()
		r := eventlog.Record{RecNum: 2, HasRecNum: true, PCR: 23, ContentType: "rimon", Content: c, Digests: c.Digests([]crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512})}
		b, _ := r.Marshal()
		return b
	}()
	m2 := newMachineAfter(t, m)
	type tc struct {
		name  string
		ev    func() *attest.Evidence
		opts  attest.QuoteOptions
		check string
		text  string
	}
	with := func(f func(ev *attest.Evidence)) func() *attest.Evidence {
		return func() *attest.Evidence {
			ev := *good
			ev.Log = append([]byte(nil), good.Log...)
			f(&ev)
			return &ev
		}
	}
	cases := []tc{
		{"wrong_nonce", with(func(*attest.Evidence) {}), attest.QuoteOptions{AK: m.ak, Nonce: []byte("another nonce!!!")}, attest.CheckNonce, "is not the nonce"},
		{"replayed_old_evidence", func() *attest.Evidence { return good }, attest.QuoteOptions{AK: m.ak, Nonce: []byte("a fresh nonce...")}, attest.CheckNonce, "replayed"},
		{"signed_by_another_key", with(func(*attest.Evidence) {}), attest.QuoteOptions{AK: &other.PublicKey, Nonce: nonce}, attest.CheckSignature, "not signed by the pinned"},
		{"attest_byte_flipped", with(func(ev *attest.Evidence) {
			ev.Quote.Attest = append([]byte(nil), ev.Quote.Attest...)
			ev.Quote.Attest[len(ev.Quote.Attest)-1] ^= 1
		}), okOpts, attest.CheckSignature, "not signed"},
		{"edited_digest", with(func(ev *attest.Evidence) { ev.Log = edit(1, `"sha256":"`+digestOf("1")[:4], `"sha256":"0000`) }), okOpts, attest.CheckLog, "record 1"},
		{"edited_path", with(func(ev *attest.Evidence) { ev.Log = edit(2, "/bin/f2", "/bin/fX") }), okOpts, attest.CheckLog, "record 2"},
		{"edited_reason", with(func(ev *attest.Evidence) { ev.Log = edit(0, `"reason":"initial"`, `"reason":"launch"`) }), okOpts, attest.CheckLog, "record 0"},
		{"removed_record", with(func(ev *attest.Evidence) { ev.Log = join(records[0], records[2], records[3]) }), okOpts, attest.CheckLog, "no prefix"},
		{"reordered_records", with(func(ev *attest.Evidence) { ev.Log = join(records[0], records[2], records[1], records[3]) }), okOpts, attest.CheckLog, "no prefix"},
		{"inserted_record", with(func(ev *attest.Evidence) { ev.Log = join(records[0], records[1], forged, records[2], records[3]) }), okOpts, attest.CheckLog, "no prefix"},
		{"truncated_log", with(func(ev *attest.Evidence) { ev.Log = join(records[:3]...) }), okOpts, attest.CheckLog, "no prefix"},
		{"log_of_another_machine", with(func(ev *attest.Evidence) { ev.Log = m2 }), okOpts, attest.CheckLog, "no prefix"},
		{"pcr_values_altered", with(func(ev *attest.Evidence) {
			ev.PCRs = map[string]map[string]string{"sha256": {"23": strings.Repeat("ab", 32)}}
		}), okOpts, attest.CheckDigest, "were altered"},
		{"wrong_selection", with(func(*attest.Evidence) {}), attest.QuoteOptions{AK: m.ak, Nonce: nonce, PCRs: []int{16, 23}}, attest.CheckSelection, "the verifier asked for PCR 16,23"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := verify(c.ev(), attest.Options{QuoteOptions: c.opts})
			var ce *attest.CheckError
			if !errors.As(err, &ce) || ce.Check != c.check || !strings.Contains(err.Error(), c.text) || !errors.Is(err, attest.ErrInvalid) {
				t.Errorf("Verify = %v; want the %q check to fail with %q", err, c.check, c.text)
			}
		})
	}
	t.Run("sha1_only", func(t *testing.T) {
		ev := m.evidence(nonce, crypto.SHA1)
		_, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce, Banks: []crypto.Hash{crypto.SHA1}}})
		if err == nil || !strings.Contains(err.Error(), "only in the SHA-1 bank") {
			t.Errorf("SHA-1-only quote: %v, want a refusal", err)
		}
		if _, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce, Banks: []crypto.Hash{crypto.SHA1}, AllowSHA1: true}}); err != nil {
			t.Errorf("SHA-1-only quote with AllowSHA1: %v", err)
		}
	})
}

// newMachineAfter returns the log of a different attester (the simulator
// is one per process: a second log is built on a fresh writer state).
func newMachineAfter(t *testing.T, m *machine) []byte {
	var buf bytes.Buffer
	for i := 0; i < 4; i++ {
		c, _ := eventlog.Event{Kind: "file", Path: fmt.Sprintf("/bin/f%d", i), SHA256: digestOf("other" + fmt.Sprint(i)), Reason: "initial"}.Content()
		r := eventlog.Record{RecNum: uint64(i), HasRecNum: true, PCR: 23, ContentType: "rimon", Content: c, Digests: c.Digests([]crypto.Hash{crypto.SHA256})}
		b, _ := r.Marshal()
		buf.Write(b)
	}
	return buf.Bytes()
}

func splitLog(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		out = append(out, b[:i+1])
		b = b[i+1:]
	}
	return out
}

// TestTrailingRecordsAreNotTrusted appends after the quote: the verifier
// reports the extra record and never approves it; a record that the
// reference would approve leaves the verdict TRUSTED, one it would not
// (a crash leaves a written, unextended record only for a change that
// happened) makes it UNTRUSTED.
func TestTrailingRecordsAreNotTrusted(t *testing.T) {
	for _, tc := range []struct {
		name, path, content string
		trusted             bool
	}{
		{"approved", "/bin/a", "a", true},
		{"not_approved", "/bin/evil", "evil", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine(t)
			m.measure("/bin/a", "a")
			ev := m.evidence(nonce)
			m.measure(tc.path, tc.content)
			recs, _, _ := logfile.Snapshot(context.Background(), m.log)
			var all bytes.Buffer
			for i := range recs {
				b, _ := recs[i].Marshal()
				all.Write(b)
			}
			ev.Log = all.Bytes()
			ref, _ := policy.ParseReference("r.yaml", strings.NewReader("files:\n  /bin/a: ["+digestOf("a")+"]\n"))
			res, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}, Reference: ref})
			if err != nil || res.Trusted != tc.trusted || res.Covered != 1 || res.Trailing != 1 || res.Measured != 1 {
				t.Fatalf("Verify = %+v, %v; want trusted %v, 1 covered, 1 trailing, 1 measured", res, err, tc.trusted)
			}
			if !tc.trusted && (res.FailureTotal != 1 || res.Failures[0].Kind != attest.KindTrailing ||
				!strings.Contains(res.Failures[0].String(), "in the records after the quote, which it does not vouch for; the first: file /bin/evil: not listed")) {
				t.Errorf("failures %v; want one naming the trailing /bin/evil", res.Failures)
			}
		})
	}
}

// TestQuoteStructureChecks signs hand-made TPMS_ATTEST blobs with a key
// the test holds, to reach the checks behind the signature.
func TestQuoteStructureChecks(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	sign := func(attestBytes []byte) []byte {
		d := sha256.Sum256(attestBytes)
		s, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
		return tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
			&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s}})})
	}
	a := []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x17, 0, 0} // a certify, not a quote
	o := attest.QuoteOptions{AK: &key.PublicKey, Nonce: nonce}
	if _, err := attest.VerifyQuote(a, sign(a), nil, o); err == nil || !strings.Contains(err.Error(), "not TPM_ST_ATTEST_QUOTE") {
		t.Errorf("a certify structure: %v", err)
	}
	binary.BigEndian.PutUint32(a, 0xdeadbeef)
	if _, err := attest.VerifyQuote(a, sign(a), nil, o); err == nil || !strings.Contains(err.Error(), "TPM_GENERATED_VALUE") {
		t.Errorf("wrong magic: %v", err)
	}
	// Plain signature bytes are accepted too.
	d := sha256.Sum256(a)
	plain, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
	if _, err := attest.VerifyQuote(a, plain, nil, o); err == nil || !strings.Contains(err.Error(), "TPM_GENERATED_VALUE") {
		t.Errorf("plain signature did not get past the signature check: %v", err)
	}
}

// BenchmarkEvidenceEndpoint: 8 concurrent clients against the agent's
// handler on the simulator, with a log of 1,000 records and the rate and
// per-client limits lifted, to see what the endpoint can serve (quotes are
// taken one at a time).
func BenchmarkEvidenceEndpoint(b *testing.B) {
	ctx := context.Background()
	tp := testtpm.Open(b)
	if _, _, err := tp.ProvisionAK(ctx); err != nil {
		b.Fatal(err)
	}
	log := filepath.Join(b.TempDir(), "m.log")
	w, _, err := logfile.OpenWriter(ctx, log, tp, logfile.WriterOptions{Banks: []crypto.Hash{crypto.SHA256}, PCR: 23, BootID: "b"})
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		w.Append(ctx, 23, eventlog.Event{Kind: "file", Path: fmt.Sprintf("/bin/f%d", i), SHA256: digestOf(fmt.Sprint(i)), Reason: "initial"})
	}
	srv := httptest.NewServer(agent.Handler(agent.HandlerOptions{TPM: tp, LogPath: log, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256}, Rate: 1e6, PerClient: 8}))
	defer srv.Close()
	b.SetParallelism(4) // 4 x GOMAXPROCS(2) = 8 clients
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := attest.Fetch(ctx, srv.Client(), srv.URL, nonce); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "evidence/s")
}

// TestSignatureSchemes checks RSA-PSS and ECDSA quotes signed by software
// keys, and that a scheme/key mismatch is refused.
func TestSignatureSchemes(t *testing.T) {
	pcr := make([]byte, 32)
	pd := sha256.Sum256(pcr)
	a := tpm2.Marshal(&tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote, ExtraData: tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(23)}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: pd[:]},
		}),
	})
	d := sha256.Sum256(a)
	vals := map[eventlog.PCRKey][]byte{{PCR: 23, Bank: crypto.SHA256}: pcr}

	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ps, _ := rsa.SignPSS(rand.Reader, rk, crypto.SHA256, d[:], nil)
	pss := tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSAPSS, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSAPSS,
		&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: ps}})})
	if _, err := attest.VerifyQuote(a, pss, vals, attest.QuoteOptions{AK: &rk.PublicKey, Nonce: nonce}); err != nil {
		t.Errorf("RSA-PSS quote: %v", err)
	}

	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r, s, _ := ecdsa.Sign(rand.Reader, ek, d[:])
	ec := tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
		&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.Bytes()}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s.Bytes()}})})
	if _, err := attest.VerifyQuote(a, ec, vals, attest.QuoteOptions{AK: &ek.PublicKey, Nonce: nonce}); err != nil {
		t.Errorf("ECDSA quote: %v", err)
	}
	if _, err := attest.VerifyQuote(a, ec, vals, attest.QuoteOptions{AK: &rk.PublicKey, Nonce: nonce}); err == nil || !strings.Contains(err.Error(), "attestation key is") {
		t.Errorf("ECDSA signature with an RSA key: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := attest.VerifyQuote(a, ec, vals, attest.QuoteOptions{AK: &other.PublicKey, Nonce: nonce}); err == nil {
		t.Error("ECDSA quote verified with another key")
	}
}
