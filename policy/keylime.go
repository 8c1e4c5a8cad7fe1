package policy

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"unicode/utf8"
)

// Keylime digest algorithms, as Keylime names them.
const (
	KeylimeSHA1   = "sha1"
	KeylimeSHA256 = "sha256"
	KeylimeSHA384 = "sha384"
	KeylimeSHA512 = "sha512"
	KeylimeSM3    = "sm3_256"
)

// KeylimePayloadType is the DSSE payload type of a signed Keylime runtime
// policy (keylime-policy sign).
const KeylimePayloadType = "application/vnd.keylime+json"

// Errors of [ImportKeylime] that callers branch on.
var (
	// ErrKeylimeSignature: the DSSE envelope's signature does not verify
	// with the given key.
	ErrKeylimeSignature = errors.New("keylime policy: bad signature")
	// ErrKeylimeAlgorithm: the policy holds digests rimon can never match
	// (rimon records carry SHA-256 digests of files only).
	ErrKeylimeAlgorithm = errors.New("keylime policy: digests rimon cannot match")
	// ErrKeylimeAmbiguous: unlabelled 64-hex-character digests are SHA-256
	// or SM3-256, and the policy does not say which.
	ErrKeylimeAmbiguous = errors.New("keylime policy: SHA-256 or SM3-256?")
	// ErrKeylimeExcludes: excludes that no rimon pattern expresses exactly.
	ErrKeylimeExcludes = errors.New("keylime policy: excludes rimon cannot express")
)

// KeylimeOptions control [ImportKeylime]. The zero value is the strict one:
// it refuses what it cannot import exactly.
type KeylimeOptions struct {
	// Key, when set, is the public key (*ecdsa.PublicKey or *rsa.PublicKey)
	// that must have signed a DSSE envelope; a policy that is not an
	// envelope is then refused. Without it an envelope is unwrapped
	// unchecked, and [KeylimeImport.SignatureChecked] says so.
	Key crypto.PublicKey
	// Digest256 says what unlabelled digests of 64 hex characters are:
	// KeylimeSHA256 or KeylimeSM3. Keylime uses both lengths alike and
	// records no algorithm, so when it is empty such digests are refused
	// with [ErrKeylimeAmbiguous].
	Digest256 string
	// DropOtherAlgorithms imports the SHA-256 digests of a policy that also
	// holds digests of other algorithms, and lists the others in
	// [KeylimeImport.LeftOut]. Without it such a policy is refused with
	// [ErrKeylimeAlgorithm].
	DropOtherAlgorithms bool
	// DropUnmappedExcludes accepts that excludes no rimon pattern expresses
	// exactly are left out (which makes the reference stricter: those paths
	// become unlisted). Without it they are refused with [ErrKeylimeExcludes].
	DropUnmappedExcludes bool
	// Excludes are more Keylime exclude regular expressions (an exclude
	// list file given with an allowlist), treated like the policy's own.
	Excludes []string
}

// KeylimeImport is what [ImportKeylime] made of a Keylime policy.
type KeylimeImport struct {
	// Format is "runtime policy", "DSSE-signed runtime policy", "JSON
	// allowlist" (the older form with "hashes") or "allowlist" (text).
	Format string
	// Signed: the policy was a DSSE envelope. SignatureChecked: its
	// signature verified with [KeylimeOptions.Key].
	Signed, SignatureChecked bool
	// Files maps absolute paths to their allowed SHA-256 digests
	// (lowercase hex), for the reference's files section.
	Files map[string][]string
	// Ignore are rimon patterns, each expressing a Keylime exclude exactly
	// (see [TranslateKeylimeExclude]), for the reference's ignore section.
	Ignore []string
	// LeftOut lists every digest entry that was not imported, and why.
	LeftOut []KeylimeLeftOut
	// Unmapped lists the excludes no rimon pattern expresses exactly.
	Unmapped []KeylimeExclude
	// Notes are parts of the policy rimon has no equivalent for (keyrings,
	// ima-buf, verification keys), which are left out.
	Notes []string
}

// KeylimeLeftOut is one digest that was not imported.
type KeylimeLeftOut struct {
	Path, Digest string
	Alg          string // as detected; "" when unknown
	Reason       string
}

// KeylimeExclude is an exclude that was not mapped.
type KeylimeExclude struct {
	Regex, Reason string
}

// ImportKeylime reads a Keylime runtime policy in any of its forms: the
// JSON runtime policy, the same wrapped in a DSSE envelope (checked with
// opt.Key when set), the older JSON allowlist (a "hashes" map), or the
// allowlist text ("DIGEST  PATH" lines, as
// sha256sum, create_allowlist.sh and keylime-policy --show-legacy-allowlist
// write). name is used in errors.
//
// Digests are recognised as Keylime does: by an "alg:" prefix, else by
// length (40 hex characters: SHA-1, 64: SHA-256 or SM3-256, 96: SHA-384,
// 128: SHA-512). rimon records carry SHA-256 digests of files only, so
// digests of other algorithms are refused (or, with
// opt.DropOtherAlgorithms, left out and listed); they are never relabelled.
// Entries whose path is not a clean absolute path (such as IMA's
// boot_aggregate) are left out and listed, as they can match no rimon
// record. Excludes become rimon patterns when one expresses them exactly.
func ImportKeylime(name string, data []byte, opt KeylimeOptions) (*KeylimeImport, error) {
	if opt.Digest256 != "" && opt.Digest256 != KeylimeSHA256 && opt.Digest256 != KeylimeSM3 {
		return nil, fmt.Errorf("keylime: digest algorithm %q for 64-hex-character digests: want %s or %s", opt.Digest256, KeylimeSHA256, KeylimeSM3)
	}
	imp := &KeylimeImport{Files: map[string][]string{}}
	var entries []klEntry
	excludes := append([]string(nil), opt.Excludes...)
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		pol, err := parseKeylimeJSON(name, data, opt.Key, imp)
		if err != nil {
			return nil, err
		}
		entries = pol.entries
		excludes = append(excludes, pol.excludes...)
	} else {
		if opt.Key != nil {
			return nil, fmt.Errorf("%s: %w: an allowlist carries no signature to check with the key given", name, ErrKeylimeSignature)
		}
		imp.Format = "allowlist"
		var err error
		if entries, err = parseKeylimeAllowlist(name, data); err != nil {
			return nil, err
		}
	}
	if err := imp.digests(name, entries, opt); err != nil {
		return nil, err
	}
	for _, re := range excludes {
		pats, err := TranslateKeylimeExclude(re)
		if err != nil {
			imp.Unmapped = append(imp.Unmapped, KeylimeExclude{Regex: re, Reason: err.Error()})
			continue
		}
		if len(pats) == 0 {
			imp.Notes = append(imp.Notes, fmt.Sprintf("exclude %q matches no clean absolute path: nothing to ignore", re))
		}
		for _, p := range pats {
			imp.Ignore = appendUnique(imp.Ignore, p)
		}
	}
	if len(imp.Unmapped) > 0 && !opt.DropUnmappedExcludes {
		var b strings.Builder
		for _, u := range imp.Unmapped {
			fmt.Fprintf(&b, "\n  %q: %s", u.Regex, u.Reason)
		}
		return nil, fmt.Errorf("%s: %w: %d of %d excludes have no exact rimon pattern (dropping them makes the reference stricter: those paths become unlisted):%s",
			name, ErrKeylimeExcludes, len(imp.Unmapped), len(excludes), b.String())
	}
	if len(imp.Files) == 0 {
		return nil, fmt.Errorf("%s: no entry could be imported (%d left out: %s)", name, len(imp.LeftOut), summarizeLeftOut(imp.LeftOut, true))
	}
	return imp, nil
}

type klEntry struct {
	path, digest string
	line         int // allowlist line; 0 in JSON
}

func (e klEntry) where(name string) string {
	if e.line > 0 {
		return fmt.Sprintf("%s:%d", name, e.line)
	}
	return fmt.Sprintf("%s: digests[%q]", name, e.path)
}

// klAlgs maps hex lengths to algorithms; 64 is SHA-256 or SM3-256.
var klAlgs = map[int]string{40: KeylimeSHA1, 96: KeylimeSHA384, 128: KeylimeSHA512}

var klPrefixAlgs = map[string]int{KeylimeSHA1: 40, KeylimeSHA256: 64, KeylimeSHA384: 96, KeylimeSHA512: 128, KeylimeSM3: 64, "sm3": 64}

func (imp *KeylimeImport) digests(name string, entries []klEntry, opt KeylimeOptions) error {
	var other, ambiguous []KeylimeLeftOut
	sha256s := 0
	for _, e := range entries {
		alg, hexd, hasPrefix := strings.Cut(e.digest, ":")
		if !hasPrefix {
			alg, hexd = "", e.digest
		}
		if strings.ToLower(hexd) != hexd {
			return fmt.Errorf("%s: digest %q is not lowercase hex (Keylime's schema and matching take lowercase only)", e.where(name), e.digest)
		}
		if _, err := hex.DecodeString(hexd); err != nil || hexd == "" {
			return fmt.Errorf("%s: digest %q is not hex", e.where(name), e.digest)
		}
		if hasPrefix {
			n, ok := klPrefixAlgs[alg]
			if !ok {
				return fmt.Errorf("%s: digest %q names the unknown algorithm %q (want sha1, sha256, sha384, sha512 or sm3_256)", e.where(name), e.digest, alg)
			}
			if n != len(hexd) {
				return fmt.Errorf("%s: digest %q: a %s digest has %d hex characters, not %d", e.where(name), e.digest, alg, n, len(hexd))
			}
			if alg == "sm3" {
				alg = KeylimeSM3
			}
		} else if len(hexd) == 64 {
			alg = opt.Digest256
		} else if alg = klAlgs[len(hexd)]; alg == "" {
			return fmt.Errorf("%s: digest %q has %d hex characters, the length of no algorithm Keylime knows (40 sha1, 64 sha256 or sm3_256, 96 sha384, 128 sha512)", e.where(name), e.digest, len(hexd))
		}
		lo := KeylimeLeftOut{Path: e.path, Digest: e.digest, Alg: alg}
		if reason := klPathProblem(e.path); reason != "" {
			lo.Reason = reason
			imp.LeftOut = append(imp.LeftOut, lo)
			continue
		}
		if alg == "" {
			ambiguous = append(ambiguous, lo)
			continue
		}
		if alg != KeylimeSHA256 {
			lo.Reason = "a " + alg + " digest: rimon records SHA-256 digests only"
			other = append(other, lo)
			continue
		}
		sha256s++
		imp.Files[e.path] = appendUnique(imp.Files[e.path], hexd)
	}
	if len(ambiguous) > 0 {
		return fmt.Errorf("%s: %w: %d digests have 64 hex characters, which Keylime uses for both SHA-256 and SM3-256 without saying which (%s); rimon records SHA-256 only: say which (SHA-256 is keylime-policy's default; an SM3-256 policy cannot be used)",
			name, ErrKeylimeAmbiguous, len(ambiguous), summarizeLeftOut(ambiguous, false))
	}
	if len(other) > 0 && (!opt.DropOtherAlgorithms || sha256s == 0) {
		algs := map[string]bool{}
		for _, o := range other {
			algs[o.Alg] = true
		}
		var names []string
		for a := range algs {
			names = append(names, a)
		}
		sort.Strings(names)
		hint := fmt.Sprintf("; it also holds %d SHA-256 digests, which can be imported alone", sha256s)
		if sha256s == 0 {
			hint = "; make the policy with SHA-256 digests (keylime-policy create runtime --algo sha256)"
		}
		return fmt.Errorf("%s: %w: rimon records SHA-256 digests of files, so %s digests can never match; %d such digests (%s)%s",
			name, ErrKeylimeAlgorithm, strings.Join(names, ", "), len(other), summarizeLeftOut(other, false), hint)
	}
	imp.LeftOut = append(imp.LeftOut, other...)
	return nil
}

// klPathProblem says why a Keylime path can match no rimon record, or "".
func klPathProblem(p string) string {
	switch {
	case strings.HasPrefix(p, "%keyring:"):
		return "a keyring entry: rimon measures files, not keys"
	case !strings.HasPrefix(p, "/"):
		return "not an absolute path (rimon records absolute paths only)"
	case path.Clean(p) != p:
		return "not a clean path (rimon records clean paths only)"
	case strings.ContainsRune(p, 0):
		return "contains a NUL byte"
	case !utf8.ValidString(p):
		return "not valid UTF-8 (Keylime reads policies as UTF-8)"
	}
	return ""
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}

func summarizeLeftOut(l []KeylimeLeftOut, why bool) string {
	var b strings.Builder
	for i, o := range l {
		if i == 5 {
			fmt.Fprintf(&b, ", and %d more", len(l)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(o.Path)
		if why {
			fmt.Fprintf(&b, " (%s)", o.Reason)
		}
	}
	return b.String()
}

type klPolicy struct {
	entries  []klEntry
	excludes []string
}

// parseKeylimeJSON reads a runtime policy or a DSSE envelope holding one.
func parseKeylimeJSON(name string, data []byte, key crypto.PublicKey, imp *KeylimeImport) (*klPolicy, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("%s: not a Keylime policy (JSON): %v", name, err)
	}
	_, isEnvelope := top["payload"]
	if isEnvelope {
		payload, checked, err := openDSSE(name, top, key)
		if err != nil {
			return nil, err
		}
		imp.Format, imp.Signed, imp.SignatureChecked = "DSSE-signed runtime policy", true, checked
		name += " (DSSE payload)"
		top = nil
		if err := json.Unmarshal(payload, &top); err != nil {
			return nil, fmt.Errorf("%s: not a Keylime runtime policy (JSON): %v", name, err)
		}
	} else {
		if key != nil {
			return nil, fmt.Errorf("%s: %w: the policy is not a DSSE envelope, so it carries no signature to check with the key given", name, ErrKeylimeSignature)
		}
		imp.Format = "runtime policy"
	}
	raw, ok := top["digests"]
	if _, hashes := top["hashes"]; !ok && hashes && !isEnvelope {
		// The older JSON allowlist (Keylime's convert_runtime_policy.py
		// reads its "hashes" as a runtime policy's "digests").
		raw, ok = top["hashes"], true
		imp.Format = "JSON allowlist"
	}
	if !ok {
		keys := make([]string, 0, len(top))
		for k := range top {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("%s: not a Keylime runtime policy: no \"digests\" map (keys: %s)", name, strings.Join(keys, ", "))
	}
	var digests map[string][]string
	if err := json.Unmarshal(raw, &digests); err != nil {
		return nil, fmt.Errorf("%s: \"digests\": want a map of path to a list of hex digests: %v", name, err)
	}
	pol := &klPolicy{}
	paths := make([]string, 0, len(digests))
	for p := range digests {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if len(digests[p]) == 0 {
			return nil, fmt.Errorf("%s: digests[%q]: empty list (Keylime's schema wants at least one digest)", name, p)
		}
		for _, d := range digests[p] {
			pol.entries = append(pol.entries, klEntry{path: p, digest: d})
		}
	}
	if raw, ok := top["excludes"]; ok {
		if err := json.Unmarshal(raw, &pol.excludes); err != nil {
			return nil, fmt.Errorf("%s: \"excludes\": want a list of regular expressions: %v", name, err)
		}
	}
	for _, k := range []string{"keyrings", "ima-buf"} {
		var m map[string][]string
		if raw, ok := top[k]; ok && json.Unmarshal(raw, &m) == nil && len(m) > 0 {
			imp.Notes = append(imp.Notes, fmt.Sprintf("%q (%d entries) left out: rimon measures files, not IMA buffers or keys", k, len(m)))
		}
	}
	var vk string
	if raw, ok := top["verification-keys"]; ok && json.Unmarshal(raw, &vk) == nil && vk != "" {
		imp.Notes = append(imp.Notes, "\"verification-keys\" left out: rimon does not accept files by IMA signature, only by digest")
	}
	return pol, nil
}

// openDSSE returns the payload of a DSSE envelope, checking the signature
// with key when set. The signature is over PAE(payloadType, payload):
// "DSSEv1 <len> <type> <len> <payload>" (DSSE v1.0, "Protocol").
func openDSSE(name string, top map[string]json.RawMessage, key crypto.PublicKey) (payload []byte, checked bool, err error) {
	var env struct {
		Payload     string `json:"payload"`
		PayloadType string `json:"payloadType"`
		Signatures  []struct {
			KeyID string `json:"keyid"`
			Sig   string `json:"sig"`
		} `json:"signatures"`
	}
	b, _ := json.Marshal(top)
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, false, fmt.Errorf("%s: not a DSSE envelope: %v", name, err)
	}
	if env.PayloadType != KeylimePayloadType {
		return nil, false, fmt.Errorf("%s: DSSE payloadType %q: want %q (a Keylime runtime policy)", name, env.PayloadType, KeylimePayloadType)
	}
	payload, err = decodeB64(env.Payload)
	if err != nil {
		return nil, false, fmt.Errorf("%s: DSSE payload: not base64: %v", name, err)
	}
	if key == nil {
		return payload, false, nil
	}
	if len(env.Signatures) == 0 {
		return nil, false, fmt.Errorf("%s: %w: the envelope has no signatures", name, ErrKeylimeSignature)
	}
	pae := dssePAE(env.PayloadType, payload)
	var errs []error
	for i, s := range env.Signatures {
		sig, err := decodeB64(s.Sig)
		if err != nil {
			errs = append(errs, fmt.Errorf("signature %d: not base64: %v", i, err))
			continue
		}
		if err := verifySig(key, pae, sig); err != nil {
			errs = append(errs, fmt.Errorf("signature %d (keyid %.16s): %v", i, s.KeyID, err))
			continue
		}
		return payload, true, nil
	}
	return nil, false, fmt.Errorf("%s: %w: no signature verifies with the key given: %v", name, ErrKeylimeSignature, errors.Join(errs...))
}

func dssePAE(payloadType string, payload []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
}

// decodeB64 takes standard or URL-safe base64, padded or not (DSSE allows both).
func decodeB64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.Strict().DecodeString(s); err == nil {
			return b, nil
		}
	}
	_, err := base64.StdEncoding.Strict().DecodeString(s)
	return nil, err
}

// verifySig checks an ECDSA (ASN.1 DER, SHA-256, as Keylime signs with any
// curve) or RSA (PKCS #1 v1.5 or PSS, SHA-256) signature over msg.
func verifySig(key crypto.PublicKey, msg, sig []byte) error {
	h := sha256.Sum256(msg)
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, h[:], sig) {
			return errors.New("ECDSA signature does not verify")
		}
	case *rsa.PublicKey:
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig) != nil && rsa.VerifyPSS(k, crypto.SHA256, h[:], sig, nil) != nil {
			return errors.New("RSA signature (PKCS #1 v1.5 or PSS, SHA-256) does not verify")
		}
	default:
		return fmt.Errorf("unsupported key type %T (want ECDSA or RSA)", key)
	}
	return nil
}

// ParseKeylimeKey reads the PEM public key, or certificate, that signs
// Keylime policies: keylime-policy sign writes an ECDSA key or an x509
// certificate.
func ParseKeylimeKey(name string, data []byte) (crypto.PublicKey, error) {
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("%s: no PEM public key or certificate", name)
		}
		var key any
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var c *x509.Certificate
			if c, err = x509.ParseCertificate(b.Bytes); err == nil {
				key = c.PublicKey
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v", name, b.Type, err)
		}
		switch key.(type) {
		case *ecdsa.PublicKey, *rsa.PublicKey:
			return key, nil
		}
		return nil, fmt.Errorf("%s: a %T key: want ECDSA or RSA", name, key)
	}
}

// parseKeylimeAllowlist reads "DIGEST PATH" lines: the digest, white space,
// and the rest of the line as the path, as Keylime reads them. Blank lines
// are skipped.
func parseKeylimeAllowlist(name string, data []byte) ([]klEntry, error) {
	var out []klEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			return nil, fmt.Errorf("%s:%d: want \"DIGEST  PATH\", have %q", name, n, line)
		}
		out = append(out, klEntry{digest: line[:i], path: strings.TrimLeft(line[i:], " \t"), line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no entries (neither a JSON runtime policy nor \"DIGEST  PATH\" lines)", name)
	}
	return out, nil
}

// ParseKeylimeExcludeList reads a Keylime exclude list: one regular
// expression per line; blank lines and lines starting with "#" are skipped,
// as Keylime's convert_runtime_policy.py does (such an expression could
// match no absolute path anyway).
func ParseKeylimeExcludeList(data []byte) []string {
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
