package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// agent is a running "rimon watch" process.
type agent struct {
	cmd    *exec.Cmd
	ready  chan struct{}
	mu     sync.Mutex
	stderr strings.Builder
	exited chan error
}

func startAgent(t *testing.T, args ...string) *agent {
	t.Helper()
	return startAgentCmd(t, exec.Command(os.Args[0], append([]string{"watch"}, args...)...))
}

// startAgentCmd runs cmd, a "rimon watch" command line, until the agent
// says it is ready.
func startAgentCmd(t *testing.T, cmd *exec.Cmd) *agent {
	t.Helper()
	a := &agent{ready: make(chan struct{}), exited: make(chan error, 1), cmd: cmd}
	a.cmd.Env = append(os.Environ(), "RIMON_AS_MAIN=1")
	pipe, err := a.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		once := sync.Once{}
		for sc.Scan() {
			a.mu.Lock()
			a.stderr.WriteString(sc.Text() + "\n")
			a.mu.Unlock()
			if strings.Contains(sc.Text(), "msg=ready") {
				once.Do(func() { close(a.ready) })
			}
		}
		a.exited <- a.cmd.Wait()
	}()
	select {
	case <-a.ready:
	case err := <-a.exited:
		t.Fatalf("agent exited before ready: %v\n%s", err, a.log())
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		t.Fatalf("agent not ready after 30s:\n%s", a.log())
	}
	return a
}

func (a *agent) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stderr.String()
}

func (a *agent) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	a.cmd.Process.Signal(sig)
	select {
	case err := <-a.exited:
		return err
	case <-time.After(30 * time.Second):
		a.cmd.Process.Kill()
		t.Fatalf("agent did not stop on %v:\n%s", sig, a.log())
		return nil
	}
}

// TestAgentSurvivesSIGKILL churns files under a running agent on swtpm,
// kills it with SIGKILL at random moments, and checks after every restart
// that the log and the PCR agree, and at the end that every file's final
// state is what the log says.
func TestAgentSurvivesSIGKILL(t *testing.T) {
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	const nfiles = 20
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < nfiles; i++ {
		writeFile(t, filepath.Join(data, fmt.Sprintf("f%02d", i)), "v0")
	}
	pol := writeFile(t, filepath.Join(dir, "policy.yaml"), fmt.Sprintf("settings:\n  debounce: 20ms\nmeasure:\n  - dir: %s\n", data))
	log := filepath.Join(dir, "m.log")
	args := []string{"--tpm", spec, "--policy", pol, "--log", log}

	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	stop := make(chan struct{})
	churned := make(chan struct{})
	go func() { // churn: writes, atomic replaces, deletes and re-creations
		defer close(churned)
		r := rand.New(rand.NewSource(seed + 1))
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			p := filepath.Join(data, fmt.Sprintf("f%02d", r.Intn(nfiles)))
			switch r.Intn(4) {
			case 0:
				os.Remove(p)
			case 1:
				os.WriteFile(p+".tmp", []byte(fmt.Sprintf("atomic %d", n)), 0o644)
				os.Rename(p+".tmp", p)
			default:
				os.WriteFile(p, []byte(fmt.Sprintf("write %d", n)), 0o644)
			}
			time.Sleep(time.Duration(r.Intn(3)) * time.Millisecond)
		}
	}()

	check := func(when string) {
		t.Helper()
		if r := rimon(t, "log", "check", "--tpm", spec, "--log", log); r.code != 0 {
			t.Fatalf("%s: rimon log check: exit %d\n%s%s", when, r.code, r.stdout, r.stderr)
		}
	}
	a := startAgent(t, args...)
	for i := 0; i < 8; i++ {
		time.Sleep(time.Duration(50+rng.Intn(400)) * time.Millisecond)
		a.stop(t, syscall.SIGKILL)
		// The next agent repairs whatever the killed one left half done.
		a = startAgent(t, args...)
		if err := a.stop(t, syscall.SIGTERM); err != nil {
			t.Fatalf("restart %d: agent failed: %v\n%s", i, err, a.log())
		}
		check(fmt.Sprintf("after kill %d", i))
		a = startAgent(t, args...)
	}
	close(stop)
	<-churned
	a.stop(t, syscall.SIGKILL)
	a = startAgent(t, args...) // measures the final states in its initial scan
	time.Sleep(300 * time.Millisecond)
	if err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("final agent: %v\n%s", err, a.log())
	}
	check("at the end")

	recs, _, err := logfile.Snapshot(t.Context(), log)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]eventlog.Event{}
	for i := range recs {
		e := recs[i].Event()
		last[e.Path] = e
	}
	for i := 0; i < nfiles; i++ {
		p := filepath.Join(data, fmt.Sprintf("f%02d", i))
		e, ok := last[p]
		b, err := os.ReadFile(p)
		switch {
		case os.IsNotExist(err):
			if ok && e.Reason != eventlog.ReasonDeleted {
				t.Errorf("%s is gone, its last record says %s %s", p, e.Reason, e.SHA256)
			}
		case err != nil:
			t.Fatal(err)
		default:
			s := sha256.Sum256(b)
			if !ok || e.SHA256 != hex.EncodeToString(s[:]) {
				t.Errorf("%s: final content %x not recorded (last record: %+v)", p, s, e)
			}
		}
	}
	t.Logf("%d records over 8 kills", len(recs))
}

// TestAgentReloadsOnSIGHUP sends SIGHUP to a running agent: a broken
// policy is refused and the old one kept, a good one is taken.
func TestAgentReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a"), "a")
	writeFile(t, filepath.Join(dir, "b"), "b")
	pol := writeFile(t, filepath.Join(dir, "policy.yaml"), "measure:\n  - file: "+filepath.Join(dir, "a")+"\n")
	a := startAgent(t, "--tpm", "sim", "--policy", pol, "--log", filepath.Join(dir, "m.log"))
	waitLog := func(s string) {
		t.Helper()
		for i := 0; i < 200; i++ {
			if strings.Contains(a.log(), s) {
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
		t.Fatalf("agent log lacks %q:\n%s", s, a.log())
	}
	writeFile(t, pol, "measure:\n  - file: relative/path\n")
	a.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(`policy reload rejected; keeping the old policy`)
	writeFile(t, pol, "measure:\n  - file: "+filepath.Join(dir, "b")+"\n")
	a.cmd.Process.Signal(syscall.SIGHUP)
	waitLog("policy reloaded")
	waitLog("path=" + filepath.Join(dir, "b"))
	if err := a.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("agent: %v\n%s", err, a.log())
	}
}
