package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
)

func FuzzParseEvidence(f *testing.F) {
	f.Add([]byte("\x1e" + `{"version":1,"nonce":"00","quote":{"attest":"AQI=","signature":"AQI="},"pcrs":{"sha256":{"23":"` + string(bytes.Repeat([]byte("00"), 32)) + `"}}}` + "\n\x1e{}\n"))
	f.Add([]byte("\x1e{\"version\":2}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseEvidence(bytes.NewReader(b))
		if err != nil {
			return
		}
		out, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseEvidence(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("re-parse of marshalled evidence: %v", err)
		}
		if !bytes.Equal(again.Quote.Attest, ev.Quote.Attest) || !bytes.Equal(again.Log, ev.Log) {
			t.Fatal("evidence changed across a round trip")
		}
	})
}

var fuzzKey, _ = rsa.GenerateKey(rand.Reader, 1024)

var fuzzECKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

// FuzzVerifyQuote feeds arbitrary TPMS_ATTEST and TPMT_SIGNATURE bytes:
// nothing may panic, and nothing unsigned may pass.
func FuzzVerifyQuote(f *testing.F) {
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0x00, 0x14, 0x00, 0x0b, 0x00, 0x00})
	f.Add([]byte{}, []byte{0x00, 0x18, 0x00, 0x0b, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00})
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01}) // plain DER ECDSA
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, make([]byte, 64))                                       // plain r||s
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		for _, ak := range []any{&fuzzKey.PublicKey, &fuzzECKey.PublicKey} {
			q, err := VerifyQuote(attest, sig, map[eventlog.PCRKey][]byte{}, QuoteOptions{AK: ak, Nonce: []byte("nonce")})
			if err == nil || q != nil {
				t.Fatalf("random bytes verified with a %T: %x %x", ak, attest, sig)
			}
		}
	})
}

func FuzzParsePCRsFile(f *testing.F) {
	f.Add(make([]byte, pcrSelSize+4))
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, err := ParsePCRsFile(b)
		if err != nil {
			return
		}
		for k, v := range vals {
			if len(v) != k.Bank.Size() {
				t.Fatalf("%s value of %d bytes accepted", k, len(v))
			}
		}
	})
}
