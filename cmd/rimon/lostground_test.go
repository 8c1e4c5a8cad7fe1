package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/rimon-dev/rimon/internal/testtpm"
)

// TestLogCheckCallsResetAReset resets PCR 23 with tpm2_pcrreset after
// rimon recorded three files: log check must say the PCR was reset, not
// that the records were written but not extended (which --repair would
// then "fix" by extending them into the reset PCR).
func TestLogCheckCallsResetAReset(t *testing.T) {
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	var files []string
	for _, n := range []string{"a", "b", "c"} {
		files = append(files, writeFile(t, filepath.Join(dir, n), n))
	}
	mustRimon(t, append([]string{"measure", "--tpm", spec, "--log", log}, files...)...)
	if out, err := exec.Command("tpm2_pcrreset", "-T", testtpm.TCTI(spec), "23").CombinedOutput(); err != nil {
		t.Fatalf("tpm2_pcrreset 23: %v\n%s", err, out)
	}
	r := rimon(t, "log", "check", "--tpm", spec, "--log", log)
	if r.code != exitCheck || !strings.Contains(r.stderr, "the PCR was reset") || strings.Contains(r.stderr, "not extended") {
		t.Errorf("log check after a PCR reset: exit %d, stderr %q; want exit %d and \"the PCR was reset\"", r.code, r.stderr, exitCheck)
	}
	if r := rimon(t, "log", "check", "--repair", "--tpm", spec, "--log", log); r.code != exitCheck || !strings.Contains(r.stderr, "the PCR was reset") {
		t.Errorf("log check --repair after a PCR reset: exit %d, stderr %q; want exit %d and \"the PCR was reset\"", r.code, r.stderr, exitCheck)
	}
}

// TestHelpExamplesExist checks that every file of the repository that a
// command's help names (packaging/..., docs/...) exists.
func TestHelpExamplesExist(t *testing.T) {
	ref := regexp.MustCompile(`\b(?:packaging|docs|testdata)/[\w./-]*\w`)
	var walk func(c *cobra.Command)
	checked := 0
	walk = func(c *cobra.Command) {
		for _, name := range ref.FindAllString(c.Long+"\n"+c.Example, -1) {
			checked++
			if _, err := os.Stat(filepath.Join("..", "..", name)); err != nil {
				t.Errorf("rimon %s --help names %s, which does not exist", c.CommandPath(), name)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRootCmd(&bytes.Buffer{}, &bytes.Buffer{}))
	if checked == 0 {
		t.Fatal("no help text names a file: the pattern is wrong")
	}
}
