package attest

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/eventlog"
)

// bigEvidence writes evidence with n records, quoted by a software key
// standing in for a TPM, and returns its path and the key's PEM path.
func bigEvidence(tb testing.TB, dir string, n int, nonce []byte) (string, string) {
	var log bytes.Buffer
	st := eventlog.NewState([]crypto.Hash{crypto.SHA256})
	for i := 0; i < n; i++ {
		c, err := eventlog.Event{Kind: "file", Path: fmt.Sprintf("/usr/lib/x86_64-linux-gnu/libexample-%d.so.1", i),
			SHA256: fmt.Sprintf("%064x", i), Size: uint64(i), Reason: "initial", Time: "2026-11-26T17:50:43.836525411Z", BootID: "b"}.Content()
		if err != nil {
			tb.Fatal(err)
		}
		r := eventlog.Record{RecNum: uint64(i), HasRecNum: true, PCR: 23, ContentType: "rimon", Content: c, Digests: c.Digests([]crypto.Hash{crypto.SHA256})}
		b, _ := r.Marshal()
		log.Write(b)
		if err := st.Apply(&r); err != nil {
			tb.Fatal(err)
		}
	}
	pcr := st.Value(23, crypto.SHA256)
	pd := sha256.Sum256(pcr)
	a := tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(23)}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: pd[:]},
		}),
	}
	ab := tpm2.Marshal(&a)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	d := sha256.Sum256(ab)
	s, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
	sig := tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
		&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s}})})
	ev := Evidence{Version: 1, Quote: QuoteBlob{Attest: ab, Signature: sig}, Log: log.Bytes()}
	ev.SetValues(map[eventlog.PCRKey][]byte{{PCR: 23, Bank: crypto.SHA256}: pcr})
	b, err := ev.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	evPath, akPath := filepath.Join(dir, "evidence"), filepath.Join(dir, "ak.pem")
	pem, _ := PublicKeyPEM(&key.PublicKey)
	if err := os.WriteFile(evPath, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	os.WriteFile(akPath, pem, 0o644)
	return evPath, akPath
}

// TestWriteBigEvidence writes a 1,000,000-record evidence file for
// bench/verify.sh when RIMON_BIG_EVIDENCE names a directory.
func TestWriteBigEvidence(t *testing.T) {
	dir := os.Getenv("RIMON_BIG_EVIDENCE")
	if dir == "" {
		t.Skip("set RIMON_BIG_EVIDENCE=DIR to write the benchmark's evidence")
	}
	bigEvidence(t, dir, 1_000_000, []byte("0123456789abcdef"))
}

// BenchmarkVerify verifies evidence whose log holds 100,000 records.
func BenchmarkVerify(b *testing.B) {
	nonce := []byte("0123456789abcdef")
	evPath, akPath := bigEvidence(b, b.TempDir(), 100_000, nonce)
	pemb, _ := os.ReadFile(akPath)
	ak, _ := ParsePublicKey(pemb)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f, _ := os.Open(evPath)
		ev, rest, err := OpenEvidence(bufio.NewReader(f))
		if err != nil {
			b.Fatal(err)
		}
		vals, _ := ev.Values()
		res, err := Verify(ev.Quote.Attest, ev.Quote.Signature, vals, rest, Options{QuoteOptions: QuoteOptions{AK: ak, Nonce: nonce}})
		f.Close()
		if err != nil || res.Covered != 100_000 {
			b.Fatalf("Verify = %+v, %v", res, err)
		}
	}
	b.ReportMetric(float64(100_000*b.N)/b.Elapsed().Seconds(), "records/s")
}
