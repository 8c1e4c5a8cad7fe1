package policy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func klData(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../testdata/keylime", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func klKey(t *testing.T, name string) crypto.PublicKey {
	t.Helper()
	k, err := ParseKeylimeKey(name, klData(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// p521 is Keylime's P-521 test signing key.
func p521(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	b, _ := pem.Decode(klData(t, "ec-p521-private.pem"))
	k, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestImportKeylimeSamples imports the policies and allowlists Keylime's
// own tools wrote: SHA-256 ones import, the others are refused naming the
// algorithm and the paths.
func TestImportKeylimeSamples(t *testing.T) {
	sha256s := KeylimeOptions{Digest256: KeylimeSHA256}
	for _, tc := range []struct {
		file  string
		opt   KeylimeOptions
		files map[string][]string // on success
		is    error
		text  []string // in the error
	}{
		{file: "policy-sha256.json", opt: sha256s, files: map[string][]string{"/base_policy_data": {"35f6036dcbb4d819a90cc3282659754ab1a225e60f593a209c27b80174ba3180"}}},
		{file: "policy-sha256.json", is: ErrKeylimeAmbiguous, text: []string{"/base_policy_data", "SM3-256"}},
		{file: "policy-sm3_256.json", opt: KeylimeOptions{Digest256: KeylimeSM3}, is: ErrKeylimeAlgorithm, text: []string{"sm3_256 digests", "/rootfs_data"}},
		{file: "policy-sm3_256.json", is: ErrKeylimeAmbiguous, text: []string{"/rootfs_data"}},
		{file: "policy-sha1.json", opt: sha256s, is: ErrKeylimeAlgorithm, text: []string{"sha1 digests", "/base_policy_data"}},
		{file: "policy-sha384.json", opt: sha256s, is: ErrKeylimeAlgorithm, text: []string{"sha384 digests", "/base_policy_data"}},
		{file: "policy-sha512.json", opt: sha256s, is: ErrKeylimeAlgorithm, text: []string{"sha512 digests", "/base_policy_data"}},
		{file: "policy-sha512.json", opt: KeylimeOptions{DropOtherAlgorithms: true}, is: ErrKeylimeAlgorithm, text: []string{"--algo sha256"}},
		{file: "policy-unknown.json", opt: sha256s, text: []string{`digests["/rootfs_data"]`, "62 hex characters"}},
		{file: "allowlist-sha256.txt", opt: sha256s, text: []string{"no entry could be imported", "data (not an absolute path"}},
		{file: "allowlist-sha1.txt", opt: sha256s, text: []string{"no entry could be imported", "data (not an absolute path"}},
		{file: "allowlist-sm3_256.txt", opt: KeylimeOptions{Digest256: KeylimeSM3}, text: []string{"no entry could be imported"}},
		{file: "allowlist-unknown.txt", opt: sha256s, text: []string{"allowlist-unknown.txt:1", "32 hex characters"}},
		{file: "ima-allowlist-short.txt", opt: sha256s, is: ErrKeylimeAlgorithm, text: []string{"sha1 digests", "20 such digests", "/boot/grub2/i386-pc/"}},
		{file: "runtime-policy-test.json", opt: sha256s, is: ErrKeylimeAlgorithm, text: []string{"sha1 digests"}},
		{file: "runtime-policy-test-signed.json", opt: sha256s, is: ErrKeylimeAlgorithm, text: []string{"sha1 digests"}},
		{file: "runtime-policy.json", opt: sha256s, files: map[string][]string{
			"/usr/sbin/foobar-sbin": {emptySHA256}, "/usr/lib64/foobar-temp": {emptySHA256}, "/usr/lib/foobar.so": {emptySHA256},
			"/root/foobar-root": {emptySHA256}, "/usr/bin/foobar-bin": {emptySHA256}, "/usr/lib64/foobar64.so": {emptySHA256},
			"/home/foobar/non-root": {emptySHA256},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			imp, err := ImportKeylime(tc.file, klData(t, tc.file), tc.opt)
			if tc.files != nil {
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(tc.files, imp.Files); d != "" {
					t.Errorf("files (-want +got):\n%s", d)
				}
				return
			}
			if err == nil {
				t.Fatalf("ImportKeylime(%s) = %+v, want an error", tc.file, imp.Files)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
			for _, s := range tc.text {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// TestKeylimeSignedSample: the DSSE envelope Keylime signed verifies with
// its key, and its payload is byte for byte Keylime's unsigned policy.
func TestKeylimeSignedSample(t *testing.T) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(klData(t, "runtime-policy-test-signed.json"), &top); err != nil {
		t.Fatal(err)
	}
	payload, checked, err := openDSSE("signed", top, klKey(t, "runtime-policy-pubkey.pub"))
	if err != nil || !checked {
		t.Fatalf("openDSSE = checked %v, %v", checked, err)
	}
	if !bytes.Equal(payload, klData(t, "runtime-policy-test.json")) {
		t.Error("the signed payload differs from runtime-policy-test.json")
	}
	// keylime's keyid for an ECDSA key is the SHA-256 of its PEM.
	if sum := sha256.Sum256(klData(t, "runtime-policy-pubkey.pub")); !bytes.Contains(klData(t, "runtime-policy-test-signed.json"), []byte(hexs(sum[:]))) {
		t.Error("the envelope's keyid is not the SHA-256 of the public key PEM")
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}

func TestKeylimeSignatureRefusals(t *testing.T) {
	p521pub := &p521(t).PublicKey
	good := klKey(t, "runtime-policy-pubkey.pub")
	opt := func(k crypto.PublicKey) KeylimeOptions { return KeylimeOptions{Key: k, Digest256: KeylimeSHA256} }
	envelope := func(payloadType string) []byte {
		return fmt.Appendf(nil, `{"payload":%q,"payloadType":%q,"signatures":[]}`, base64.StdEncoding.EncodeToString(klData(t, "runtime-policy.json")), payloadType)
	}
	for _, tc := range []struct {
		name string
		data []byte
		opt  KeylimeOptions
		is   error
		text string
	}{
		{"bad_signature", klData(t, "runtime-policy-test-signed-bad.json"), opt(good), ErrKeylimeSignature, "signature 0"},
		{"other_key", klData(t, "runtime-policy-test-signed.json"), opt(p521pub), ErrKeylimeSignature, "ECDSA signature does not verify"},
		{"unsigned_policy_with_key", klData(t, "runtime-policy.json"), opt(good), ErrKeylimeSignature, "not a DSSE envelope"},
		{"allowlist_with_key", klData(t, "ima-allowlist-short.txt"), opt(good), ErrKeylimeSignature, "allowlist carries no signature"},
		{"no_signatures", envelope(KeylimePayloadType), opt(good), ErrKeylimeSignature, "no signatures"},
		{"wrong_payload_type", envelope("application/vnd.in-toto+json"), opt(nil), nil, `payloadType "application/vnd.in-toto+json"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			imp, err := ImportKeylime(tc.name, tc.data, tc.opt)
			if err == nil {
				t.Fatalf("ImportKeylime = %+v, want an error", imp)
			}
			if (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q; want %v and %q", err, tc.is, tc.text)
			}
		})
	}
}

// sign wraps payload in a DSSE envelope as keylime-policy sign does.
func sign(t *testing.T, payload []byte, signer func(msg []byte) []byte) []byte {
	t.Helper()
	sig := signer(dssePAE(KeylimePayloadType, payload))
	b, err := json.Marshal(map[string]any{"payload": base64.StdEncoding.EncodeToString(payload), "payloadType": KeylimePayloadType,
		"signatures": []map[string]string{{"keyid": "x", "sig": base64.StdEncoding.EncodeToString(sig)}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKeylimeSignedImport signs Keylime's SHA-256 policy with Keylime's
// P-521 test key (ECDSA with SHA-256, as keylime/dsse/ecdsa.py does) and
// with RSA keys, imports it, and refuses it once the payload is changed.
func TestKeylimeSignedImport(t *testing.T) {
	payload := klData(t, "runtime-policy.json")
	ec := p521(t)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	h := func(m []byte) []byte { s := sha256.Sum256(m); return s[:] }
	for _, tc := range []struct {
		name   string
		key    crypto.PublicKey
		signer func([]byte) []byte
	}{
		{"ecdsa_p521", &ec.PublicKey, func(m []byte) []byte { s, _ := ecdsa.SignASN1(rand.Reader, ec, h(m)); return s }},
		{"rsa_pkcs1v15", &rk.PublicKey, func(m []byte) []byte { s, _ := rsa.SignPKCS1v15(rand.Reader, rk, crypto.SHA256, h(m)); return s }},
		{"rsa_pss", &rk.PublicKey, func(m []byte) []byte { s, _ := rsa.SignPSS(rand.Reader, rk, crypto.SHA256, h(m), nil); return s }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := sign(t, payload, tc.signer)
			imp, err := ImportKeylime("signed.json", env, KeylimeOptions{Key: tc.key, Digest256: KeylimeSHA256})
			if err != nil {
				t.Fatal(err)
			}
			if !imp.Signed || !imp.SignatureChecked || len(imp.Files) != 7 || imp.Format != "DSSE-signed runtime policy" {
				t.Errorf("import: signed %v checked %v, %d files, format %q", imp.Signed, imp.SignatureChecked, len(imp.Files), imp.Format)
			}
			// The same signature over a changed payload.
			var e map[string]any
			json.Unmarshal(env, &e)
			e["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte("foobar-bin"), []byte("foobar-bim"), 1))
			tampered, _ := json.Marshal(e)
			if _, err := ImportKeylime("tampered.json", tampered, KeylimeOptions{Key: tc.key, Digest256: KeylimeSHA256}); !errors.Is(err, ErrKeylimeSignature) {
				t.Errorf("tampered payload: %v, want ErrKeylimeSignature", err)
			}
			// Without a key it is unwrapped, and says the signature was not checked.
			imp, err = ImportKeylime("signed.json", env, KeylimeOptions{Digest256: KeylimeSHA256})
			if err != nil || !imp.Signed || imp.SignatureChecked {
				t.Errorf("without a key: %+v, %v", imp, err)
			}
		})
	}
}

// TestImportKeylimeMixed: a policy with SHA-256 and other digests is
// refused, or with DropOtherAlgorithms imports the SHA-256 ones and lists
// every other one; labelled digests need no Digest256.
func TestImportKeylimeMixed(t *testing.T) {
	sha1 := "b261df1756a43b2d35c8ca13389c026840961d36"
	sha384 := "407272428a6bda6a8a0e450b4ccfe3ba52a2faf5f45853692b05212aa3103d43524e03050b4ee119a0ec0a069cb5794b"
	pol := fmt.Appendf(nil, `{"digests":{"/usr/bin/a":["sha256:%s","%s"],"/usr/bin/b":["%s"],"/usr/bin/c":["sm3_256:%s"],"boot_aggregate":["sha256:%s"]},"excludes":[]}`,
		emptySHA256, sha1, sha384, emptySHA256, emptySHA256)
	_, err := ImportKeylime("mixed.json", pol, KeylimeOptions{})
	if !errors.Is(err, ErrKeylimeAlgorithm) {
		t.Fatalf("mixed policy: %v, want ErrKeylimeAlgorithm", err)
	}
	for _, s := range []string{"sha1, sha384, sm3_256 digests", "/usr/bin/a", "/usr/bin/b", "/usr/bin/c", "1 SHA-256 digests"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	imp, err := ImportKeylime("mixed.json", pol, KeylimeOptions{DropOtherAlgorithms: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string][]string{"/usr/bin/a": {emptySHA256}}, imp.Files); d != "" {
		t.Errorf("files (-want +got):\n%s", d)
	}
	var left []string
	for _, l := range imp.LeftOut {
		left = append(left, l.Path+" "+l.Alg)
	}
	want := []string{"boot_aggregate sha256", "/usr/bin/a sha1", "/usr/bin/b sha384", "/usr/bin/c sm3_256"}
	if d := cmp.Diff(want, left, cmpSorted); d != "" {
		t.Errorf("left out (-want +got):\n%s", d)
	}
	for _, bad := range []struct{ digest, text string }{
		{strings.ToUpper(emptySHA256), "not lowercase hex"},
		{"md5:" + emptySHA256[:32], `unknown algorithm "md5"`},
		{"sha1:" + emptySHA256, "a sha1 digest has 40 hex characters, not 64"},
		{"zz" + emptySHA256[2:], "not hex"},
	} {
		_, err := ImportKeylime("bad.json", fmt.Appendf(nil, `{"digests":{"/x":[%q]}}`, bad.digest), KeylimeOptions{Digest256: KeylimeSHA256})
		if err == nil || !strings.Contains(err.Error(), bad.text) || !strings.Contains(err.Error(), `digests["/x"]`) {
			t.Errorf("digest %q: %v, want %q", bad.digest, err, bad.text)
		}
	}
}

var cmpSorted = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	sortStrings(out)
	return out
})

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// TestKeylimeRoundTrip: import, write, parse gives the same paths,
// digests and ignore patterns, also for paths holding pattern characters.
func TestKeylimeRoundTrip(t *testing.T) {
	data := bytes.Replace(klData(t, "runtime-policy.json"), []byte(`"/root/foobar-root"`), []byte(`"/root/foo[1]*?\\bar"`), 1)
	excl := ParseKeylimeExcludeList(klData(t, "exclude.txt"))
	imp, err := ImportKeylime("rt.json", data, KeylimeOptions{Digest256: KeylimeSHA256, Excludes: append(excl, `/usr/lib/.*\.pyc$`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := imp.Files[`/root/foo[1]*?\bar`]; !ok {
		t.Fatalf("the path with pattern characters was not imported: %v", imp.Files)
	}
	var buf bytes.Buffer
	if err := WriteReference(&buf, RefFile{Comments: []string{"round trip"}, Files: imp.Files, Ignore: imp.Ignore}); err != nil {
		t.Fatal(err)
	}
	ref, err := ParseReference("rt.yaml", &buf)
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	got := map[string][]string{}
	for p, want := range imp.Files {
		e, ok := Lookup(ref.Files, p)
		if !ok {
			t.Errorf("%s: not in the parsed reference", p)
			continue
		}
		got[p] = e.Allowed
		if d := cmp.Diff(want, e.Allowed); d != "" {
			t.Errorf("%s: allowed (-imported +parsed):\n%s", p, d)
		}
	}
	if len(ref.Files) != len(imp.Files) {
		t.Errorf("parsed %d file entries, imported %d", len(ref.Files), len(imp.Files))
	}
	var pats []string
	for _, p := range ref.Ignore {
		pats = append(pats, p.String())
	}
	if d := cmp.Diff(imp.Ignore, pats); d != "" {
		t.Errorf("ignore (-imported +parsed):\n%s", d)
	}
	for path, want := range map[string]bool{
		"/var/log/wtmp": true, "/var/log/wtmp.1": true, "/sys/fs/cgroup/x": true, "/sys/fs": false,
		"/usr/lib/a/b.pyc": true, "/usr/lib/b.py": false, "/root/foo1": false, "/sys/fs/a\nb": false,
	} {
		if got := ref.Ignored(path); got != want {
			t.Errorf("Ignored(%q) = %v, want %v", path, got, want)
		}
	}
}

// TestTranslateKeylimeExcludeDifferential compares every translation with
// Go's regexp (which reads this subset of Python's syntax alike), anchored
// at the start as Python's re.match is, on clean absolute paths.
func TestTranslateKeylimeExcludeDifferential(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	atoms := []string{"/", "/", "a", "b", `\.`, ".", ".*", ".+", "[^/]*", "[^/]+", "[ab]", "[^a]", "/*", "(a|b/)", "a?", `\*`, "[.-/]", "(/a)?", ".?"}
	paths := randomPaths(r, 400)
	translated := 0
	for i := 0; i < 3000; i++ {
		var b strings.Builder
		if r.IntN(4) == 0 {
			b.WriteString("^")
		}
		for n := 1 + r.IntN(5); n > 0; n-- {
			b.WriteString(atoms[r.IntN(len(atoms))])
		}
		if r.IntN(2) == 0 {
			b.WriteString("$")
		}
		if checkTranslation(t, b.String(), paths) {
			translated++
		}
	}
	t.Logf("%d of 3000 generated expressions translated and agree with Go's regexp on %d paths", translated, len(paths))
	if translated < 2000 {
		t.Errorf("only %d of 3000 expressions translated", translated)
	}
}

func randomPaths(r *mrand.Rand, n int) []string {
	chars := []string{"a", "b", ".", "-", "*", "ab", "a.b"}
	out := []string{"/"}
	for len(out) < n {
		var b strings.Builder
		for d := 1 + r.IntN(4); d > 0; d-- {
			seg := ""
			for k := 1 + r.IntN(3); k > 0; k-- {
				seg += chars[r.IntN(len(chars))]
			}
			if seg == "." || seg == ".." {
				continue
			}
			b.WriteString("/" + seg)
		}
		if b.Len() > 0 {
			out = append(out, b.String())
		}
	}
	return out
}

// checkTranslation reports whether re translated, and fails the test when
// the patterns and the regular expression disagree on a path.
func checkTranslation(t *testing.T, re string, paths []string) bool {
	t.Helper()
	pats, err := TranslateKeylimeExclude(re)
	if err != nil {
		return false
	}
	gore, err := regexp.Compile(`^(?:` + re + `)`)
	if err != nil {
		t.Fatalf("%q translated to %q but Go cannot compile it: %v", re, pats, err)
	}
	var compiled []Pattern
	for _, p := range pats {
		c, err := CompilePattern(p)
		if err != nil {
			t.Fatalf("%q gave the bad pattern %q: %v", re, p, err)
		}
		compiled = append(compiled, c)
	}
	for _, p := range paths {
		want := gore.MatchString(p)
		got := false
		for _, c := range compiled {
			got = got || c.Match(p)
		}
		if got != want {
			t.Errorf("exclude %q -> %q: path %q: patterns match %v, Keylime's regex %v", re, pats, p, got, want)
			return true
		}
	}
	return true
}

func FuzzTranslateKeylimeExclude(f *testing.F) {
	for _, s := range []string{"/var/log/wtmp", "/sys/fs/.*", "^/root/rpmbuild/.*$", "/tmp/*", `/usr/lib/.*\.pyc$`, "boot_aggregate", "/a.b", "/opt/(foo|bar)/", "[^a]*", "/x[0-9]y$", "/(a|b)?c+"} {
		f.Add(s)
	}
	paths := randomPaths(mrand.New(mrand.NewPCG(3, 4)), 300)
	f.Fuzz(func(t *testing.T, re string) {
		if len(re) > 64 {
			return
		}
		checkTranslation(t, re, paths)
	})
}

func TestTranslateKeylimeExcludeRefuses(t *testing.T) {
	for re, text := range map[string]string{
		`/usr/\d+`:     `escape \d`,
		`/home/\w+/`:   `escape \w`,
		`(?i)/tmp`:     "flags",
		`/a(?=b)`:      "flags and look-around",
		`/a{2,}`:       "counted repetition",
		`/[[:alpha:]]`: "POSIX",
		`/[a-z]*`:      "narrower than any character",
		`/(ab)*`:       "more than one character",
		`/a$|/b^`:      `"^" inside`,
		`/[a/]*`:       "holds / but not every character",
		`/(ab|cd|ef)(ab|cd|ef)(ab|cd|ef)(ab|cd|ef)`: "more than 32",
	} {
		if pats, err := TranslateKeylimeExclude(re); err == nil || !strings.Contains(err.Error(), text) {
			t.Errorf("TranslateKeylimeExclude(%q) = %q, %v; want an error saying %q", re, pats, err, text)
		}
	}
}

// TestImportKeylimeExcludes: an exclude without an exact pattern is
// refused, or left out and listed when that is allowed.
func TestImportKeylimeExcludes(t *testing.T) {
	pol := bytes.Replace(klData(t, "runtime-policy.json"), []byte(`"excludes": []`), []byte(`"excludes": ["/tmp/.*", "/home/\\w+/\\.cache/", "boot_aggregate"]`), 1)
	_, err := ImportKeylime("ex.json", pol, KeylimeOptions{Digest256: KeylimeSHA256})
	if !errors.Is(err, ErrKeylimeExcludes) || !strings.Contains(err.Error(), `"/home/\\w+/\\.cache/"`) || !strings.Contains(err.Error(), "1 of 3") {
		t.Fatalf("error %v; want ErrKeylimeExcludes naming the exclude", err)
	}
	imp, err := ImportKeylime("ex.json", pol, KeylimeOptions{Digest256: KeylimeSHA256, DropUnmappedExcludes: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"/tmp/*/**"}, imp.Ignore); d != "" {
		t.Errorf("ignore (-want +got):\n%s", d)
	}
	if len(imp.Unmapped) != 1 || imp.Unmapped[0].Regex != `/home/\w+/\.cache/` {
		t.Errorf("unmapped: %+v", imp.Unmapped)
	}
	if !strings.Contains(strings.Join(imp.Notes, "\n"), `"boot_aggregate" matches no clean absolute path`) {
		t.Errorf("notes: %q", imp.Notes)
	}
}

func TestReferenceIgnoreErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"ignore: /tmp\n", `r.yaml:1: ignore: want a list of paths or patterns, have "/tmp"`},
		{"ignore: [tmp/**]\n", `r.yaml:1: ignore: "tmp/**" is not an absolute path or pattern`},
		{"ignore: [/a/b**]\n", `r.yaml:1: ignore: bad pattern "/a/b**": ** must be a whole path segment`},
	} {
		if _, err := ParseReference("r.yaml", strings.NewReader(tc.yaml)); err == nil || err.Error() != tc.want {
			t.Errorf("ParseReference(%q) = %v, want %s", tc.yaml, err, tc.want)
		}
	}
}

// TestImportKeylimeLegacyForms: the older JSON allowlist keeps its digests
// under "hashes" (Keylime's convert_runtime_policy.py), and a text
// allowlist may carry "%keyring:" lines.
func TestImportKeylimeLegacyForms(t *testing.T) {
	legacy := bytes.Replace(klData(t, "runtime-policy.json"), []byte(`"digests"`), []byte(`"hashes"`), 1)
	imp, err := ImportKeylime("legacy.json", legacy, KeylimeOptions{Digest256: KeylimeSHA256})
	if err != nil || imp.Format != "JSON allowlist" || len(imp.Files) != 7 {
		t.Fatalf("legacy JSON allowlist: %+v, %v", imp, err)
	}
	text := "a7d52aaa18c23d2d9bb2abb4308c0eeee67387a42259f4a6b1a42257065f3d5a  %keyring:.ima\n" + emptySHA256 + "\t/usr/bin/x\n\n"
	imp, err = ImportKeylime("list.txt", []byte(text), KeylimeOptions{Digest256: KeylimeSHA256})
	if err != nil {
		t.Fatal(err)
	}
	if imp.Format != "allowlist" || len(imp.Files) != 1 || len(imp.LeftOut) != 1 || !strings.Contains(imp.LeftOut[0].Reason, "keyring") {
		t.Errorf("allowlist with a keyring line: %+v", imp)
	}
	if _, err := ImportKeylime("list.txt", []byte(emptySHA256+"\n"), KeylimeOptions{Digest256: KeylimeSHA256}); err == nil || !strings.Contains(err.Error(), "list.txt:1") {
		t.Errorf("a line without a path: %v", err)
	}
}

// TestKeylimeKeyForms: keylime-policy sign gives an ECDSA public key or an
// x509 certificate; both verify the envelope.
func TestKeylimeKeyForms(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dsse_lib"}, NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	env := sign(t, klData(t, "runtime-policy.json"), func(m []byte) []byte {
		h := sha256.Sum256(m)
		s, _ := ecdsa.SignASN1(rand.Reader, key, h[:])
		return s
	})
	for name, p := range map[string][]byte{
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"public_key":  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}),
	} {
		k, err := ParseKeylimeKey(name, p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if imp, err := ImportKeylime("signed.json", env, KeylimeOptions{Key: k, Digest256: KeylimeSHA256}); err != nil || !imp.SignatureChecked {
			t.Errorf("%s: %+v, %v", name, imp, err)
		}
	}
	if _, err := ParseKeylimeKey("none.pem", []byte("not PEM")); err == nil {
		t.Error("ParseKeylimeKey accepted a file without PEM")
	}
}

// FuzzImportKeylime: any input is imported or refused without a panic,
// and whatever is imported reads back the same from the reference file.
func FuzzImportKeylime(f *testing.F) {
	for _, name := range []string{"runtime-policy.json", "ima-allowlist-short.txt", "runtime-policy-test-signed.json", "policy-sha1.json", "allowlist-sha256.txt"} {
		b, err := os.ReadFile(filepath.Join("../testdata/keylime", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(emptySHA256 + "  /usr/bin/\xff\n" + emptySHA256 + "  /usr/bin/ok\n"))
	f.Add([]byte(`{"hashes":{"/a[1]":["sha256:` + emptySHA256 + `"]},"excludes":["/tmp/.*","x{"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		imp, err := ImportKeylime("fuzz", data, KeylimeOptions{Digest256: KeylimeSHA256, DropOtherAlgorithms: true, DropUnmappedExcludes: true})
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := WriteReference(&buf, RefFile{Files: imp.Files, Ignore: imp.Ignore}); err != nil {
			t.Fatal(err)
		}
		ref, err := ParseReference("fuzz.yaml", &buf)
		if err != nil {
			t.Fatalf("the written reference does not parse: %v\n%s", err, buf.String())
		}
		for p, want := range imp.Files {
			e, ok := Lookup(ref.Files, p)
			if !ok || !cmp.Equal(e.Allowed, want) {
				t.Fatalf("%q: imported %v, read back %+v", p, want, e)
			}
		}
	})
}

// TestWriteReferenceLongPaths: a path longer than YAML's 1024-character
// limit on implicit keys is written so that the file reads back.
func TestWriteReferenceLongPaths(t *testing.T) {
	long := "/" + strings.Repeat("d/", 600) + "file*"
	files := map[string][]string{long: {emptySHA256}, "/bin/short": {emptySHA256}}
	var buf bytes.Buffer
	if err := WriteReference(&buf, RefFile{Files: files}); err != nil {
		t.Fatal(err)
	}
	ref, err := ParseReference("long.yaml", &buf)
	if err != nil {
		t.Fatalf("the written reference does not parse: %v", err)
	}
	for path, want := range files {
		e, ok := Lookup(ref.Files, path)
		if !ok || len(e.Allowed) != 1 || e.Allowed[0] != want[0] {
			t.Errorf("%.40s...: entry %+v, %v", path, e, ok)
		}
	}
}

func TestWriteReferenceRefusesInvalidUTF8(t *testing.T) {
	err := WriteReference(&bytes.Buffer{}, RefFile{Files: map[string][]string{"/bin/\xff": {emptySHA256}}})
	if err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
		t.Errorf("WriteReference with a non-UTF-8 path: %v", err)
	}
}
