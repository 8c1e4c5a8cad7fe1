package enroll

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// akArea is a public area like rimon provision's AK, changed by mod.
func akArea(t *testing.T, mod func(*tpm2.TPMTPublic)) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
			Restricted: true, SignEncrypt: true, NoDA: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()}),
	}
	if mod != nil {
		mod(&pub)
	}
	return tpm2.Marshal(&pub)
}

func TestCheckAK(t *testing.T) {
	good := akArea(t, nil)
	ak, err := CheckAK(good, "")
	if err != nil {
		t.Fatalf("CheckAK(rimon's AK) = %v", err)
	}
	if _, err := CheckAK(good, hex.EncodeToString(ak.Name)); err != nil {
		t.Errorf("CheckAK with its own name: %v", err)
	}
	for _, tc := range []struct {
		name string
		pub  []byte
		want string
	}{
		{"not restricted", akArea(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false }), "want restricted"},
		{"not fixedTPM", akArea(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }), "want fixedTPM"},
		{"not fixedParent", akArea(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedParent = false }), "want fixedParent"},
		{"imported key", akArea(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false }), "sensitiveDataOrigin"},
		{"decryption key", akArea(t, func(p *tpm2.TPMTPublic) {
			p.ObjectAttributes.SignEncrypt, p.ObjectAttributes.Decrypt = false, true
		}), "want sign, not decrypt"},
		{"SHA-1 signatures", akArea(t, func(p *tpm2.TPMTPublic) {
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSASSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA1})},
				KeyBits: 2048})
		}), "signing hash"},
		{"trailing bytes", append(good, 0), "bytes after"},
		{"garbage", []byte{1, 2, 3}, "does not parse"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckAK(tc.pub, "")
			var ce *CheckError
			if !errors.As(err, &ce) || ce.Step != StepAK || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckAK = %v, want refused at %q with %q", err, StepAK, tc.want)
			}
		})
	}
	if _, err := CheckAK(good, "000b"+strings.Repeat("00", 32)); err == nil || !strings.Contains(err.Error(), "is not the public area's") {
		t.Errorf("CheckAK with a wrong name = %v", err)
	}
}

func TestCredentialFileRoundTrip(t *testing.T) {
	b, err := MarshalCredentialFile([]byte("id object"), []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	id, enc, err := ParseCredentialFile(b)
	if err != nil || string(id) != "id object" || string(enc) != "secret" {
		t.Errorf("round trip = %q, %q, %v", id, enc, err)
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(b, 0), b[4:], nil} {
		if _, _, err := ParseCredentialFile(bad); err == nil {
			t.Errorf("ParseCredentialFile(% x) accepted", bad)
		}
	}
}
