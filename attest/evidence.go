package attest

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/rimon-dev/rimon/eventlog"
)

// EvidenceVersion is the version of the evidence format (docs/FORMAT.md, section 5).
const EvidenceVersion = 1

// MaxEvidence bounds an evidence document read from a file or the network.
const MaxEvidence = 1 << 30

// Evidence is what an attester sends a verifier: an RFC 7464 JSON text
// sequence whose first element is a header and whose other elements are
// the measurement log's records, verbatim (docs/FORMAT.md, section 5):
//
//	0x1E {"version":1, "nonce":"<hex>", "ak_public":"<PEM>",
//	      "quote":{"attest":"<base64 TPMS_ATTEST>","signature":"<base64 TPMT_SIGNATURE>"},
//	      "pcrs":{"sha256":{"23":"<hex>"}}} LF
//	0x1E {"recnum":0,...} LF
//	...
//
// The log comes last and unchanged, so a verifier streams it. Nothing in
// evidence is trusted: see the package documentation.
type Evidence struct {
	Version int    `json:"version"`
	Nonce   string `json:"nonce"`
	// AKPublic is the attester's AK, for information: verifiers pin their own.
	AKPublic string                       `json:"ak_public,omitempty"`
	Quote    QuoteBlob                    `json:"quote"`
	PCRs     map[string]map[string]string `json:"pcrs"`
	// Azure, on an Azure confidential VM, carries what vouches for the AK.
	Azure *AzureBlob `json:"azure,omitempty"`
	// LogStart is the number of leading records left out of Log (GET
	// /v1/evidence?since=N): the verifier supplies them from its own copy.
	LogStart uint64 `json:"log_start,omitempty"`
	// Unrecorded lists the paths the agent knows changed but has not yet
	// recorded (a measurement or an append that failed and is being retried).
	// It is the agent's word, not vouched for by the quote: a verifier
	// reports it and never trusts a machine that says it has such paths.
	Unrecorded []Unrecorded `json:"unrecorded,omitempty"`
	// Log is the measurement log exactly as stored (RFC 7464 records).
	Log []byte `json:"-"`
}

// Unrecorded is one path the agent could not record yet (docs/FORMAT.md,
// section 5).
type Unrecorded struct {
	// Path is the path in UTF-8, or percent-escaped as a record's
	// path_escaped field when the name is not valid UTF-8.
	Path string `json:"path"`
	// Cause is one of the causes of an unmeasured record (docs/FORMAT.md).
	Cause string `json:"cause"`
	// Since is when the agent first failed to record the change.
	Since string `json:"since"`
	// Tries counts the attempts so far.
	Tries int `json:"tries"`
}

// AzureBlob is the hardware evidence of an Azure confidential VM: the HCL
// report from vTPM NV index 0x01400001 and the VCEK that signed its SNP
// report (PEM or DER, perhaps with the ASK and ARK, which verifiers ignore).
type AzureBlob struct {
	HCLReport []byte `json:"hcl_report"`
	VCEK      []byte `json:"vcek"`
}

// QuoteBlob holds a quote's two marshalled structures.
type QuoteBlob struct {
	Attest    []byte `json:"attest"`
	Signature []byte `json:"signature"`
}

// maxHeader bounds the evidence header.
const maxHeader = 1 << 20

// OpenEvidence reads the header of an evidence stream and returns the
// reader positioned at the log, for [Verify] to stream. Past [MaxEvidence]
// bytes the log reader fails with an error wrapping [ErrTooLarge].
func OpenEvidence(r io.Reader) (*Evidence, io.Reader, error) {
	br := bufio.NewReaderSize(&capReader{r: r, left: MaxEvidence, max: MaxEvidence}, 64<<10)
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		var more []byte
		more, err = readLine(br, maxHeader-len(line))
		line = append(append([]byte(nil), line...), more...)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: evidence header: %v", ErrInvalid, err)
	}
	if len(line) < 2 || line[0] != 0x1e {
		return nil, nil, fmt.Errorf("%w: evidence does not start with a record separator (0x1E) and a header", ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(line[1:]))
	dec.DisallowUnknownFields()
	var ev Evidence
	if err := dec.Decode(&ev); err != nil {
		return nil, nil, fmt.Errorf("%w: evidence header is not valid JSON of the expected shape: %v", ErrInvalid, err)
	}
	if dec.More() {
		return nil, nil, fmt.Errorf("%w: data after the evidence header", ErrInvalid)
	}
	if ev.Version != EvidenceVersion {
		return nil, nil, fmt.Errorf("%w: evidence version %d (this rimon reads version %d)", ErrInvalid, ev.Version, EvidenceVersion)
	}
	if len(ev.Quote.Attest) == 0 || len(ev.Quote.Signature) == 0 {
		return nil, nil, fmt.Errorf("%w: evidence has no quote", ErrInvalid)
	}
	if _, err := ev.Values(); err != nil {
		return nil, nil, err
	}
	return &ev, br, nil
}

func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var out []byte
	for {
		frag, err := br.ReadSlice('\n')
		out = append(out, frag...)
		if len(out) > limit {
			return nil, fmt.Errorf("header longer than %d bytes", maxHeader)
		}
		if err != bufio.ErrBufferFull {
			return out, err
		}
	}
}

// ParseEvidence reads a whole evidence document, log included, into memory.
func ParseEvidence(r io.Reader) (*Evidence, error) {
	ev, rest, err := OpenEvidence(r)
	if err != nil {
		return nil, err
	}
	if ev.Log, err = io.ReadAll(rest); err != nil {
		return nil, fmt.Errorf("%w: evidence log: %v", ErrInvalid, err)
	}
	return ev, nil
}

// Values returns the reported PCR values.
func (ev *Evidence) Values() (map[eventlog.PCRKey][]byte, error) {
	out := map[eventlog.PCRKey][]byte{}
	for bank, m := range ev.PCRs {
		h, err := eventlog.ParseBank(bank)
		if err != nil {
			return nil, fmt.Errorf("%w: pcrs: %v", ErrInvalid, err)
		}
		for idx, v := range m {
			n, err := strconv.Atoi(idx)
			if err != nil || n < 0 || n > 23 || strconv.Itoa(n) != idx {
				return nil, fmt.Errorf("%w: pcrs.%s: %q is not a PCR index 0-23", ErrInvalid, bank, idx)
			}
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != h.Size() {
				return nil, fmt.Errorf("%w: pcrs.%s.%s: want %d hex characters", ErrInvalid, bank, idx, 2*h.Size())
			}
			out[eventlog.PCRKey{PCR: n, Bank: h}] = b
		}
	}
	return out, nil
}

// SetValues stores PCR values in the evidence.
func (ev *Evidence) SetValues(vals map[eventlog.PCRKey][]byte) {
	ev.PCRs = map[string]map[string]string{}
	for k, v := range vals {
		b := eventlog.BankName(k.Bank)
		if ev.PCRs[b] == nil {
			ev.PCRs[b] = map[string]string{}
		}
		ev.PCRs[b][strconv.Itoa(k.PCR)] = hex.EncodeToString(v)
	}
}

// Marshal encodes the evidence: the header record, then the log.
func (ev *Evidence) Marshal() ([]byte, error) {
	h, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(h)+2+len(ev.Log))
	out = append(out, 0x1e)
	out = append(out, h...)
	out = append(out, '\n')
	return append(out, ev.Log...), nil
}

// ParsePublicKey reads a PEM public key (PKIX "PUBLIC KEY" or PKCS#1 "RSA PUBLIC KEY").
func ParsePublicKey(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	switch blk.Type {
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(blk.Bytes)
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(blk.Bytes)
	}
	return nil, fmt.Errorf("PEM block %q is not a public key", blk.Type)
}

// PublicKeyPEM encodes a public key as a PKIX PEM block.
func PublicKeyPEM(k crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// Fingerprint is the SHA-256 of the key's PKIX DER, in hex.
func Fingerprint(k crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:]), nil
}

// SkipRecords returns log without its first n records (one line each), or
// an error when it holds fewer.
func SkipRecords(log []byte, n uint64) ([]byte, error) {
	for i := uint64(0); i < n; i++ {
		j := bytes.IndexByte(log, '\n')
		if j < 0 {
			return nil, fmt.Errorf("the log holds only %d complete records, not %d", i, n)
		}
		log = log[j+1:]
	}
	return log, nil
}

// FirstRecords returns the first n records of log, or an error when it
// holds fewer.
func FirstRecords(log []byte, n uint64) ([]byte, error) {
	rest, err := SkipRecords(log, n)
	if err != nil {
		return nil, err
	}
	return log[:len(log)-len(rest)], nil
}
