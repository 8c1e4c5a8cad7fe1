package enroll

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// pinned is when the real certificates are checked: all of them are
// valid then (the ST EK certificates expire in July 2028).
var pinned = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func readTestdata(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "ek", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func pemDER(t *testing.T, rel string) []byte {
	t.Helper()
	blk, _ := pem.Decode(readTestdata(t, rel))
	if blk == nil {
		t.Fatalf("%s: no PEM", rel)
	}
	return blk.Bytes
}

func TestParseEKCertRealVendors(t *testing.T) {
	for _, tc := range []struct {
		file          string
		der           bool
		ca            []string
		manufacturer  string
		repairs       []string
		wantEKU       bool
		wantUnhandled bool
	}{
		// ST33 RSA EK from Keylime's test_cert_utils.py: padded with 0xFF
		// after the DER, critical SAN with a directoryName only, TCG EKU.
		{file: "keylime-tests/st_rsa_ek_padded.der", der: true, ca: []string{"keylime/STM_RSA_05I.pem"},
			manufacturer: "id:53544D20", repairs: []string{"trailing bytes"}, wantEKU: true},
		{file: "keylime-tests/st_ecc_ek.der", der: true, ca: []string{"keylime/STM_ECC_01I.pem"},
			manufacturer: "id:53544D20", wantEKU: true},
		// Google's vTPM EK certificates from go-tpm-tools, chained to
		// Google's EK root through its intermediate.
		{file: "go-tpm-tools/uca_tpm_rsa_enc_cert.pem", ca: []string{"go-tpm-tools/tpm_ek_root_1.pem", "go-tpm-tools/tpm_ek_intermediate_3.pem"},
			manufacturer: "id:474F4F47", wantEKU: true},
		{file: "go-tpm-tools/uca_tpm_ecc_enc_cert.pem", ca: []string{"go-tpm-tools/tpm_ek_root_1.pem", "go-tpm-tools/tpm_ek_intermediate_3.pem"},
			manufacturer: "id:474F4F47", wantEKU: true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw := readTestdata(t, tc.file)
			if !tc.der {
				raw = pemDER(t, tc.file)
			}
			ek, err := ParseEKCert(raw)
			if err != nil {
				t.Fatalf("ParseEKCert: %v", err)
			}
			if ek.Manufacturer != tc.manufacturer || ek.EKUsage != tc.wantEKU || !slices.Equal(ek.Repairs, tc.repairs) {
				t.Errorf("ParseEKCert = manufacturer %q, EK usage %v, repairs %q; want %q, %v, %q", ek.Manufacturer, ek.EKUsage, ek.Repairs, tc.manufacturer, tc.wantEKU, tc.repairs)
			}
			if len(ek.Cert.UnhandledCriticalExtensions) != 0 {
				t.Errorf("unhandled critical extensions left: %v", ek.Cert.UnhandledCriticalExtensions)
			}
			var paths []string
			for _, c := range tc.ca {
				paths = append(paths, filepath.Join("testdata", "ek", c))
			}
			pool, err := LoadCAPool(paths...)
			if err != nil {
				t.Fatal(err)
			}
			chain, err := pool.Verify(ek.Cert, pinned)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if len(chain) < 2 {
				t.Errorf("chain of %d certificates", len(chain))
			}
		})
	}
}

// Go's own parser refuses what ParseEKCert deals with: the tests above
// would pass for nothing if it did not.
func TestGoRefusesTheMess(t *testing.T) {
	if _, err := x509.ParseCertificate(readTestdata(t, "keylime-tests/st_rsa_ek_padded.der")); err == nil {
		t.Error("x509.ParseCertificate accepts the padded ST certificate")
	}
	c, err := x509.ParseCertificate(pemDER(t, "go-tpm-tools/uca_tpm_rsa_enc_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := LoadCAPool("testdata/ek/go-tpm-tools/tpm_ek_root_1.pem", "testdata/ek/go-tpm-tools/tpm_ek_intermediate_3.pem")
	if _, err := pool.Verify(c, pinned); err == nil || !strings.Contains(err.Error(), "critical extension") {
		t.Errorf("Go's verifier on a critical directoryName SAN: %v, want unhandled critical extension", err)
	}
}

func TestParseEKCertRefuses(t *testing.T) {
	for _, tc := range []struct {
		file string
		want string
	}{
		// A CA certificate (Nuvoton's root) is not an EK certificate.
		{"keylime/NUVO_2110.pem", "CA certificate"},
		{"keylime/STM_RSA_05I.pem", "CA certificate"},
		// Infineon's ECC manufacturing CA carries the TCG EK usage, and is
		// still a CA.
		{"keylime/IFX_ECC_034.pem", "CA certificate"},
		{"keylime/INTEL_RT.pem", "CA certificate"},
		// GCE's AK certificate: a signing key, no TCG EK usage, no TPM SAN.
		{"go-tpm-tools/pca_tpm_rsa_sign_cert.pem", "neither key encipherment nor key agreement"},
		// GCE's signing "EK" (the AK template in the endorsement hierarchy).
		{"go-tpm-tools/uca_tpm_rsa_sign_cert.pem", "neither key encipherment nor key agreement"},
		// GCE's encryption key certificate without the TCG EK markers.
		{"go-tpm-tools/pca_tpm_rsa_enc_cert.pem", "neither the TCG EK extended key usage"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			_, err := ParseEKCert(pemDER(t, tc.file))
			if !errors.Is(err, ErrNotEKCert) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseEKCert = %v, want ErrNotEKCert with %q", err, tc.want)
			}
		})
	}
}

func TestParseEKCertNVHeader(t *testing.T) {
	der := readTestdata(t, "keylime-tests/st_ecc_ek.der")
	wrapped := append([]byte{0x10, 0x01, 0x00, byte(len(der) >> 8), byte(len(der))}, der...)
	wrapped = append(wrapped, 0xff, 0xff) // and padding to the index size
	ek, err := ParseEKCert(wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ek.Repairs, []string{"NV header"}) || string(ek.Cert.Raw) != string(der) {
		t.Errorf("repairs %q, raw equal %v", ek.Repairs, string(ek.Cert.Raw) == string(der))
	}
	if _, err := ParseEKCert(wrapped[:len(wrapped)-10]); err == nil {
		t.Error("a header longer than the data is accepted")
	}
}

func TestAKCertChainGCE(t *testing.T) {
	pool, err := LoadCAPool("testdata/ek/go-tpm-tools/gcp_ek_ak_ca_root.pem", "testdata/ek/go-tpm-tools/gcp_ek_ak_ca_intermediate_v3.pem")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertificates(readTestdata(t, "go-tpm-tools/pca_tpm_rsa_sign_cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Verify(certs[0], pinned); err != nil {
		t.Errorf("GCE AK certificate against Google's EK/AK CA: %v", err)
	}
	// The same CA certifies the vTPM's encryption key: not an AK
	// certificate, even for a key that matched.
	enc, _ := ParseCertificates(readTestdata(t, "go-tpm-tools/pca_tpm_rsa_enc_cert.pem"))
	id := &Identity{AKCerts: []NVCert{{NVIndex: 0x01C10000, Certificate: enc[0].Raw}}}
	_, err = viaAKCert(id, &AK{Key: enc[0].PublicKey}, Options{AKCAs: pool, Now: func() time.Time { return pinned }})
	if err == nil || !strings.Contains(err.Error(), "not a signing key's certificate") {
		t.Errorf("an encryption key's certificate as the AK's: %v", err)
	}
	sign := &Identity{AKCerts: []NVCert{{NVIndex: 0x01C10000, Certificate: certs[0].Raw}}}
	res, err := viaAKCert(sign, &AK{Key: certs[0].PublicKey, Name: []byte{0, 0xb}}, Options{AKCAs: pool, Now: func() time.Time { return pinned }})
	if err != nil || res.Path != PathAKCert || len(res.Chain) != 3 {
		t.Errorf("GCE AK certificate path: %v, %+v", err, res)
	}
	// Google's EK root did not sign it.
	ekRoot, _ := LoadCAPool("testdata/ek/go-tpm-tools/tpm_ek_root_1.pem")
	if _, err := ekRoot.Verify(certs[0], pinned); err == nil || !strings.Contains(err.Error(), "not in the CA bundle") {
		t.Errorf("Verify with the wrong root = %v, want not in the CA bundle", err)
	}
}

func TestLoadCAPoolDirectory(t *testing.T) {
	p, err := LoadCAPool("testdata/ek/keylime")
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 9 {
		t.Errorf("pool of %d certificates, want the 9 CA files", p.Len())
	}
	// A bundle holding a leaf certificate is refused, naming the file.
	if _, err := LoadCAPool("testdata/ek/keylime-tests"); err == nil || !strings.Contains(err.Error(), "st_ecc_ek.der") || !strings.Contains(err.Error(), "not a CA certificate") {
		t.Errorf("LoadCAPool(EK certificates) = %v, want refused as not a CA", err)
	}
	// With Keylime's store as the bundle, the ST EK chains through its
	// intermediate to ST's root (every bundle certificate is an anchor:
	// GlobalSign, which signed ST's root, is not needed).
	ek, err := ParseEKCert(readTestdata(t, "keylime-tests/st_rsa_ek_padded.der"))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := p.Verify(ek.Cert, pinned)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range chain[1:] {
		names = append(names, c.Subject.CommonName)
	}
	if want := []string{"STM TPM EK Intermediate CA 05", "STM TPM EK Root CA"}; !slices.Equal(names, want) {
		t.Errorf("chain above the EK = %q, want %q", names, want)
	}
	if _, err := LoadCAPool(t.TempDir()); err == nil {
		t.Error("an empty directory gives a pool")
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644)
	if _, err := LoadCAPool(bad); err == nil || !strings.Contains(err.Error(), "bad.pem") {
		t.Errorf("LoadCAPool(bad) = %v, want an error naming the file", err)
	}
}

// An EK certificate with a negative serial, made by OpenSSL (x509 -req
// -set_serial -12345): Go's parser refuses it; ParseEKCert reads it, with
// the real serial, and its signature verifies over the original bytes.
func TestNegativeSerial(t *testing.T) {
	der := pemDER(t, "openssl/negative_serial_ek.pem")
	if _, err := x509.ParseCertificate(der); err == nil {
		t.Fatal("x509.ParseCertificate accepts a negative serial: the repair is not exercised")
	}
	ek, err := ParseEKCert(der)
	if err != nil {
		t.Fatal(err)
	}
	if ek.Cert.SerialNumber.Cmp(big.NewInt(-12345)) != 0 || !slices.Equal(ek.Repairs, []string{"serial number"}) {
		t.Errorf("serial %v, repairs %q; want -12345, [serial number]", ek.Cert.SerialNumber, ek.Repairs)
	}
	if string(ek.Cert.Raw) != string(der) {
		t.Error("Raw is not the original certificate")
	}
	pool, err := LoadCAPool("testdata/ek/openssl/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := pool.Verify(ek.Cert, at); err != nil {
		t.Errorf("Verify: %v", err)
	}
	// The signature covers the original TBS: a flipped bit in it fails.
	bad := append([]byte(nil), der...)
	bad[len(bad)-80] ^= 1
	if ek2, err := ParseEKCert(bad); err == nil {
		if _, err := pool.Verify(ek2.Cert, at); err == nil {
			t.Error("a corrupted certificate verifies")
		}
	}
}

// A certificate is not vouched for by being in the bundle itself: only
// certificates given with NewCAPool can get there (LoadCAPool refuses
// leaves), and Verify still refuses.
func TestVerifyLeafInBundle(t *testing.T) {
	ek, err := ParseEKCert(readTestdata(t, "keylime-tests/st_ecc_ek.der"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewCAPool(ek.Cert).Verify(ek.Cert, pinned)
	if err == nil || !strings.Contains(err.Error(), "itself in the CA bundle") {
		t.Errorf("Verify with the leaf as the bundle = %v", err)
	}
}
