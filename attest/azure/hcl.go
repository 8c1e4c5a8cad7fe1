// Package azure checks the chain that roots a rimon quote in the AMD
// SEV-SNP hardware of an Azure confidential VM: AMD's root (ARK), the ASK,
// the VCEK, the SNP report's signature and fields, the runtime claims
// bound into REPORT_DATA, and the HCLAkPub key in those claims, which must
// be the attestation key that signed the quote.
//
// # The HCL report
//
// The paravisor keeps the report in vTPM NV index 0x01400001. Its layout
// (all integers little-endian u32), documented in docs/FORMAT.md section 6:
//
//	0      "HCLA"
//	4      version (1 or 2)
//	8      report_size: 32 + 1184 + 20 + variable data size
//	12     request_type (2: AkCertRequest)
//	16     status, 20..32 reserved
//	32     the 1184-byte SNP ATTESTATION_REPORT
//	1216   IGVM request data: data_size (= 20 + var size), version, report_type (2: SNP, 4: TDX),
//	       hash_type (1: SHA-256), variable_data_size
//	1236   the runtime claims JSON, variable_data_size bytes; zero padding follows
package azure

import (
	"bytes"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// NVIndex is the vTPM NV index that holds the HCL report.
const NVIndex = 0x01400001

// Layout of the HCL report.
const (
	headerSize    = 32
	snpReportSize = 1184
	igvmSize      = 20
	claimsOffset  = headerSize + snpReportSize + igvmSize
	// MaxReportSize bounds the NV index (Azure uses 2048 or 2600 bytes).
	MaxReportSize = 16 << 10
)

// Report types and hash types of the IGVM request data.
const (
	ReportTypeSNP = 2
	ReportTypeTDX = 4
	HashSHA256    = 1
)

// ErrReport marks an HCL report that is malformed or not an SNP report.
var ErrReport = errors.New("HCL report invalid")

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrReport}, a...)...)
}

// Report is a parsed HCL report. Nothing in it is trusted until [Verify]
// has checked it.
type Report struct {
	Version     uint32
	RequestType uint32
	// SNP is the raw 1184-byte SNP attestation report.
	SNP []byte
	// Claims is the runtime claims JSON exactly as stored (what REPORT_DATA binds).
	Claims []byte
	// Parsed claims.
	Keys     []JWK
	VMConfig VMConfig
	UserData string
}

// JWK is a JSON Web Key of the runtime claims.
type JWK struct {
	Kid    string   `json:"kid"`
	Kty    string   `json:"kty"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	KeyOps []string `json:"key_ops"`
}

// VMConfig is the vm-configuration claim.
type VMConfig struct {
	ConsoleEnabled bool   `json:"console-enabled"`
	SecureBoot     bool   `json:"secure-boot"`
	TPMEnabled     bool   `json:"tpm-enabled"`
	VMUniqueID     string `json:"vmUniqueId"`
	CurrentTime    int64  `json:"current-time,omitempty"`
}

// Parse reads an HCL report (the contents of NV index 0x01400001).
func Parse(b []byte) (*Report, error) {
	if len(b) < claimsOffset {
		return nil, bad("%d bytes, shorter than the %d-byte header, SNP report and IGVM data", len(b), claimsOffset)
	}
	if len(b) > MaxReportSize {
		return nil, bad("%d bytes, more than %d", len(b), MaxReportSize)
	}
	le := binary.LittleEndian
	if !bytes.Equal(b[:4], []byte("HCLA")) {
		return nil, bad("signature %q, want \"HCLA\"", b[:4])
	}
	r := &Report{Version: le.Uint32(b[4:]), RequestType: le.Uint32(b[12:])}
	if r.Version != 1 && r.Version != 2 {
		return nil, bad("version %d (known: 1, 2)", r.Version)
	}
	reportSize := le.Uint32(b[8:])
	dataSize := le.Uint32(b[1216:])
	igvmVersion := le.Uint32(b[1220:])
	reportType := le.Uint32(b[1224:])
	hashType := le.Uint32(b[1228:])
	varSize := le.Uint32(b[1232:])
	switch {
	case reportType == ReportTypeTDX:
		return nil, bad("report type 4 is an Intel TDX report, not AMD SEV-SNP")
	case reportType != ReportTypeSNP:
		return nil, bad("report type %d is not SEV-SNP (2)", reportType)
	case igvmVersion != 1:
		return nil, bad("IGVM request data version %d (want 1)", igvmVersion)
	case hashType != HashSHA256:
		return nil, bad("hash type %d is not SHA-256 (1)", hashType)
	case uint64(varSize) > uint64(len(b)-claimsOffset):
		return nil, bad("runtime claims of %d bytes do not fit in %d bytes", varSize, len(b)-claimsOffset)
	case dataSize != igvmSize+varSize:
		return nil, bad("IGVM data_size %d is not 20 + variable data size %d", dataSize, varSize)
	case reportSize != claimsOffset+varSize:
		return nil, bad("report_size %d is not %d + variable data size %d", reportSize, claimsOffset, varSize)
	}
	r.SNP = append([]byte(nil), b[headerSize:headerSize+snpReportSize]...)
	r.Claims = append([]byte(nil), b[claimsOffset:claimsOffset+int(varSize)]...)
	var c struct {
		Keys     []JWK    `json:"keys"`
		VMConfig VMConfig `json:"vm-configuration"`
		UserData string   `json:"user-data"`
	}
	if err := json.Unmarshal(r.Claims, &c); err != nil {
		return nil, bad("runtime claims are not valid JSON: %v", err)
	}
	r.Keys, r.VMConfig, r.UserData = c.Keys, c.VMConfig, c.UserData
	if _, err := r.AKPublic(); err != nil {
		return nil, err
	}
	return r, nil
}

// ClaimsDigest is SHA-256 of the runtime claims as stored, which an
// authentic report carries in REPORT_DATA[0:32].
func (r *Report) ClaimsDigest() [32]byte { return sha256.Sum256(r.Claims) }

// AKPublic returns the RSA key of the claims' "HCLAkPub" JWK.
func (r *Report) AKPublic() (*rsa.PublicKey, error) {
	for _, k := range r.Keys {
		if k.Kid != "HCLAkPub" {
			continue
		}
		if k.Kty != "RSA" {
			return nil, bad("HCLAkPub has key type %q, want RSA", k.Kty)
		}
		n, err1 := b64(k.N)
		e, err2 := b64(k.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, bad("HCLAkPub modulus or exponent is not base64url")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	}
	return nil, bad("the runtime claims have no key with kid \"HCLAkPub\"")
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
