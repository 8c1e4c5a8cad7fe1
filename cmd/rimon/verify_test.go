package main

import (
	"bytes"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// swtpmWithBanks starts a private swtpm whose PCRs are allocated in the
// banks named (tpm2_pcrallocate, then a TPM reset through the control
// channel), and returns its rimon TPM specification.
func swtpmWithBanks(t *testing.T, alloc string) string {
	t.Helper()
	spec := testtpm.Swtpm(t)
	tcti := testtpm.TCTI(spec)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(spec, "tcp:"))
	p, _ := strconv.Atoi(port)
	for _, args := range [][]string{
		{"tpm2_pcrallocate", "-T", tcti, alloc},
		{"swtpm_ioctl", "--tcp", host + ":" + strconv.Itoa(p+1), "-i"},
		{"tpm2_startup", "-T", tcti, "-c"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return spec
}

// TestReadmeFlowOnEveryBankSet runs the README's attestation commands with
// their defaults on TPMs with {sha256}, {sha1, sha256} and all four banks:
// quote takes every active bank, verify accepts them and replays each.
func TestReadmeFlowOnEveryBankSet(t *testing.T) {
	for _, tc := range []struct{ name, alloc, pcrs string }{
		{"sha256", "sha1:none+sha256:all+sha384:none+sha512:none", "sha256:23"},
		{"sha1_sha256", "sha1:all+sha256:all+sha384:none+sha512:none", "sha1:23 sha256:23"},
		{"four_banks", "sha1:all+sha256:all+sha384:all+sha512:all", "sha1:23 sha256:23 sha384:23 sha512:23"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := swtpmWithBanks(t, tc.alloc)
			dir := t.TempDir()
			log := filepath.Join(dir, "m.log")
			app := writeFile(t, filepath.Join(dir, "app"), "v1")
			ak := writeFile(t, filepath.Join(dir, "ak.pem"), mustRimon(t, "provision", "--tpm", spec))
			mustRimon(t, "measure", "--tpm", spec, "--log", log, app)
			ev := filepath.Join(dir, "evidence")
			mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", testNonce, "--out", ev)
			ref := writeFile(t, filepath.Join(dir, "reference.yaml"), mustRimon(t, "reference", "generate", "--from-log", log))
			r := rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", ak, "--reference", ref)
			if r.code != 0 || !strings.HasPrefix(r.stdout, "TRUSTED") {
				t.Fatalf("verify with the defaults: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			var banks []string
			for _, l := range strings.Split(r.stdout, "\n") {
				if f := strings.Fields(l); len(f) == 3 && f[0] == "pcr" {
					banks = append(banks, f[1])
				}
			}
			if got := strings.Join(banks, " "); got != tc.pcrs {
				t.Errorf("verified PCRs %q, want %q", got, tc.pcrs)
			}
			if r := rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", ak, "--bank", "sha384", "--bank", "sha256"); tc.name != "four_banks" &&
				(r.code != exitError || !strings.Contains(r.stderr, "sha384:23 is missing")) {
				t.Errorf("verify --bank sha384: exit %d, %s; want the selection refused", r.code, r.stderr)
			}

			writeFile(t, app, "v2 tampered")
			mustRimon(t, "measure", "--tpm", spec, "--log", log, app)
			mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", testNonce, "--out", ev)
			r = rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", ak, "--reference", ref)
			if r.code != exitCheck || !strings.HasPrefix(r.stdout, "UNTRUSTED") || !strings.Contains(r.stdout, "FAIL file "+app+": digest not allowed") {
				t.Errorf("verify after a change: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestVerifyExplainsTrailingRecordsAndUnrecorded: records after the quote
// are explained (which record, which PCR and bank), and an evidence header
// that lists unrecorded changes makes the verdict untrusted, with or
// without a reference.
func TestVerifyExplainsTrailingRecordsAndUnrecorded(t *testing.T) {
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	a, b := writeFile(t, filepath.Join(dir, "a"), "a"), writeFile(t, filepath.Join(dir, "b"), "b")
	ak := writeFile(t, filepath.Join(dir, "ak.pem"), mustRimon(t, "provision", "--tpm", spec))
	mustRimon(t, "measure", "--tpm", spec, "--log", log, a)
	evPath := filepath.Join(dir, "evidence")
	mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", testNonce, "--out", evPath)
	// The same moment quoted as an agent that reports an unrecorded change
	// does: the quote binds the nonce and the list.
	unrecorded := []attest.Unrecorded{{Path: a, Cause: "unstable", Since: "2026-11-28T12:00:00Z", Tries: 3}}
	nonceBytes, _ := hex.DecodeString(testNonce)
	boundPath := filepath.Join(dir, "bound")
	mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", hex.EncodeToString(attest.QualifyingData(nonceBytes, unrecorded)), "--out", boundPath)
	mustRimon(t, "measure", "--tpm", spec, "--log", log, b)

	raw, _ := os.ReadFile(evPath)
	ev, err := attest.ParseEvidence(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	ev.Log, _ = os.ReadFile(log)
	write := func() {
		out, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, evPath, string(out))
	}
	write()
	r := rimon(t, "verify", "--evidence", evPath, "--nonce", testNonce, "--ak", ak)
	for _, want := range []string{
		"note 1 records after the quote (from record 1 on) are not covered and not trusted",
		"note record 1 (file " + b + ") is the first record the quote does not cover: it extends PCR 23 in sha1, sha256, sha384, sha512, and sha256:23 then replays to ",
		"(written after the quote was taken, or never extended into the TPM)",
	} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("verify with a trailing record: exit %d; want %q in\n%s%s", r.code, want, r.stdout, r.stderr)
		}
	}

	// A list added to evidence whose quote did not bind it fails the nonce.
	ev.Unrecorded = unrecorded
	write()
	if r := rimon(t, "verify", "--evidence", evPath, "--nonce", testNonce, "--ak", ak); r.code != exitError || !strings.Contains(r.stderr+r.stdout, "nonce") {
		t.Errorf("verify with an unrecorded list the quote does not bind: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	rawBound, _ := os.ReadFile(boundPath)
	bound, err := attest.ParseEvidence(bytes.NewReader(rawBound))
	if err != nil {
		t.Fatal(err)
	}
	ev.Quote = bound.Quote
	// The bound quote with its list removed (a proxy on plain HTTP) fails too.
	ev.Unrecorded = nil
	write()
	if r := rimon(t, "verify", "--evidence", evPath, "--nonce", testNonce, "--ak", ak); r.code != exitError || !strings.Contains(r.stderr+r.stdout, "nonce") {
		t.Errorf("verify with the unrecorded list removed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	ev.Unrecorded = unrecorded
	write()
	r = rimon(t, "verify", "--evidence", evPath, "--nonce", testNonce, "--ak", ak)
	if r.code != exitCheck || !strings.HasPrefix(r.stdout, "UNTRUSTED") ||
		!strings.Contains(r.stdout, "FAIL unrecorded change (unstable) since 2026-11-28T12:00:00Z: "+a) {
		t.Errorf("verify with an unrecorded change: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = rimon(t, "verify", "--evidence", evPath, "--nonce", testNonce, "--ak", ak, "--json")
	if r.code != exitCheck || !strings.Contains(r.stdout, `"unrecorded": [`) || !strings.Contains(r.stdout, `"trailing_problem": "record 1`) {
		t.Errorf("verify --json with an unrecorded change: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestWatchAKOutNeedsListen: the AK is written for verifiers of the evidence
// endpoint, so --ak-out without --listen is a usage error, refused before
// anything starts.
func TestWatchAKOutNeedsListen(t *testing.T) {
	dir := t.TempDir()
	pol := writeFile(t, filepath.Join(dir, "p.yaml"), "measure:\n  - file: "+filepath.Join(dir, "x")+"\n")
	r := rimon(t, "watch", "--tpm", "sim", "--policy", pol, "--log", filepath.Join(dir, "m.log"), "--ak-out", filepath.Join(dir, "ak.pem"))
	if r.code != exitUsage || !strings.Contains(r.stderr, "--ak-out goes with --listen") {
		t.Errorf("watch --ak-out without --listen: exit %d, %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "m.log")); err == nil {
		t.Error("the refused command created the log")
	}
}
