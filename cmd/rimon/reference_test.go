package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rimon-dev/rimon/policy"
)

const keylimeData = "../../testdata/keylime/"

// TestImportKeylimeCLI runs import-keylime on Keylime's own samples. Each
// case was a wrong answer before: a SHA-1 policy imported nothing and
// exited 0, SM3 digests came out as SHA-256, allowlists and DSSE envelopes
// were refused with parser errors.
func TestImportKeylimeCLI(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		text []string
	}{
		{"sha1_refused", []string{"policy-sha1.json"}, exitError, []string{"sha1 digests can never match", "/base_policy_data", "keylime-policy create runtime --algo sha256"}},
		{"sha384_refused", []string{"--digest-alg", "sha256", "policy-sha384.json"}, exitError, []string{"sha384 digests", "/base_policy_data"}},
		{"sm3_not_relabelled", []string{"policy-sm3_256.json"}, exitError, []string{"SHA-256 or SM3-256", "/rootfs_data", "--digest-alg sha256"}},
		{"sm3_refused", []string{"--digest-alg", "sm3_256", "policy-sm3_256.json"}, exitError, []string{"sm3_256 digests can never match", "/rootfs_data"}},
		{"allowlist_read", []string{"--digest-alg", "sha256", "ima-allowlist-short.txt"}, exitError, []string{"sha1 digests", "20 such digests", "/boot/grub2/i386-pc/"}},
		{"dsse_unwrapped", []string{"runtime-policy-test-signed.json"}, exitError, []string{"sha1 digests"}},
		{"dsse_checked", []string{"--keylime-key", keylimeData + "runtime-policy-pubkey.pub", "runtime-policy-test-signed.json"}, exitError, []string{"sha1 digests"}},
		{"dsse_bad_signature", []string{"--keylime-key", keylimeData + "runtime-policy-pubkey.pub", "runtime-policy-test-signed-bad.json"}, exitError, []string{"bad signature"}},
		{"bad_digest_alg", []string{"--digest-alg", "md5", "policy-sha1.json"}, exitUsage, []string{`--digest-alg "md5"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"reference", "import-keylime"}, tc.args...)
			args[len(args)-1] = keylimeData + args[len(args)-1]
			r := rimon(t, args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\n%s", r.code, tc.code, r.stderr)
			}
			for _, s := range tc.text {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr %q does not contain %q", r.stderr, s)
				}
			}
			if r.stdout != "" {
				t.Errorf("a refused import printed a reference:\n%s", r.stdout)
			}
		})
	}
}

// TestImportKeylimeAllowlistFromSha256sum: sha256sum's output is the
// allowlist format (create_allowlist.sh runs it); the imported reference
// holds exactly sha256sum's digests, and the signed-envelope warning and
// excludes appear where they should.
func TestImportKeylimeAllowlistFromSha256sum(t *testing.T) {
	dir := t.TempDir()
	files := []string{writeFile(t, filepath.Join(dir, "bin", "a"), "a"), writeFile(t, filepath.Join(dir, "lib", "b.so"), "b")}
	out, err := exec.Command("sha256sum", files...).Output()
	if err != nil {
		t.Fatal(err)
	}
	list := writeFile(t, filepath.Join(dir, "allowlist.txt"), string(out))
	excl := writeFile(t, filepath.Join(dir, "excl.txt"), "boot_aggregate\n"+dir+"/tmp/.*\n")
	r := rimon(t, "reference", "import-keylime", "--digest-alg", "sha256", "--excludelist", excl, list)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	ref, err := policy.ParseReference("ref.yaml", strings.NewReader(r.stdout))
	if err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	got := map[string]string{}
	for _, e := range ref.Files {
		got[e.Path] = e.Allowed[0]
	}
	want := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		d, p, _ := strings.Cut(l, "  ")
		want[p] = d
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("imported digests differ from sha256sum's (-sha256sum +imported):\n%s", d)
	}
	if !ref.Ignored(dir+"/tmp/x") || ref.Ignored(dir+"/bin/a") {
		t.Errorf("ignore patterns: %v", ref.Ignore)
	}
	if !strings.Contains(r.stderr, `exclude "boot_aggregate" matches no clean absolute path`) {
		t.Errorf("stderr: %s", r.stderr)
	}

}

// TestImportKeylimeSignedCLI signs Keylime's SHA-256 sample policy as
// keylime-policy sign does (ECDSA P-256, SHA-256, over DSSE's PAE).
func TestImportKeylimeSignedCLI(t *testing.T) {
	dir := t.TempDir()
	payload, err := os.ReadFile(keylimeData + "runtime-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pae := fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(policy.KeylimePayloadType), policy.KeylimePayloadType, len(payload), payload)
	h := sha256.Sum256(pae)
	sig, _ := ecdsa.SignASN1(rand.Reader, key, h[:])
	env, _ := json.Marshal(map[string]any{"payload": base64.StdEncoding.EncodeToString(payload), "payloadType": policy.KeylimePayloadType,
		"signatures": []map[string]string{{"sig": base64.StdEncoding.EncodeToString(sig)}}})
	signed := writeFile(t, filepath.Join(dir, "signed.json"), string(env))
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pub := writeFile(t, filepath.Join(dir, "signer.pub"), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))

	// A signed policy without a key to check it: refused, unless the
	// insecure flag says to import it unchecked.
	r := rimon(t, "reference", "import-keylime", "--digest-alg", "sha256", signed)
	if r.code != exitError || !strings.Contains(r.stderr, "give --keylime-key PEM to check its signature") || r.stdout != "" {
		t.Errorf("envelope without a key: exit %d\n%s%s", r.code, r.stderr, r.stdout)
	}
	r = rimon(t, "reference", "import-keylime", "--digest-alg", "sha256", "--insecure-skip-signature", signed)
	if r.code != 0 || !strings.Contains(r.stderr, "signature was NOT checked") || !strings.Contains(r.stdout, "NOT checked") {
		t.Errorf("unchecked envelope: exit %d\n%s%s", r.code, r.stderr, r.stdout)
	}
	r = rimon(t, "reference", "import-keylime", "--digest-alg", "sha256", "--keylime-key", pub, signed)
	if r.code != 0 || !strings.Contains(r.stdout, "DSSE signature verified with "+pub) || !strings.Contains(r.stderr, "imported 7 paths") {
		t.Errorf("checked envelope: exit %d\n%s%s", r.code, r.stderr, r.stdout)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ = x509.MarshalPKIXPublicKey(&other.PublicKey)
	writeFile(t, pub, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	r = rimon(t, "reference", "import-keylime", "--digest-alg", "sha256", "--keylime-key", pub, signed)
	if r.code != exitError || !strings.Contains(r.stderr, "bad signature") || r.stdout != "" {
		t.Errorf("another key: exit %d\n%s%s", r.code, r.stderr, r.stdout)
	}
}
