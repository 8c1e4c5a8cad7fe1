package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

const resetNonce = "00112233445566778899aabbccddeeff"

// TestVerifyAfterPCRReset plays root on the attested machine: the log
// holds measurements the reference does not approve, so the verdict is
// UNTRUSTED; then PCR 23 is reset (tpm2_pcrreset), alone or followed by
// the extend of the first, approved record (tpm2_pcrextend). A quote taken
// then covers none or one of the records, and the rest trail it: that
// must not turn the verdict into TRUSTED.
func TestVerifyAfterPCRReset(t *testing.T) {
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	good := writeFile(t, filepath.Join(dir, "good"), "approved")
	ref := writeFile(t, filepath.Join(dir, "ref.yaml"), "version: 1\nunlisted: fail\nfiles:\n  "+good+": ["+sha256Hex("approved")+"]\n")
	ak := writeFile(t, filepath.Join(dir, "ak.pem"), mustRimon(t, "provision", "--tpm", spec))
	mustRimon(t, "measure", "--tpm", spec, "--log", log, good)
	var bad []string
	for _, n := range []string{"x", "y", "z"} {
		bad = append(bad, writeFile(t, filepath.Join(dir, n), "not approved "+n))
	}
	mustRimon(t, append([]string{"measure", "--tpm", spec, "--log", log}, bad...)...)
	verify := func() result {
		t.Helper()
		ev := filepath.Join(dir, "ev")
		mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", resetNonce, "--out", ev)
		return rimon(t, "verify", "--evidence", ev, "--nonce", resetNonce, "--ak", ak, "--reference", ref)
	}
	if r := verify(); r.code != exitCheck || !strings.Contains(r.stdout, "UNTRUSTED") {
		t.Fatalf("before the reset: exit %d, want %d (UNTRUSTED)\n%s%s", r.code, exitCheck, r.stdout, r.stderr)
	}

	reset := func() {
		t.Helper()
		if out, err := exec.Command("tpm2_pcrreset", "-T", testtpm.TCTI(spec), "23").CombinedOutput(); err != nil {
			t.Fatalf("tpm2_pcrreset 23: %v\n%s", err, out)
		}
	}
	reset()
	r := verify()
	if r.code != exitCheck || !strings.Contains(r.stdout, "4 records from record 0 on are not covered by the quote") {
		t.Errorf("after a reset: exit %d, want %d naming the 4 uncovered records\n%s%s", r.code, exitCheck, r.stdout, r.stderr)
	}

	// Reset, then extend only the approved record's digests, as an
	// attacker who wants a TRUSTED prefix would.
	reset()
	recs, _, err := logfile.Snapshot(context.Background(), log)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range recs[0].Digests {
		arg := "23:" + eventlog.BankName(d.Alg) + "=" + hexs(d.Value)
		if out, err := exec.Command("tpm2_pcrextend", "-T", testtpm.TCTI(spec), arg).CombinedOutput(); err != nil {
			t.Fatalf("tpm2_pcrextend %s: %v\n%s", arg, err, out)
		}
	}
	r = verify()
	if r.code != exitCheck || !strings.Contains(r.stdout, "3 records from record 1 on are not covered by the quote") {
		t.Errorf("after a reset and the extend of record 0: exit %d, want %d naming the 3 uncovered records\n%s%s", r.code, exitCheck, r.stdout, r.stderr)
	}
}
