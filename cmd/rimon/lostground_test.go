package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
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

// lostSetup writes a file and a policy that watches its directory.
func lostSetup(t *testing.T) (dir, app, pol, log string) {
	t.Helper()
	dir = t.TempDir()
	app = writeFile(t, filepath.Join(dir, "data", "app"), "v1")
	pol = writeFile(t, filepath.Join(dir, "policy.yaml"), fmt.Sprintf("settings:\n  debounce: 20ms\nmeasure:\n  - dir: %s\n", filepath.Dir(app)))
	return dir, app, pol, filepath.Join(dir, "m.log")
}

func sha(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// waitRecorded polls the log until it holds a record of path with the
// digest of content.
func waitRecorded(t *testing.T, log, path, content string, agentLog func() string) {
	t.Helper()
	want := sha(content)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		recs, _, err := eventlog.Snapshot(context.Background(), log)
		if err != nil {
			continue
		}
		for i := range recs {
			if recs[i].Content.Str("path") == path && recs[i].Content.Str("sha256") == want {
				return
			}
		}
	}
	t.Fatalf("no record of %s with the digest of %q after 30s; agent:\n%s", path, content, agentLog())
}

// waitExit waits for the agent to exit on its own.
func (a *agent) waitExit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-a.exited:
		return err
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
		t.Fatalf("the agent still runs 30s after losing its ground:\n%s", a.log())
		return nil
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestAgentTPMRestartWithState kills swtpm under a running agent and
// starts it again with its state (volatile state saved first, so PCR 23
// keeps its value): the agent reconnects, reconciles (extending the record
// whose extend was lost, if any) and carries on recording. It used to fail
// with "broken pipe" forever.
func TestAgentTPMRestartWithState(t *testing.T) {
	sw := testtpm.StartSwtpm(t)
	_, app, pol, log := lostSetup(t)
	a := startAgent(t, "--tpm", sw.Spec, "--policy", pol, "--log", log)
	sw.SaveVolatile()
	sw.Restart(true)
	writeFile(t, app, "v2")
	waitRecorded(t, log, app, "v2", a.log)
	writeFile(t, app, "v3")
	waitRecorded(t, log, app, "v3", a.log)
	if err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v\n%s", err, a.log())
	}
	if !strings.Contains(a.log(), "log and TPM agree") {
		t.Errorf("the agent did not end with log and TPM in agreement:\n%s", a.log())
	}
	if r := rimon(t, "log", "check", "--tpm", sw.Spec, "--log", log); r.code != 0 {
		t.Errorf("rimon log check after the restart: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestAgentTPMRestartWithoutState starts swtpm again as a new TPM under a
// running agent: PCR 23 is back at its reset value and no longer vouches
// for the log, so the agent must stop with a non-zero exit that says so.
func TestAgentTPMRestartWithoutState(t *testing.T) {
	sw := testtpm.StartSwtpm(t)
	_, _, pol, log := lostSetup(t)
	a := startAgent(t, "--tpm", sw.Spec, "--policy", pol, "--log", log)
	sw.Restart(false)
	err := a.waitExit(t)
	if code := exitCode(err); code == 0 || !strings.Contains(a.log(), "the PCR was reset") {
		t.Errorf("agent after a TPM restart without state: exit %d, want non-zero and \"the PCR was reset\":\n%s", code, a.log())
	}
}

// TestAgentLogDeleted deletes the log under a running agent, which used to
// write on into the deleted file and say "log and TPM agree" at shutdown.
func TestAgentLogDeleted(t *testing.T) {
	sw := testtpm.StartSwtpm(t)
	_, _, pol, log := lostSetup(t)
	a := startAgent(t, "--tpm", sw.Spec, "--policy", pol, "--log", log)
	if err := os.Remove(log); err != nil {
		t.Fatal(err)
	}
	err := a.waitExit(t)
	if code := exitCode(err); code == 0 || !strings.Contains(a.log(), log+" was deleted") {
		t.Errorf("agent after its log was deleted: exit %d, want non-zero and a message that %s was deleted:\n%s", code, log, a.log())
	}
	if strings.Contains(a.log(), "log and TPM agree") {
		t.Errorf("the agent said log and TPM agree after its log was deleted:\n%s", a.log())
	}
}
