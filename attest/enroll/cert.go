package enroll

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Object identifiers of the TCG EK Credential Profile (section 3.2) and
// RFC 5280.
var (
	// OIDEKCertificate is the TCG extended key usage tcg-kp-EKCertificate.
	OIDEKCertificate   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidSubjectAltName  = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTPMManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
)

// ErrNotEKCert means a certificate is not an EK certificate (a CA
// certificate, a signing key's certificate, a TLS certificate...).
var ErrNotEKCert = errors.New("not an EK certificate")

// EKCert is a parsed EK certificate. Nothing in it is trusted until
// [CAPool.VerifyEK] has checked its chain.
type EKCert struct {
	// Cert is the certificate. Its Raw and RawTBSCertificate are the bytes
	// the issuer signed, also when [EKCert.Repairs] lists a repair.
	Cert *x509.Certificate
	// Manufacturer, Model and Version are the TPM attributes of the
	// subject alternative name's directoryName ("id:53544D20" ...).
	Manufacturer, Model, Version string
	// EKUsage says the certificate carries the TCG extended key usage
	// tcg-kp-EKCertificate (2.23.133.8.1).
	EKUsage bool
	// Repairs lists what was done to parse the certificate: "NV header"
	// (the TCG PC Client 10 01 00 LEN prefix), "trailing bytes" (padding
	// after the DER), "serial number" (negative, or not minimally
	// encoded, which Go's parser refuses).
	Repairs []string
}

// ParseEKCert parses what an EK certificate NV index holds, dealing with
// what real TPMs store:
//
//   - the header of TCG PC Client Platform TPM Profile section 7.3.2
//     (0x10 0x01 0x00, then a 16-bit length), which is stripped;
//   - bytes after the DER (some ST certificates are padded with 0xFF to
//     the size of the index), which are cut off;
//   - a serial number Go's parser refuses (negative, as RFC 5280 forbids
//     but some vendors issued, or with leading zero bytes): the
//     certificate is parsed from a copy with the serial re-encoded, then
//     given back its original bytes, so that the signature is checked
//     over what the issuer signed and the serial is the real one;
//   - a critical subject alternative name holding only a directoryName
//     with the TPM's manufacturer, model and version, which Go's
//     verifier would refuse as an "unhandled critical extension": it is
//     parsed here and marked handled.
//
// It refuses what is not an EK certificate ([ErrNotEKCert]): a CA
// certificate, a key that is neither RSA nor ECDSA, a certificate whose
// key usage is for signing only, or whose extended key usage names other
// purposes without tcg-kp-EKCertificate, and one with neither that usage
// nor TPM attributes in its subject alternative name.
func ParseEKCert(raw []byte) (*EKCert, error) {
	c, repairs, err := parseLenient(raw)
	if err != nil {
		return nil, err
	}
	ek := &EKCert{Cert: c, Repairs: repairs}
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidSubjectAltName) {
			continue
		}
		attrs, onlyDir, err := parseSANDirectoryName(e.Value)
		if err != nil {
			return nil, fmt.Errorf("EK certificate: subject alternative name: %w", err)
		}
		ek.Manufacturer, ek.Model, ek.Version = attrs[oidTPMManufacturer.String()], attrs[oidTPMModel.String()], attrs[oidTPMVersion.String()]
		if onlyDir && e.Critical {
			// Parsed here: the verifier need not refuse it.
			c.UnhandledCriticalExtensions = slices.DeleteFunc(c.UnhandledCriticalExtensions,
				func(o asn1.ObjectIdentifier) bool { return o.Equal(oidSubjectAltName) })
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		if o.Equal(OIDEKCertificate) {
			ek.EKUsage = true
		}
	}
	if err := ek.check(); err != nil {
		return nil, err
	}
	return ek, nil
}

func (ek *EKCert) check() error {
	c := ek.Cert
	if c.IsCA || c.KeyUsage&x509.KeyUsageCertSign != 0 {
		return fmt.Errorf("%w: %q is a CA certificate", ErrNotEKCert, name(c))
	}
	switch c.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return fmt.Errorf("%w: %q certifies a %T key (EKs are RSA or ECC)", ErrNotEKCert, name(c), c.PublicKey)
	}
	if c.KeyUsage != 0 && c.KeyUsage&(x509.KeyUsageKeyEncipherment|x509.KeyUsageKeyAgreement|x509.KeyUsageDataEncipherment) == 0 {
		return fmt.Errorf("%w: %q: its key usage allows neither key encipherment nor key agreement (a signing key's certificate?)", ErrNotEKCert, name(c))
	}
	if (len(c.ExtKeyUsage) > 0 || len(c.UnknownExtKeyUsage) > 0) && !ek.EKUsage && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return fmt.Errorf("%w: %q: its extended key usage does not include tcg-kp-EKCertificate (2.23.133.8.1)", ErrNotEKCert, name(c))
	}
	if !ek.EKUsage && ek.Manufacturer == "" {
		return fmt.Errorf("%w: %q has neither the TCG EK extended key usage (2.23.133.8.1) nor a TPM manufacturer in its subject alternative name", ErrNotEKCert, name(c))
	}
	return nil
}

// name describes a certificate in messages.
func name(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return s
	}
	return "serial " + c.SerialNumber.String() + " from " + c.Issuer.String()
}

// parseLenient parses one certificate as ParseEKCert describes (header,
// trailing bytes, serial), for EK and CA certificates alike.
func parseLenient(raw []byte) (*x509.Certificate, []string, error) {
	var repairs []string
	if len(raw) > 5 && bytes.Equal(raw[:3], []byte{0x10, 0x01, 0x00}) {
		n := int(binary.BigEndian.Uint16(raw[3:5]))
		if len(raw) < 5+n {
			return nil, nil, fmt.Errorf("certificate: the NV header says %d bytes, %d follow", n, len(raw)-5)
		}
		raw = raw[5 : 5+n]
		repairs = append(repairs, "NV header")
	}
	s := cryptobyte.String(raw)
	var whole cryptobyte.String
	if !s.ReadASN1Element(&whole, cbasn1.SEQUENCE) {
		return nil, nil, errors.New("certificate: not a DER SEQUENCE (neither DER nor an NV header with DER)")
	}
	if len(s) > 0 {
		repairs = append(repairs, "trailing bytes")
	}
	der := []byte(whole)
	c, err := x509.ParseCertificate(der)
	if err == nil {
		return c, repairs, nil
	}
	fixed, tbs, serial, ok := reencodeSerial(der)
	if !ok {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	c, err2 := x509.ParseCertificate(fixed)
	if err2 != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	// Give it back what the issuer signed, and its real serial.
	c.Raw, c.RawTBSCertificate, c.SerialNumber = der, tbs, serial
	return c, append(repairs, "serial number"), nil
}

// reencodeSerial rewrites the serial number of a certificate as a
// minimal, positive INTEGER (its magnitude). It returns the rewritten
// certificate, the original TBSCertificate and the original serial, or
// false when the serial needed no rewriting or the DER does not have the
// shape of a certificate.
func reencodeSerial(der []byte) (fixed, tbs []byte, serial *big.Int, ok bool) {
	in := cryptobyte.String(der)
	var cert, tbsEl cryptobyte.String
	if !in.ReadASN1(&cert, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, nil, nil, false
	}
	rest := cert
	if !rest.ReadASN1Element(&tbsEl, cbasn1.SEQUENCE) {
		return nil, nil, nil, false
	}
	tail := []byte(rest) // signatureAlgorithm and signatureValue
	t := tbsEl
	var body cryptobyte.String
	if !t.ReadASN1(&body, cbasn1.SEQUENCE) {
		return nil, nil, nil, false
	}
	var version cryptobyte.String
	var hasVersion bool
	if !body.ReadOptionalASN1(&version, &hasVersion, cbasn1.Tag(0).Constructed().ContextSpecific()) {
		return nil, nil, nil, false
	}
	var serialBytes cryptobyte.String
	if !body.ReadASN1(&serialBytes, cbasn1.INTEGER) || len(serialBytes) == 0 {
		return nil, nil, nil, false
	}
	sb := []byte(serialBytes)
	minimal := len(sb) == 1 || !(sb[0] == 0 && sb[1]&0x80 == 0 || sb[0] == 0xff && sb[1]&0x80 != 0)
	negative := sb[0]&0x80 != 0
	if minimal && !negative {
		return nil, nil, nil, false
	}
	serial = new(big.Int).SetBytes(sb)
	if negative {
		// Two's complement: value = bytes - 2^(8n).
		serial.Sub(serial, new(big.Int).Lsh(big.NewInt(1), uint(8*len(sb))))
	}
	mag := new(big.Int).Abs(serial)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			if hasVersion {
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(version) })
			}
			b.AddASN1BigInt(mag)
			b.AddBytes(body)
		})
		b.AddBytes(tail)
	})
	fixed, err := b.Bytes()
	if err != nil {
		return nil, nil, nil, false
	}
	return fixed, []byte(tbsEl), serial, true
}

// parseSANDirectoryName reads a SubjectAltName extension's value and
// returns the attributes of its directoryNames by OID, and whether it
// holds directoryNames only.
func parseSANDirectoryName(v []byte) (attrs map[string]string, onlyDir bool, err error) {
	s := cryptobyte.String(v)
	var names cryptobyte.String
	if !s.ReadASN1(&names, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, false, errors.New("not a GeneralNames SEQUENCE")
	}
	attrs = map[string]string{}
	onlyDir = true
	for !names.Empty() {
		var gn cryptobyte.String
		var tag cbasn1.Tag
		if !names.ReadAnyASN1(&gn, &tag) {
			return nil, false, errors.New("malformed GeneralName")
		}
		if tag != cbasn1.Tag(4).Constructed().ContextSpecific() {
			onlyDir = false
			continue
		}
		// Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue).
		var rdns cryptobyte.String
		if !gn.ReadASN1(&rdns, cbasn1.SEQUENCE) {
			return nil, false, errors.New("malformed directoryName")
		}
		for !rdns.Empty() {
			var set cryptobyte.String
			if !rdns.ReadASN1(&set, cbasn1.SET) {
				return nil, false, errors.New("malformed directoryName RDN")
			}
			for !set.Empty() {
				var atv cryptobyte.String
				var oid asn1.ObjectIdentifier
				var val cryptobyte.String
				var vtag cbasn1.Tag
				if !set.ReadASN1(&atv, cbasn1.SEQUENCE) || !atv.ReadASN1ObjectIdentifier(&oid) || !atv.ReadAnyASN1(&val, &vtag) {
					return nil, false, errors.New("malformed directoryName attribute")
				}
				attrs[oid.String()] = string(val)
			}
		}
	}
	return attrs, onlyDir, nil
}
