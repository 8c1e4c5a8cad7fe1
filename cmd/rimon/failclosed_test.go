package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// These tests play the tricks of issue 9 against a real `rimon watch` on a
// private swtpm: each change must end in a record about the path.

// agentProc is a `rimon watch` running as its own process.
type agentProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	log    string
	stderr *lockedBuffer
	done   chan error
	url    string // where it serves evidence
	ak     string // its AK, PEM
}

// startWatch runs rimon watch with policy on a private swtpm until it is
// ready. Without DAC capabilities, it runs as root that cannot read what
// the file modes forbid (setpriv), as a confined agent or an operator's
// mistake makes it.
func startWatch(t *testing.T, dir, policy string, noDAC bool) *agentProc {
	t.Helper()
	spec := testtpm.Swtpm(t)
	polPath := writeFile(t, filepath.Join(dir, "policy.yaml"), policy)
	a := &agentProc{t: t, log: filepath.Join(dir, "m.log"), stderr: &lockedBuffer{}, done: make(chan error, 1)}
	a.ak = filepath.Join(dir, "ak.pem")
	mustRimon(t, "provision", "--tpm", spec) // the AK the evidence endpoint quotes with
	args := []string{"watch", "--tpm", spec, "--policy", polPath, "--log", a.log, "--listen", "127.0.0.1:0", "--ak-out", a.ak}
	a.cmd = exec.Command(os.Args[0], args...)
	if noDAC {
		if os.Geteuid() != 0 {
			t.Skip("dropping DAC capabilities needs a root test run")
		}
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatalf("running as root needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE: %v", err)
		}
		a.cmd = exec.Command(setpriv, append([]string{"--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all", os.Args[0]}, args...)...)
	}
	a.cmd.Env = append(os.Environ(), "RIMON_AS_MAIN=1", "NOTIFY_SOCKET=")
	a.cmd.Stderr = a.stderr
	a.cmd.Stdout = io.Discard
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.done <- a.cmd.Wait() }()
	t.Cleanup(a.stop)
	a.waitFor("the agent to be ready", func() bool { return strings.Contains(a.stderr.String(), "msg=ready") })
	m := regexp.MustCompile(`msg="serving evidence" url=(http://\S+)/v1/evidence`).FindStringSubmatch(a.stderr.String())
	if m == nil {
		t.Fatalf("the agent did not say where it serves evidence:\n%s", a.stderr.String())
	}
	a.url = m[1]
	return a
}

// reference makes a reference from the agent's log as it is now.
func (a *agentProc) reference() string {
	a.t.Helper()
	ref := filepath.Join(filepath.Dir(a.log), "reference.yaml")
	writeFile(a.t, ref, mustRimon(a.t, "reference", "generate", "--from-log", a.log))
	return ref
}

// attest runs rimon attest against the agent, as a verifier elsewhere would.
func (a *agentProc) attest(ref string) result {
	a.t.Helper()
	return rimon(a.t, "attest", "--agent", a.url, "--ak", a.ak, "--reference", ref)
}

// attestTrusted checks that the agent is trusted before a trick is played,
// so that the verdict after it shows what the trick changed.
func (a *agentProc) attestTrusted(ref string) {
	a.t.Helper()
	if r := a.attest(ref); r.code != 0 {
		a.t.Fatalf("before the trick: rimon attest exit %d, want 0 (TRUSTED)\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// attestNotTrusted checks that rimon attest against the agent is not
// TRUSTED and says why (want, in its output).
func (a *agentProc) attestNotTrusted(ref, want string) {
	a.t.Helper()
	r := a.attest(ref)
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, want) {
		a.t.Fatalf("after the trick: rimon attest exit %d, want 1 (UNTRUSTED) saying %q\n%s%s", r.code, want, r.stdout, r.stderr)
	}
}

func (a *agentProc) stop() {
	if a.cmd.Process == nil || a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// waitFor polls cond; the agent works asynchronously. The deadline is
// generous: the point is whether the record comes at all, not how fast.
func (a *agentProc) waitFor(what string, cond func() bool) {
	a.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-a.done:
			a.t.Fatalf("the agent stopped while waiting for %s: %v\n%s", what, err, a.stderr.String())
		default:
		}
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("timed out waiting for %s; the log:\n%s\nthe agent's stderr (tail):\n%s", what, a.dump(), tail(a.stderr.String(), 3000))
}

func (a *agentProc) records() []eventlog.Record {
	recs, _, err := logfile.Snapshot(context.Background(), a.log)
	if err != nil {
		a.t.Fatalf("read the log: %v", err)
	}
	return recs
}

// last is the content of the last rimon record about path (matched
// against path or path_escaped).
func (a *agentProc) last(path string) (eventlog.Content, bool) {
	var out eventlog.Content
	found := false
	for _, r := range a.records() {
		if r.ContentType != eventlog.ContentTypeRimon {
			continue
		}
		if r.Content.Str("path") == path || r.Content.Str("path_escaped") == path {
			out, found = r.Content, true
		}
	}
	return out, found
}

func (a *agentProc) dump() string {
	var b strings.Builder
	for _, r := range a.records() {
		fmt.Fprintf(&b, "%s\n", r.ContentJSON())
	}
	return tail(b.String(), 3000)
}

// agentOpen counts how many of paths the agent has open.
func (a *agentProc) agentOpen(paths []string) int {
	dir := fmt.Sprintf("/proc/%d/fd", a.cmd.Process.Pid)
	ents, _ := os.ReadDir(dir)
	open := map[string]bool{}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		l = strings.TrimSuffix(l, " (deleted)")
		for _, p := range paths {
			if l == p {
				open[p] = true
			}
		}
	}
	return len(open)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func isUnmeasured(c eventlog.Content, cause string) bool {
	return c.Str("kind") == "unmeasured" && c.Str("cause") == cause
}

// TestNeverQuietBinary: replace a watched binary with another one, then
// append a byte every 2 ms. The log must say so (unstable) within seconds,
// rather than keep the old digest for as long as the appending lasts.
func TestNeverQuietBinary(t *testing.T) {
	dir := t.TempDir()
	self, err := os.ReadFile(os.Args[0]) // a real binary of some megabytes
	if err != nil {
		t.Fatal(err)
	}
	app := filepath.Join(dir, "bin", "app")
	writeFile(t, app, string(self))
	a := startWatch(t, dir, "measure:\n  - dir: "+filepath.Join(dir, "bin")+"\n", false)
	if c, ok := a.last(app); !ok || c.Str("kind") != "file" {
		t.Fatalf("the binary was not measured at start: %v", c)
	}
	ref := a.reference()
	a.attestTrusted(ref)
	writeFile(t, app+".new", string(self)+"tampered")
	if err := os.Rename(app+".new", app); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(app, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				f.Write([]byte{0})
			}
		}
	}()
	defer func() { close(stop); <-stopped; f.Close() }()
	a.waitFor("a record that the binary changed", func() bool {
		c, _ := a.last(app)
		return isUnmeasured(c, "unstable") && c.Str("reason") == "changed"
	})
	a.attestNotTrusted(ref, "not measured (unstable): "+app)
}

// TestNameNotUTF8Recorded: a file named evil\xff in a watched directory
// is recorded as not measured, under its escaped name.
func TestNameNotUTF8Recorded(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "bin", "ok"), "ok")
	a := startWatch(t, dir, "measure:\n  - dir: "+filepath.Join(dir, "bin")+"\n", false)
	ref := a.reference()
	a.attestTrusted(ref)
	writeFile(t, filepath.Join(dir, "bin", "evil\xff"), "evil")
	want := eventlog.EscapePath(dir) + "/bin/evil%FF"
	a.waitFor("an unmeasured record for evil\\xff", func() bool {
		c, _ := a.last(want)
		return isUnmeasured(c, "name_not_utf8") && c.Str("path_escaped") == want && c.Str("path") == ""
	})
	a.attestNotTrusted(ref, "not measured (name_not_utf8): ")
}

// TestSparseFilesDoNotStarve: four 1 TiB sparse files in a watched
// directory, then deleted, must not keep a change to another file from
// being recorded.
func TestSparseFilesDoNotStarve(t *testing.T) {
	dir := t.TempDir()
	other := writeFile(t, filepath.Join(dir, "bin", "other"), "v1")
	a := startWatch(t, dir, "measure:\n  - dir: "+filepath.Join(dir, "bin")+"\n", false)
	ref := a.reference()
	var sparse []string
	for i := 0; i < 4; i++ {
		p := filepath.Join(dir, "bin", fmt.Sprintf("sparse%d", i))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(1 << 40); err != nil {
			t.Fatal(err)
		}
		f.Close()
		sparse = append(sparse, p)
	}
	// The agent has taken up every one: it reads it, or has recorded it.
	a.waitFor("the agent to take up the sparse files", func() bool {
		n := a.agentOpen(sparse)
		for _, p := range sparse {
			if _, ok := a.last(p); ok {
				n++
			}
		}
		return n >= len(sparse)
	})
	for _, p := range sparse {
		os.Remove(p)
	}
	writeFile(t, other, "v2")
	a.waitFor("the change to the other file", func() bool {
		c, _ := a.last(other)
		return c.Str("sha256") == sha256Hex("v2")
	})
	a.waitFor("the agent to stop reading deleted files", func() bool { return a.agentOpen(sparse) == 0 })
	a.attestNotTrusted(ref, other)
}

// TestUnreadableRecorded: a watched file made unreadable (chmod 000) to
// an agent without DAC capabilities is recorded as not measured.
func TestUnreadableRecorded(t *testing.T) {
	dir := t.TempDir()
	conf := writeFile(t, filepath.Join(dir, "etc", "app.conf"), "secret=1")
	a := startWatch(t, dir, "measure:\n  - file: "+conf+"\n", true)
	if c, ok := a.last(conf); !ok || c.Str("sha256") != sha256Hex("secret=1") {
		t.Fatalf("the file was not measured at start: %v", c)
	}
	ref := a.reference()
	a.attestTrusted(ref)
	if err := os.Chmod(conf, 0); err != nil {
		t.Fatal(err)
	}
	a.waitFor("an unreadable record", func() bool {
		c, _ := a.last(conf)
		return isUnmeasured(c, "unreadable") && strings.Contains(c.Str("error"), "permission denied")
	})
	a.attestNotTrusted(ref, "not measured (unreadable): "+conf)
	// Readable again: the digest is recorded, without waiting for a rescan.
	os.Chmod(conf, 0o644)
	a.waitFor("the digest once readable again", func() bool {
		c, _ := a.last(conf)
		return c.Str("kind") == "file" && c.Str("sha256") == sha256Hex("secret=1")
	})
	a.attestTrusted(ref)
}

func sha256Hex(s string) string {
	d := sha256.Sum256([]byte(s))
	return hexs(d[:])
}
