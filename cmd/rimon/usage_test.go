package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rimon-dev/rimon/internal/testtpm"
)

// TestSyscallEINVALIsNotUsage: EINVAL's text is "invalid argument", which
// the command line's own errors also say. A system call that fails with it
// is an error (exit 2), never a usage error (exit 3).
func TestSyscallEINVALIsNotUsage(t *testing.T) {
	// connect(2) on a unix socket path longer than sun_path fails with EINVAL.
	long := "unix:" + filepath.Join(t.TempDir(), strings.Repeat("x", 200))
	r := rimon(t, "pcr", "read", "--tpm", long, "23")
	if r.code != exitError || !strings.Contains(r.stderr, "invalid argument") {
		t.Errorf("rimon pcr read --tpm %s: exit %d, stderr %q; want exit %d naming EINVAL", long, r.code, r.stderr, exitError)
	}
	wrapped := fmt.Errorf("measure /x: %w", &os.PathError{Op: "read", Path: "/x", Err: syscall.EINVAL})
	if isUsage(wrapped) {
		t.Errorf("isUsage(%v) = true, want false", wrapped)
	}
}

// TestUsageErrorsByType: every error about the command line exits 3, and
// each is classified by where it comes from.
func TestUsageErrorsByType(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		text string
	}{
		{"unknown_command", []string{"frobnicate"}, `unknown command "frobnicate" for "rimon"`},
		{"unknown_subcommand", []string{"reference", "frobnicate"}, `unknown command "frobnicate" for "rimon reference"`},
		{"unknown_flag", []string{"log", "show", "--frobnicate"}, "unknown flag: --frobnicate"},
		{"bad_flag_value", []string{"measure", "--pcr", "abc", "x"}, `invalid argument "abc"`},
		{"too_many_args", []string{"pcr", "read", "1", "2"}, "accepts 1 arg(s), received 2"},
		{"unexpected_arg", []string{"log", "show", "x"}, `unknown command "x"`},
		{"required_flag", []string{"quote", "--tpm", "sim"}, `required flag(s) "nonce" not set`},
		{"unknown_help_topic", []string{"help", "reference", "frobnicate"}, `unknown help topic "reference frobnicate"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rimon(t, tc.args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.text) {
				t.Errorf("rimon %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, exitUsage, tc.text)
			}
		})
	}
	if isUsage(errors.New("unknown command")) {
		t.Error("isUsage classifies an untyped error by its text")
	}
}

// TestMeasureLocalityPCRWritesNothing: PCRs 17-22 cannot be extended at
// locality 0. measure refuses them before it writes anything, so the log
// stays usable for later measurements.
func TestMeasureLocalityPCRWritesNothing(t *testing.T) {
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "f"), "f")
	log := filepath.Join(dir, "m.log")
	for pcr := 17; pcr <= 22; pcr++ {
		r := rimon(t, "measure", "--tpm", spec, "--log", log, "--pcr", fmt.Sprint(pcr), file)
		if r.code != exitUsage || !strings.Contains(r.stderr, fmt.Sprintf("--pcr %d: PCR not extendable at locality 0", pcr)) {
			t.Errorf("measure --pcr %d: exit %d, stderr %q; want a usage error about locality", pcr, r.code, r.stderr)
		}
		if _, err := os.Stat(log); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("measure --pcr %d left a log behind (%v)", pcr, err)
		}
	}
	mustRimon(t, "measure", "--tpm", spec, "--log", log, file)
	mustRimon(t, "measure", "--tpm", spec, "--log", log, file)
	out := mustRimon(t, "log", "check", "--tpm", spec, "--log", log)
	if !strings.Contains(out, "agree") {
		t.Errorf("log check after the refusals: %s", out)
	}
}
