package enroll

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm/tpm2"
)

// SecretSize is the size of the secret [Enroll] makes for each
// activation: a fresh random SHA-256-sized value.
const SecretSize = 32

// MakeCredential runs TPM2_MakeCredential in software (TPM 2.0 Part 1,
// 24.4): it seals secret to the TPM whose EK is ek, for the object whose
// name is akName. RSA EKs wrap the seed with RSA-OAEP and the label
// "IDENTITY", ECC EKs with ECDH (go-tpm's labeled encapsulation). It
// returns the TPMS_ID_OBJECT (the contents of a TPM2B_ID_OBJECT) and the
// encrypted seed (of a TPM2B_ENCRYPTED_SECRET). rand supplies the seed:
// crypto/rand.Reader outside tests.
func MakeCredential(rand io.Reader, ek *tpm2.TPMTPublic, akName, secret []byte) (idObject, encSecret []byte, err error) {
	if len(secret) == 0 || len(secret) > 64 {
		return nil, nil, fmt.Errorf("make credential: a secret of %d bytes (want 1 to 64)", len(secret))
	}
	if len(akName) < 2 {
		return nil, nil, errors.New("make credential: empty AK name")
	}
	key, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return nil, nil, fmt.Errorf("make credential: EK: %w", err)
	}
	return tpm2.CreateCredential(rand, key, akName, secret)
}

// DefaultEKPublic returns the EK public area that the TCG default
// template for key's type and size gives (TCG EK Credential Profile 2.5,
// section 2.2.1.5): name algorithm, symmetric algorithm and attributes,
// with key as the unique field. It is what [MakeCredential] needs when
// only a key or certificate is known (as tpm2_makecredential -G does):
// RSA 2048 and ECC P-256 get the low-range templates (SHA-256, AES-128),
// ECC P-384 and RSA 3072 the high-range ones (SHA-384, AES-256), ECC P-521
// SHA-512 and AES-256.
func DefaultEKPublic(key crypto.PublicKey) (*tpm2.TPMTPublic, error) {
	type tmpl struct {
		nameAlg tpm2.TPMAlgID
		aesBits tpm2.TPMKeyBits
		high    bool
	}
	var t tmpl
	switch k := key.(type) {
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			t = tmpl{tpm2.TPMAlgSHA256, 128, false}
		case 3072, 4096:
			t = tmpl{tpm2.TPMAlgSHA384, 256, true}
		default:
			return nil, fmt.Errorf("RSA EK of %d bits: no TCG template", k.N.BitLen())
		}
		pub := tpm2.RSAEKTemplate
		pub.NameAlg = t.nameAlg
		if t.high {
			pub.ObjectAttributes.UserWithAuth = true
		}
		exp := uint32(k.E)
		if k.E == 65537 {
			exp = 0 // the default, as the template has it
		}
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: symDef(t.aesBits),
			KeyBits:   tpm2.TPMKeyBits(k.N.BitLen()),
			Exponent:  exp,
		})
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()})
		return &pub, nil
	case *ecdsa.PublicKey:
		var curve tpm2.TPMECCCurve
		switch k.Curve {
		case elliptic.P256():
			t, curve = tmpl{tpm2.TPMAlgSHA256, 128, false}, tpm2.TPMECCNistP256
		case elliptic.P384():
			t, curve = tmpl{tpm2.TPMAlgSHA384, 256, true}, tpm2.TPMECCNistP384
		case elliptic.P521():
			t, curve = tmpl{tpm2.TPMAlgSHA512, 256, true}, tpm2.TPMECCNistP521
		default:
			return nil, fmt.Errorf("ECC EK on curve %s: no TCG template", k.Curve.Params().Name)
		}
		pub := tpm2.ECCEKTemplate
		pub.NameAlg = t.nameAlg
		if t.high {
			pub.ObjectAttributes.UserWithAuth = true
		}
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: symDef(t.aesBits),
			CurveID:   curve,
		})
		pt, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			return nil, fmt.Errorf("ECC EK: %w", err)
		}
		size := (len(pt) - 1) / 2
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: pt[1 : 1+size]},
			Y: tpm2.TPM2BECCParameter{Buffer: pt[1+size:]},
		})
		return &pub, nil
	}
	return nil, fmt.Errorf("EK of type %T: want RSA or ECDSA", key)
}

func symDef(bits tpm2.TPMKeyBits) tpm2.TPMTSymDefObject {
	return tpm2.TPMTSymDefObject{
		Algorithm: tpm2.TPMAlgAES,
		KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, bits),
		Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB),
	}
}

// SameKey reports whether a and b are the same RSA or ECDSA public key.
func SameKey(a, b crypto.PublicKey) bool {
	switch x := a.(type) {
	case *rsa.PublicKey:
		return x.Equal(b)
	case *ecdsa.PublicKey:
		return x.Equal(b)
	}
	return false
}

// tpm2-tools' credential file (tpm2_makecredential -o,
// tpm2_activatecredential -i): a header (magic 0xBADCC0DE, version 1,
// both 32-bit big-endian), then the TPM2B_ID_OBJECT and the
// TPM2B_ENCRYPTED_SECRET, each a 16-bit big-endian size and its bytes.
const (
	credMagic   = 0xBADCC0DE
	credVersion = 1
)

// MarshalCredentialFile writes idObject and encSecret in tpm2-tools'
// credential file format.
func MarshalCredentialFile(idObject, encSecret []byte) ([]byte, error) {
	if len(idObject) > 0xffff || len(encSecret) > 0xffff {
		return nil, errors.New("credential too large")
	}
	b := binary.BigEndian.AppendUint32(nil, credMagic)
	b = binary.BigEndian.AppendUint32(b, credVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(idObject)))
	b = append(b, idObject...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(encSecret)))
	return append(b, encSecret...), nil
}

// ParseCredentialFile reads tpm2-tools' credential file format.
func ParseCredentialFile(b []byte) (idObject, encSecret []byte, err error) {
	if len(b) < 12 || binary.BigEndian.Uint32(b) != credMagic {
		return nil, nil, errors.New("credential file: no tpm2-tools header (magic 0xBADCC0DE)")
	}
	if v := binary.BigEndian.Uint32(b[4:]); v != credVersion {
		return nil, nil, fmt.Errorf("credential file: version %d (want 1)", v)
	}
	rest := b[8:]
	read := func(what string) ([]byte, error) {
		if len(rest) < 2 {
			return nil, fmt.Errorf("credential file: %s: truncated size", what)
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n {
			return nil, fmt.Errorf("credential file: %s of %d bytes, %d left", what, n, len(rest)-2)
		}
		v := rest[2 : 2+n]
		rest = rest[2+n:]
		return v, nil
	}
	if idObject, err = read("credential"); err != nil {
		return nil, nil, err
	}
	if encSecret, err = read("encrypted secret"); err != nil {
		return nil, nil, err
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("credential file: %d bytes after the encrypted secret", len(rest))
	}
	return idObject, encSecret, nil
}

// keyType names a key's type and size ("RSA 2048", "ECC P-384").
func keyType(k crypto.PublicKey) string {
	switch x := k.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", x.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECC " + x.Curve.Params().Name
	}
	return fmt.Sprintf("%T", k)
}
