package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/eventlog"
)

// ErrInvalid marks evidence that fails a check: it proves nothing.
var ErrInvalid = errors.New("evidence invalid")

// CheckError says which check failed.
type CheckError struct {
	Check string
	Err   error
}

// Error describes the failure.
func (e *CheckError) Error() string { return e.Check + ": " + e.Err.Error() }

// Unwrap lets errors.Is find ErrInvalid and the cause.
func (e *CheckError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

func fail(check, format string, a ...any) error {
	return &CheckError{Check: check, Err: fmt.Errorf(format, a...)}
}

// Check names, in the order they run.
const (
	CheckSignature = "signature"
	CheckMagic     = "quote structure"
	CheckNonce     = "nonce"
	CheckSelection = "PCR selection"
	CheckDigest    = "PCR digest"
	CheckLog       = "log replay"
)

// QuoteOptions says what the verifier asked for.
type QuoteOptions struct {
	// AK is the pinned attestation key.
	AK crypto.PublicKey
	// Nonce is the verifier's fresh nonce.
	Nonce []byte
	// PCRs are the PCRs the quote must cover, and the only ones it may
	// cover (default 23). Each must be quoted in at least one bank stronger
	// than SHA-1.
	PCRs []int
	// Banks, when set, are banks the quote must cover for every PCR in
	// PCRs. When unset, the quote may cover any banks. Either way, every
	// bank the quote covers must replay from the log ([MatchLog]).
	Banks []crypto.Hash
	// AllowSHA1 accepts quotes that cover a PCR only in the SHA-1 bank, and
	// signatures over SHA-1.
	AllowSHA1 bool
	// AnySelection accepts whatever PCRs the quote covers, for checking a
	// quote made by another tool on its own; the log is then not checked.
	AnySelection bool
}

func (o *QuoteOptions) defaults() {
	if len(o.PCRs) == 0 {
		o.PCRs = []int{23}
	}
}

// Quoted is what a verified quote proves: PCR values at the time of the quote.
type Quoted struct {
	// Values are the quoted PCR values; nil when none were reported, and
	// the log must then replay to PCRDigest.
	Values map[eventlog.PCRKey][]byte
	// Selection lists the quoted PCRs in the order the TPM hashed them.
	Selection []eventlog.PCRKey
	// PCRDigest is the quote's digest of the selected PCR values.
	PCRDigest []byte
	// Hash is the signature's hash algorithm, which also made PCRDigest.
	Hash   crypto.Hash
	Attest *tpm2.TPMSAttest
}

// digestOf hashes values in selection order, as the TPM does for a quote.
func (q *Quoted) digestOf(value func(k eventlog.PCRKey) []byte) []byte {
	d := q.Hash.New()
	for _, k := range q.Selection {
		d.Write(value(k))
	}
	return d.Sum(nil)
}

// VerifyQuote checks a quote (marshalled TPMS_ATTEST and signature, either
// a marshalled TPMT_SIGNATURE or plain signature bytes: RSA, or ECDSA in DER
// or r||s) and the PCR values reported with it. The selection must satisfy
// opts (see [QuoteOptions]). With no values, the PCR digest is left for the
// log to match ([MatchLog]).
func VerifyQuote(attest, sig []byte, values map[eventlog.PCRKey][]byte, opts QuoteOptions) (*Quoted, error) {
	opts.defaults()
	if opts.AK == nil {
		return nil, fail(CheckSignature, "no attestation key to check the signature with")
	}
	h, err := verifySignature(attest, sig, opts.AK, opts.AllowSHA1)
	if err != nil {
		return nil, err
	}
	if len(attest) < 6 || !bytes.Equal(attest[:4], []byte{0xff, 0x54, 0x43, 0x47}) {
		return nil, fail(CheckMagic, "magic is not TPM_GENERATED_VALUE (ff544347): not made by a TPM")
	}
	if typ := binary.BigEndian.Uint16(attest[4:6]); typ != uint16(tpm2.TPMSTAttestQuote) {
		return nil, fail(CheckMagic, "type is 0x%04x, not TPM_ST_ATTEST_QUOTE (0x8018)", typ)
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
	if err != nil {
		return nil, fail(CheckMagic, "TPMS_ATTEST does not parse: %v", err)
	}
	if len(opts.Nonce) == 0 || subtle.ConstantTimeCompare(a.ExtraData.Buffer, opts.Nonce) != 1 {
		return nil, fail(CheckNonce, "the quote's extraData %s is not the nonce %s: a replayed or unrelated quote",
			hex.EncodeToString(a.ExtraData.Buffer), hex.EncodeToString(opts.Nonce))
	}
	qi, err := a.Attested.Quote()
	if err != nil {
		return nil, fail(CheckMagic, "no quote information: %v", err)
	}
	sel, err := selection(qi.PCRSelect)
	if err != nil {
		return nil, fail(CheckSelection, "%v", err)
	}
	if !opts.AnySelection {
		if err := checkSelection(sel, opts); err != nil {
			return nil, err
		}
	} else if !opts.AllowSHA1 {
		onlySHA1 := true
		for _, k := range sel {
			onlySHA1 = onlySHA1 && k.Bank == crypto.SHA1
		}
		if onlySHA1 {
			return nil, fail(CheckSelection, "the quote covers only the SHA-1 bank, which is too weak (--allow-sha1 accepts it)")
		}
	}
	out := &Quoted{Selection: sel, PCRDigest: qi.PCRDigest.Buffer, Hash: h, Attest: a}
	if values == nil {
		return out, nil
	}
	for _, k := range sel {
		v, ok := values[k]
		if !ok {
			return nil, fail(CheckDigest, "no value reported for %s", k)
		}
		if len(v) != k.Bank.Size() {
			return nil, fail(CheckDigest, "%s value has %d bytes, want %d", k, len(v), k.Bank.Size())
		}
	}
	if got := out.digestOf(func(k eventlog.PCRKey) []byte { return values[k] }); !bytes.Equal(got, out.PCRDigest) {
		return nil, fail(CheckDigest, "the reported PCR values hash to %x, the quote says %x: the values were altered",
			got, out.PCRDigest)
	}
	out.Values = map[eventlog.PCRKey][]byte{}
	for _, k := range sel {
		out.Values[k] = values[k]
	}
	return out, nil
}

// selection lists the selected PCRs in the order the TPM hashes them:
// selections in order, PCRs in ascending order within each.
func selection(l tpm2.TPMLPCRSelection) ([]eventlog.PCRKey, error) {
	var out []eventlog.PCRKey
	seen := map[eventlog.PCRKey]bool{}
	for _, s := range l.PCRSelections {
		h, ok := hashOf(s.Hash)
		if !ok {
			return nil, fmt.Errorf("bank 0x%x is not one rimon knows", uint16(s.Hash))
		}
		for i, b := range s.PCRSelect {
			for bit := 0; bit < 8; bit++ {
				if b&(1<<bit) == 0 {
					continue
				}
				k := eventlog.PCRKey{PCR: i*8 + bit, Bank: h}
				if seen[k] {
					return nil, fmt.Errorf("%s selected twice", k)
				}
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out, nil
}

// checkSelection applies the selection rule: the quote covers exactly the
// PCRs asked for, each in at least one bank stronger than SHA-1 (unless
// AllowSHA1), and in every bank of opts.Banks. A quote may cover other banks
// too, and its banks may select different PCRs, as long as the rule holds;
// every bank it covers is then checked against the log.
func checkSelection(sel []eventlog.PCRKey, opts QuoteOptions) error {
	have := map[eventlog.PCRKey]bool{}
	pcrsOf := map[crypto.Hash]map[int]bool{}
	for _, k := range sel {
		have[k] = true
		if pcrsOf[k.Bank] == nil {
			pcrsOf[k.Bank] = map[int]bool{}
		}
		pcrsOf[k.Bank][k.PCR] = true
	}
	asked := map[int]bool{}
	for _, p := range opts.PCRs {
		asked[p] = true
	}
	// uneven explains a quote whose banks select different PCRs.
	uneven := ""
	for _, ps := range pcrsOf {
		for _, qs := range pcrsOf {
			if len(ps) != len(qs) || !sameSet(ps, qs) {
				uneven = "; its banks select different PCRs, which is accepted only when every PCR asked for is in a bank stronger than SHA-1 and no other PCR is selected"
			}
		}
	}
	var extra []eventlog.PCRKey
	for _, k := range sel {
		if !asked[k.PCR] {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		return fail(CheckSelection, "the quote covers %s, which includes %s that the verifier did not ask for (--pcrs %s)%s",
			describeSel(sel), describeSel(extra), pcrList(opts.PCRs), uneven)
	}
	for _, p := range opts.PCRs {
		strong, covered := false, false
		for _, k := range sel {
			if k.PCR == p {
				covered = true
				strong = strong || k.Bank != crypto.SHA1
			}
		}
		switch {
		case !covered:
			return fail(CheckSelection, "the quote covers %s, the verifier asked for PCR %s in at least one bank stronger than SHA-1%s",
				describeSel(sel), pcrList(opts.PCRs), uneven)
		case !strong && !opts.AllowSHA1:
			return fail(CheckSelection, "the quote covers PCR %d only in the SHA-1 bank, which is too weak (--allow-sha1 accepts it; the quote covers %s)",
				p, describeSel(sel))
		}
	}
	var missing []eventlog.PCRKey
	for _, b := range opts.Banks {
		for _, p := range opts.PCRs {
			if k := (eventlog.PCRKey{PCR: p, Bank: b}); !have[k] {
				missing = append(missing, k)
			}
		}
	}
	if len(missing) > 0 {
		return fail(CheckSelection, "the quote covers %s, the verifier asked for %s (--bank), and %s is missing%s",
			describeSel(sel), describeSel(Selection(opts.PCRs, opts.Banks)), describeSel(missing), uneven)
	}
	return nil
}

func sameSet(a, b map[int]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func pcrList(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

func describeSel(sel []eventlog.PCRKey) string {
	m := map[eventlog.PCRKey]bool{}
	for _, k := range sel {
		m[k] = true
	}
	return describeKeys(m)
}

func describeKeys(m map[eventlog.PCRKey]bool) string {
	by := map[string][]int{}
	for k := range m {
		by[eventlog.BankName(k.Bank)] = append(by[eventlog.BankName(k.Bank)], k.PCR)
	}
	var parts []string
	for b, ps := range by {
		sort.Ints(ps)
		idx := make([]string, len(ps))
		for i, p := range ps {
			idx[i] = strconv.Itoa(p)
		}
		parts = append(parts, b+":"+strings.Join(idx, ","))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, "+")
}

// verifySignature checks sig over attest with ak and returns the hash used.
func verifySignature(attest, sig []byte, ak crypto.PublicKey, allowSHA1 bool) (crypto.Hash, error) {
	s, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
	if err != nil || len(tpm2.Marshal(s)) != len(sig) {
		return verifyPlain(attest, sig, ak, allowSHA1)
	}
	var hashAlg tpm2.TPMIAlgHash
	switch s.SigAlg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var rs *tpm2.TPMSSignatureRSA
		if s.SigAlg == tpm2.TPMAlgRSASSA {
			rs, err = s.Signature.RSASSA()
		} else {
			rs, err = s.Signature.RSAPSS()
		}
		if err != nil {
			return 0, fail(CheckSignature, "%v", err)
		}
		hashAlg = rs.Hash
		h, err := sigHash(hashAlg, allowSHA1)
		if err != nil {
			return 0, err
		}
		pub, ok := ak.(*rsa.PublicKey)
		if !ok {
			return 0, fail(CheckSignature, "an RSA signature, but the attestation key is %T", ak)
		}
		d := digest(h, attest)
		if s.SigAlg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(pub, h, d, rs.Sig.Buffer)
		} else {
			err = rsa.VerifyPSS(pub, h, d, rs.Sig.Buffer, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		if err != nil {
			return 0, fail(CheckSignature, "the quote is not signed by the pinned attestation key (%v)", err)
		}
		return h, nil
	case tpm2.TPMAlgECDSA:
		es, err := s.Signature.ECDSA()
		if err != nil {
			return 0, fail(CheckSignature, "%v", err)
		}
		h, err := sigHash(es.Hash, allowSHA1)
		if err != nil {
			return 0, err
		}
		pub, ok := ak.(*ecdsa.PublicKey)
		if !ok {
			return 0, fail(CheckSignature, "an ECDSA signature, but the attestation key is %T", ak)
		}
		r := new(big.Int).SetBytes(es.SignatureR.Buffer)
		sv := new(big.Int).SetBytes(es.SignatureS.Buffer)
		if !ecdsa.Verify(pub, digest(h, attest), r, sv) {
			return 0, fail(CheckSignature, "the quote is not signed by the pinned attestation key")
		}
		return h, nil
	default:
		return 0, fail(CheckSignature, "signature scheme 0x%x is not supported (RSASSA, RSA-PSS, ECDSA are)", uint16(s.SigAlg))
	}
}

// verifyPlain accepts plain signature bytes, as tpm2_quote -f plain and
// other tools write them: RSASSA-PKCS1-v1_5 or RSA-PSS for an RSA key, and
// for an ECDSA key either DER (ECDSA-Sig-Value, RFC 3279) or r||s, each
// half the size of the curve's order. Plain bytes do not name their hash:
// SHA-256, SHA-384 and SHA-512 are tried (and SHA-1 with allowSHA1), and the
// one that verifies is the quote's, which also made its PCR digest.
func verifyPlain(attest, sig []byte, ak crypto.PublicKey, allowSHA1 bool) (crypto.Hash, error) {
	hashes := []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512}
	if allowSHA1 {
		hashes = append(hashes, crypto.SHA1)
	}
	switch pub := ak.(type) {
	case *rsa.PublicKey:
		if len(sig) != pub.Size() {
			return 0, fail(CheckSignature, "the signature is neither a TPMT_SIGNATURE nor plain RSA signature bytes for the key (%d bytes, want %d)", len(sig), pub.Size())
		}
		for _, h := range hashes {
			d := digest(h, attest)
			if rsa.VerifyPKCS1v15(pub, h, d, sig) == nil ||
				rsa.VerifyPSS(pub, h, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil {
				return h, nil
			}
		}
	case *ecdsa.PublicKey:
		n := (pub.Curve.Params().N.BitLen() + 7) / 8
		var r, s *big.Int
		var esig struct{ R, S *big.Int }
		if rest, err := asn1.Unmarshal(sig, &esig); err == nil && len(rest) == 0 && esig.R != nil && esig.S != nil {
			r, s = esig.R, esig.S
		} else if len(sig) == 2*n {
			r, s = new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		} else {
			return 0, fail(CheckSignature, "the signature is neither a TPMT_SIGNATURE nor a plain ECDSA signature (DER, or r||s of %d bytes) for the key", 2*n)
		}
		for _, h := range hashes {
			if ecdsa.Verify(pub, digest(h, attest), r, s) {
				return h, nil
			}
		}
	default:
		return 0, fail(CheckSignature, "plain signature bytes with a %T attestation key (RSA and ECDSA keys are supported)", ak)
	}
	return 0, fail(CheckSignature, "the quote is not signed by the pinned attestation key")
}

func sigHash(a tpm2.TPMIAlgHash, allowSHA1 bool) (crypto.Hash, error) {
	h, ok := hashOf(a)
	if !ok {
		return 0, fail(CheckSignature, "signature hash 0x%x is not supported", uint16(a))
	}
	if h == crypto.SHA1 && !allowSHA1 {
		return 0, fail(CheckSignature, "the signature uses SHA-1, which is too weak (--allow-sha1 accepts it)")
	}
	return h, nil
}

func digest(h crypto.Hash, b []byte) []byte {
	d := h.New()
	d.Write(b)
	return d.Sum(nil)
}
