package enroll

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// FuzzParseIdentity: a document that parses encodes to JSON that parses
// to the same document, and CheckAK never panics on what it holds.
func FuzzParseIdentity(f *testing.F) {
	der, _ := os.ReadFile("testdata/ek/keylime-tests/st_rsa_ek_padded.der")
	id := Identity{Version: 1, EKs: []EKInfo{{NVIndex: 0x01C00002, Certificate: der, Public: []byte{0, 1}}},
		AK: AKInfo{Handle: 0x81000003, Public: []byte{0, 1, 0, 0xb}, Name: "000b00"}}
	seed, _ := json.Marshal(id)
	f.Add(seed)
	f.Add([]byte(`{"version":1,"eks":[],"ak":{"handle":1,"public":"AA==","name":"00"}}`))
	f.Add([]byte(`{"version":1,"ak":{"public":"AA==","name":"00"},"extra":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseIdentity(b)
		if err != nil {
			return
		}
		again, err := id.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		id2, err := ParseIdentity(again)
		if err != nil {
			t.Fatalf("re-encoded identity does not parse: %v", err)
		}
		again2, _ := id2.Marshal()
		if !bytes.Equal(again, again2) {
			t.Fatalf("identity round trip differs:\n%s\n%s", again, again2)
		}
		CheckAK(id.AK.Public, id.AK.Name)
		for _, ek := range id.EKs {
			ParseEKCert(ek.Certificate)
		}
		for _, c := range id.AKCerts {
			ParseCertificates(c.Certificate)
		}
	})
}

// FuzzActivation: requests, responses and tpm2-tools credential files
// that parse survive a round trip.
func FuzzActivation(f *testing.F) {
	f.Add([]byte(`{"nv_index":29360130,"credential":"AAAAAA==","secret":"AAAA"}`))
	f.Add([]byte(`{"secret":"AAAA"}`))
	cf, _ := MarshalCredentialFile([]byte("0123"), []byte("abc"))
	f.Add(cf)
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := ParseActivationRequest(b); err == nil {
			again, _ := json.Marshal(r)
			r2, err := ParseActivationRequest(again)
			if err != nil || r2.NVIndex != r.NVIndex || !bytes.Equal(r2.Credential, r.Credential) || !bytes.Equal(r2.Secret, r.Secret) {
				t.Fatalf("activation request round trip: %v", err)
			}
		}
		if r, err := ParseActivationResponse(b); err == nil {
			again, _ := json.Marshal(r)
			if r2, err := ParseActivationResponse(again); err != nil || !bytes.Equal(r2.Secret, r.Secret) {
				t.Fatalf("activation response round trip: %v", err)
			}
		}
		if id, enc, err := ParseCredentialFile(b); err == nil {
			again, err := MarshalCredentialFile(id, enc)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("credential file round trip: %v", err)
			}
		}
	})
}

// FuzzParseEKCert: the lenient parser never panics, and what it accepts
// keeps the bytes it was given (after header and padding).
func FuzzParseEKCert(f *testing.F) {
	for _, p := range []string{"testdata/ek/keylime-tests/st_rsa_ek_padded.der", "testdata/ek/keylime-tests/st_ecc_ek.der"} {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ek, err := ParseEKCert(b)
		if err != nil {
			return
		}
		if !bytes.Contains(b, ek.Cert.Raw) {
			t.Fatal("the certificate's Raw is not part of the input")
		}
	})
}
