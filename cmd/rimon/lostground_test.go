package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/policy"
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

	// One record and a reset PCR look like a crash before the first
	// extend: the message says it may be either.
	log1 := filepath.Join(dir, "one.log")
	mustRimon(t, "measure", "--tpm", spec, "--log", log1, files[0])
	if out, err := exec.Command("tpm2_pcrreset", "-T", testtpm.TCTI(spec), "23").CombinedOutput(); err != nil {
		t.Fatalf("tpm2_pcrreset 23: %v\n%s", err, out)
	}
	if r := rimon(t, "log", "check", "--tpm", spec, "--log", log1); r.code != exitCheck || !strings.Contains(r.stderr, "the PCR was reset instead") {
		t.Errorf("log check of one record after a PCR reset: exit %d, stderr %q; want exit %d and a mention of a reset", r.code, r.stderr, exitCheck)
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
				t.Errorf("%s --help names %s, which does not exist", c.CommandPath(), name)
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
		recs, _, err := logfile.Snapshot(context.Background(), log)
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

// lockedBuffer is an io.Writer whose contents may be read while it is written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// notifications collects what the agent sends to NOTIFY_SOCKET.
type notifications struct {
	mu   sync.Mutex
	msgs []notification
}

type notification struct {
	at  time.Time
	msg string
}

func listenNotify(t *testing.T) *notifications {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	n := &notifications{}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, notification{time.Now(), string(buf[:k])})
			n.mu.Unlock()
		}
	}()
	return n
}

// pings counts WATCHDOG=1 received in [from, to).
func (n *notifications) pings(from, to time.Time) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if m.msg == "WATCHDOG=1" && !m.at.Before(from) && m.at.Before(to) {
			c++
		}
	}
	return c
}

// waitFor polls until cond holds, failing the test after 30s.
func waitFor(t *testing.T, what string, cond func() bool, agentLog func() string) time.Time {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return time.Now()
		}
	}
	t.Fatalf("%s: not within 30s; agent:\n%s", what, agentLog())
	return time.Time{}
}

// TestWatchdogOnlyWhileRecording runs the agent under a systemd-like
// notify socket with a 200ms watchdog (pings every 100ms), kills swtpm,
// and checks that the pings stop while the TPM is gone and resume once it
// is back with its state. The agent used to ping on, so systemd never
// restarted an agent that could not record.
func TestWatchdogOnlyWhileRecording(t *testing.T) {
	n := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", "")
	sw := testtpm.StartSwtpm(t)
	_, app, polPath, log := lostSetup(t)
	stderr, stop := runWatchInProcess(t, sw.Spec, log, polPath)
	defer stop()
	start := time.Now()
	waitFor(t, "a first watchdog ping", func() bool { return n.pings(start, time.Now().Add(time.Hour)) > 0 }, stderr.String)

	sw.SaveVolatile()
	sw.Kill()
	lost := waitFor(t, "the agent noticing the TPM is gone", func() bool { return strings.Contains(stderr.String(), "cannot record") }, stderr.String)
	// Ten ping intervals with the TPM gone, after a grace of ten for a
	// ping already on its way.
	from, to := lost.Add(time.Second), lost.Add(2*time.Second)
	waitFor(t, "the observation window", func() bool { return time.Now().After(to) }, stderr.String)
	if c := n.pings(from, to); c != 0 {
		t.Errorf("%d watchdog pings while the TPM was gone, want none", c)
	}

	sw.Restart(true)
	back := waitFor(t, "the agent recording again", func() bool { return strings.Contains(stderr.String(), "recording again") }, stderr.String)
	waitFor(t, "a watchdog ping once the TPM is back", func() bool { return n.pings(back, time.Now().Add(time.Hour)) > 0 }, stderr.String)
	writeFile(t, app, "v2")
	waitRecorded(t, log, app, "v2", stderr.String)
}

// TestAgentCannotWriteLog makes the log unwritable under a running agent,
// immutable (chattr +i) or on a full file system (a 64 KiB tmpfs): a
// change then fails with an error that says why, nothing half-written or
// empty (.torn-*) is left behind, watchdog pings stop, and once the fault
// is removed the next change is recorded and pings resume.
func TestAgentCannotWriteLog(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chattr +i and mounting a tmpfs need root")
	}
	for _, tc := range []struct {
		name        string
		fault, heal func(t *testing.T, logDir, log string)
		want        string
	}{
		{"immutable", func(t *testing.T, _, log string) {
			if out, err := exec.Command("chattr", "+i", log).CombinedOutput(); err != nil {
				t.Fatalf("chattr +i: %v\n%s", err, out)
			}
			t.Cleanup(func() { exec.Command("chattr", "-i", log).Run() })
		}, func(t *testing.T, _, log string) {
			if out, err := exec.Command("chattr", "-i", log).CombinedOutput(); err != nil {
				t.Fatalf("chattr -i: %v\n%s", err, out)
			}
		}, "operation not permitted: the log cannot be written (immutable"},
		{"disk_full", func(t *testing.T, logDir, _ string) {
			f, err := os.Create(filepath.Join(logDir, "filler"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for buf := make([]byte, 512); ; {
				if _, err := f.Write(buf); err != nil {
					break
				}
			}
		}, func(t *testing.T, logDir, _ string) {
			if err := os.Remove(filepath.Join(logDir, "filler")); err != nil {
				t.Fatal(err)
			}
		}, "no space left on device: the file system is full"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := listenNotify(t)
			t.Setenv("WATCHDOG_USEC", "200000")
			t.Setenv("WATCHDOG_PID", "")
			sw := testtpm.StartSwtpm(t)
			_, app, polPath, _ := lostSetup(t)
			// A long path makes each record longer than half a page, so that
			// the append after the filler needs a page the tmpfs no longer has.
			long := filepath.Join(filepath.Dir(app), strings.Repeat(strings.Repeat("d", 200)+"/", 12), "app")
			writeFile(t, long, "v1")
			os.Remove(app)
			app = long
			logDir := t.TempDir()
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", logDir).CombinedOutput(); err != nil {
				t.Fatalf("mount tmpfs: %v\n%s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", logDir).Run() })
			log := filepath.Join(logDir, "m.log")
			if tc.name == "immutable" {
				log = filepath.Join(t.TempDir(), "m.log") // tmpfs may lack the flag
			}
			stderr, stop := runWatchInProcess(t, sw.Spec, log, polPath)
			defer stop()
			start := time.Now()
			waitFor(t, "a first watchdog ping", func() bool { return n.pings(start, time.Now().Add(time.Hour)) > 0 }, stderr.String)
			waitRecorded(t, log, app, "v1", stderr.String)

			tc.fault(t, filepath.Dir(log), log)
			writeFile(t, app, "v2")
			lost := waitFor(t, "the agent reporting the failed append", func() bool { return strings.Contains(stderr.String(), tc.want) }, stderr.String)
			if !strings.Contains(stderr.String(), "cannot record") {
				t.Errorf("the agent did not say it cannot record:\n%s", stderr.String())
			}
			from, to := lost.Add(time.Second), lost.Add(2*time.Second)
			waitFor(t, "the observation window", func() bool { return time.Now().After(to) }, stderr.String)
			if c := n.pings(from, to); c != 0 {
				t.Errorf("%d watchdog pings while the log could not be written, want none", c)
			}
			if torn, _ := filepath.Glob(log + ".torn-*"); len(torn) != 0 {
				t.Errorf("left behind %v", torn)
			}
			if recs, tornBytes, err := logfile.Snapshot(context.Background(), log); err != nil || tornBytes != 0 || len(recs) != 1 {
				t.Errorf("log after the failed append: %d records, %d torn bytes, %v; want the 1 record from before, nothing torn", len(recs), tornBytes, err)
			}

			tc.heal(t, filepath.Dir(log), log)
			writeFile(t, app, "v3")
			waitRecorded(t, log, app, "v3", stderr.String)
			back := waitFor(t, "the agent recording again", func() bool { return strings.Contains(stderr.String(), "recording again") }, stderr.String)
			waitFor(t, "a watchdog ping once the log can be written", func() bool { return n.pings(back, time.Now().Add(time.Hour)) > 0 }, stderr.String)
		})
	}
}

// runWatchInProcess runs the agent (runWatch) in this process on tpmSpec
// until stop, which fails the test if the agent ended with an error.
func runWatchInProcess(t *testing.T, tpmSpec, log, polPath string) (stderr *lockedBuffer, stop func()) {
	t.Helper()
	pol, err := policy.Load(polPath)
	if err != nil {
		t.Fatal(err)
	}
	stderr = &lockedBuffer{}
	g := &globals{tpm: tpmSpec, log: log, stdout: &bytes.Buffer{}, stderr: stderr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWatch(ctx, g, pol, polPath, "text", 0) }()
	return stderr, func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runWatch: %v\n%s", err, stderr.String())
		}
	}
}
