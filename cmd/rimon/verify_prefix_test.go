package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	attestagent "github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// TestVerifyLogPrefix: evidence that leaves out its first records is
// verified with the verifier's own copy of them (--log-prefix), replayed
// with the rest; without one it is a usage error, and a copy too short,
// or of another log, makes the evidence invalid, --json naming the check.
func TestVerifyLogPrefix(t *testing.T) {
	ctx := context.Background()
	tp := testtpm.Open(t)
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	w, _, err := logfile.OpenWriter(ctx, log, tp, logfile.WriterOptions{Banks: []cryptoHashT{sha256Hash}, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/usr/bin/a", "/usr/bin/b", "/usr/bin/c"} {
		if _, err := w.Append(ctx, 23, eventlog.Event{Kind: "file", Path: p, SHA256: strings.Repeat("ab", 32), Reason: "initial"}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	ev, err := attestagent.Collect(ctx, tp, log, []byte(testNonce), []int{23}, []cryptoHashT{sha256Hash})
	if err != nil {
		t.Fatal(err)
	}
	full := ev.Log
	if ev.Log, err = attest.SkipRecords(full, 2); err != nil {
		t.Fatal(err)
	}
	ev.LogStart = 2
	b, _ := ev.Marshal()
	evPath := writeFile(t, filepath.Join(dir, "evidence"), string(b))
	pemb, _ := attest.PublicKeyPEM(ak.Key)
	akPath := writeFile(t, filepath.Join(dir, "ak.pem"), string(pemb))
	verify := func(args ...string) result {
		return rimon(t, append([]string{"verify", "--evidence", evPath, "--nonce", hexs([]byte(testNonce)), "--ak", akPath}, args...)...)
	}

	if r := verify(); r.code != exitUsage || !strings.Contains(r.stderr, "the evidence starts at record 2: give the earlier records with --log-prefix") {
		t.Errorf("no prefix: exit %d, %s", r.code, r.stderr)
	}
	prefix := writeFile(t, filepath.Join(dir, "prefix"), string(full))
	if r := verify("--log-prefix", prefix); r.code != 0 || !strings.Contains(r.stdout, "the first 3 of 3 records replay") {
		t.Errorf("with the prefix: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	first, _ := attest.FirstRecords(full, 1)
	short := writeFile(t, filepath.Join(dir, "short"), string(first))
	other := writeFile(t, filepath.Join(dir, "other"), strings.Replace(string(full), "/usr/bin/a", "/usr/bin/x", 1))
	for _, tc := range []struct{ name, prefix, check, msg string }{
		{"short", short, "log prefix", "log prefix: the log holds only 1 complete records, not 2"},
		{"another log", other, attest.CheckLog, "log replay"},
	} {
		r := verify("--log-prefix", tc.prefix, "--json")
		var out struct {
			FailedCheck string `json:"failed_check"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.code != exitError || out.FailedCheck != tc.check || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%s prefix: exit %d, failed_check %q (%v), want exit %d, %q and %q\n%s%s", tc.name, r.code, out.FailedCheck, err, exitError, tc.check, tc.msg, r.stdout, r.stderr)
		}
	}
}
