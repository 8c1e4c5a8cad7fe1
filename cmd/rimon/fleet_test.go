package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/api"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/fleet/sqlstore/sqltest"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// verifierProc is a `rimon verifier` running as its own process.
type verifierProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
	url    string
	db     string
	env    []string // RIMON_SERVER and RIMON_TOKEN_FILE for rimon fleet
}

// startVerifier runs rimon verifier on a SQLite file in dir with the given
// extra flags, and waits for its READY=1 on a real notify socket.
func startVerifier(t *testing.T, dir string, extra ...string) *verifierProc {
	t.Helper()
	tokens := writeFile(t, filepath.Join(dir, "tokens"), "# test operators\n"+testAdminToken+"\n"+testReadToken+" read\n")
	sock := filepath.Join(dir, "notify.sock")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	v := &verifierProc{t: t, stderr: &lockedBuffer{}, done: make(chan error, 1), db: filepath.Join(dir, "verifier.db")}
	args := append([]string{"verifier", "--db", v.db, "--listen", "127.0.0.1:0", "--token-file", tokens, "--insecure-plain-http"}, extra...)
	v.cmd = exec.Command(os.Args[0], args...)
	v.cmd.Env = append(os.Environ(), "RIMON_AS_MAIN=1", "NOTIFY_SOCKET="+sock)
	v.cmd.Stderr = v.stderr
	v.cmd.Stdout = io.Discard
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.done <- v.cmd.Wait() }()
	t.Cleanup(v.stop)
	// READY=1 comes once the database is migrated and the listener is up.
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		var all strings.Builder
		for {
			nl.SetReadDeadline(time.Now().Add(60 * time.Second))
			n, err := nl.Read(buf)
			if err != nil {
				got <- all.String()
				return
			}
			all.Write(buf[:n])
			all.WriteString("\n")
			if strings.Contains(string(buf[:n]), "READY=1") {
				got <- all.String()
				return
			}
		}
	}()
	select {
	case msgs := <-got:
		if !strings.Contains(msgs, "READY=1") || !strings.Contains(msgs, "STATUS=") {
			t.Fatalf("no READY=1 with a STATUS= from the verifier (got %q):\n%s", msgs, v.stderr.String())
		}
	case err := <-v.done:
		t.Fatalf("the verifier stopped before it was ready: %v\n%s", err, v.stderr.String())
	}
	// Its stderr reaches the buffer through a pipe: the line that says
	// where it serves, written before READY=1, may still be on its way.
	serving := regexp.MustCompile(`msg="serving API" url=(http://\S+)`)
	v.waitFor("the verifier to say where it serves", func() bool { return serving.MatchString(v.stderr.String()) })
	v.url = serving.FindStringSubmatch(v.stderr.String())[1]
	tokFile := writeFile(t, filepath.Join(dir, "my-token"), testAdminToken+"\n")
	v.env = []string{"RIMON_SERVER=" + v.url, "RIMON_TOKEN_FILE=" + tokFile}
	return v
}

const (
	testAdminToken = "e2e-admin-7d1f0c9b8a7e6d5c4b3a"
	testReadToken  = "e2e-reader-0f1e2d3c4b5a69788796"
)

func (v *verifierProc) stop() {
	if v.cmd.Process == nil || v.cmd.ProcessState != nil {
		return
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(60 * time.Second):
		v.cmd.Process.Kill()
		<-v.done
	}
}

// fleet runs rimon fleet against the verifier, in process.
func (v *verifierProc) fleet(args ...string) result {
	v.t.Helper()
	for _, kv := range v.env {
		k, val, _ := strings.Cut(kv, "=")
		v.t.Setenv(k, val)
	}
	return rimon(v.t, append([]string{"fleet"}, args...)...)
}

func (v *verifierProc) mustFleet(args ...string) string {
	v.t.Helper()
	r := v.fleet(args...)
	if r.code != 0 {
		v.t.Fatalf("rimon fleet %s: exit %d\n%s%s\nthe verifier's log (tail):\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr, tail(v.stderr.String(), 4000))
	}
	return r.stdout
}

// list is rimon fleet list --json, by name.
func (v *verifierProc) list() map[string]api.Agent {
	v.t.Helper()
	var agents []api.Agent
	if err := json.Unmarshal([]byte(v.mustFleet("list", "--json")), &agents); err != nil {
		v.t.Fatal(err)
	}
	out := map[string]api.Agent{}
	for _, a := range agents {
		out[a.Name] = a
	}
	return out
}

// waitFor polls cond with a generous deadline: the point is whether the
// state comes at all, not how fast.
func (v *verifierProc) waitFor(what string, cond func() bool) {
	v.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-v.done:
			v.t.Fatalf("the verifier stopped while waiting for %s: %v\n%s", what, err, v.stderr.String())
		default:
		}
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	v.t.Fatalf("timed out waiting for %s; rimon fleet list:\n%s\nthe verifier's log (tail):\n%s", what, v.fleet("list").stdout, tail(v.stderr.String(), 6000))
}

// startSimAgent runs rimon watch on the in-process simulator, serving
// evidence, until it is ready.
func startSimAgent(t *testing.T, dir, policy string) *agentProc {
	t.Helper()
	polPath := writeFile(t, filepath.Join(dir, "policy.yaml"), policy)
	a := &agentProc{t: t, log: filepath.Join(dir, "m.log"), ak: filepath.Join(dir, "ak.pem"), stderr: &lockedBuffer{}, done: make(chan error, 1)}
	a.cmd = exec.Command(os.Args[0], "watch", "--tpm", "sim", "--policy", polPath, "--log", a.log, "--listen", "127.0.0.1:0", "--ak-out", a.ak)
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

// hookReceiver is a webhook receiver that checks each message's Standard
// Webhooks signature itself (HMAC-SHA256 over "id.timestamp.body" with the
// secret's bytes, base64, "v1," prefixed), independently of package
// fleet/webhook.
type hookReceiver struct {
	mu     sync.Mutex
	secret []byte
	got    []fleet.Payload
	ids    map[string]int
	bad    []string
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id, ts, sigs := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	mac := hmac.New(sha256.New, h.secret)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	h.mu.Lock()
	defer h.mu.Unlock()
	sec, err := strconv.ParseInt(ts, 10, 64)
	valid := err == nil && id != "" && time.Since(time.Unix(sec, 0)).Abs() < 5*time.Minute
	matched := false
	for _, s := range strings.Fields(sigs) {
		matched = matched || hmac.Equal([]byte(s), []byte(want))
	}
	if !valid || !matched {
		h.bad = append(h.bad, "id "+id+" ts "+ts+" sig "+sigs)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var p fleet.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		h.bad = append(h.bad, "body "+string(body))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.ids[id]++
	h.got = append(h.got, p)
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) find(agent string, to fleet.Status) (fleet.Payload, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.got {
		if p.Data.Agent == agent && p.Data.NewState == to {
			return p, true
		}
	}
	return fleet.Payload{}, false
}

// TestFleetEndToEnd: a real rimon verifier on SQLite and two real agents
// (rimon watch --listen, one on the simulator, one on swtpm): both become
// trusted; a file changed on one makes it untrusted, naming the file, while
// the other stays trusted; a signed webhook says so; SIGTERM stops the
// verifier cleanly with its state stored.
func TestFleetEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a verifier and two agents")
	}
	dir := t.TempDir()
	secretKey := []byte("a 24-byte signing secret")
	secretFile := writeFile(t, filepath.Join(dir, "hook.secret"), "whsec_"+base64.StdEncoding.EncodeToString(secretKey)+"\n")
	hooks := &hookReceiver{secret: secretKey, ids: map[string]int{}}
	hookSrv := httptest.NewServer(hooks)
	defer hookSrv.Close()

	// Two agents, each watching its own application.
	dirA, dirB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	appA := writeFile(t, filepath.Join(dirA, "app", "server"), "#!/bin/sh\necho a\n")
	writeFile(t, filepath.Join(dirB, "app", "server"), "#!/bin/sh\necho b\n")
	agentA := startSimAgent(t, dirA, "settings:\n  debounce: 50ms\nmeasure:\n  - dir: "+filepath.Join(dirA, "app")+"\n")
	agentB := startWatch(t, dirB, "settings:\n  debounce: 50ms\nmeasure:\n  - dir: "+filepath.Join(dirB, "app")+"\n", false)
	refA, refB := agentA.reference(), agentB.reference()

	v := startVerifier(t, filepath.Join(dir, "verifier"), "--webhook", hookSrv.URL+"/hook", "--webhook-secret-file", secretFile)
	// READY=1 means serving, with the database migrated.
	resp, err := http.Get(v.url + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz right after READY=1: %v %v", resp, err)
	}
	resp.Body.Close()

	v.mustFleet("reference", "add", "app-a", refA)
	v.mustFleet("reference", "add", "app-b", refB)
	out := v.mustFleet("add", "a", "--agent", agentA.url, "--ak", agentA.ak, "--reference", "app-a", "--interval", "1s")
	if !strings.Contains(out, "added a (pending)") {
		t.Errorf("rimon fleet add: %q", out)
	}
	v.mustFleet("add", "b", "--agent", agentB.url, "--ak", agentB.ak, "--reference", "app-b", "--interval", "1s")

	v.waitFor("both agents trusted", func() bool {
		l := v.list()
		return l["a"].State == fleet.Trusted && l["b"].State == fleet.Trusted
	})
	if _, ok := hooks.find("a", fleet.Trusted); !ok {
		v.waitFor("the webhook of a's first verdict", func() bool { _, ok := hooks.find("a", fleet.Trusted); return ok })
	}

	// The change: agent A's server binary replaced.
	if err := os.WriteFile(appA, []byte("#!/bin/sh\necho hacked\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	v.waitFor("a untrusted", func() bool { return v.list()["a"].State == fleet.Untrusted })
	t.Logf("a untrusted %v after the change (interval 1s)", time.Since(changed).Round(time.Millisecond))
	var raw []map[string]any
	if err := json.Unmarshal([]byte(v.mustFleet("list", "--json")), &raw); err != nil || len(raw) != 2 {
		t.Fatalf("rimon fleet list --json: %v, %d objects", err, len(raw))
	}
	for _, o := range raw {
		for _, k := range []string{"name", "state", "reason", "since"} {
			if _, ok := o[k]; !ok {
				t.Errorf("rimon fleet list --json: an object without %q: %v", k, o)
			}
		}
	}
	l := v.list()
	if l["b"].State != fleet.Trusted {
		t.Errorf("b is %s (%s), want trusted: a change on a must not touch b", l["b"].State, l["b"].Reason)
	}
	var shown api.Agent
	if err := json.Unmarshal([]byte(v.mustFleet("show", "a", "--json")), &shown); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(shown.Findings), appA) {
		t.Errorf("a's findings do not name %s: %s (reason %q)", appA, shown.Findings, shown.Reason)
	}
	text := v.mustFleet("show", "a")
	if !strings.Contains(text, "UNTRUSTED") || !strings.Contains(text, appA) {
		t.Errorf("rimon fleet show a:\n%s", text)
	}
	var hist []api.Event
	if err := json.Unmarshal([]byte(v.mustFleet("history", "a", "--json")), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) == 0 || hist[0].OldState != fleet.Trusted || hist[0].NewState != fleet.Untrusted {
		t.Errorf("a's history, newest first: %+v", hist)
	}

	// The webhook: signed, naming the agent, the states and the file.
	v.waitFor("the webhook of a's change", func() bool { _, ok := hooks.find("a", fleet.Untrusted); return ok })
	p, _ := hooks.find("a", fleet.Untrusted)
	if p.Type != fleet.EventStateChanged || p.Data.OldState != fleet.Trusted || !strings.Contains(string(p.Data.Findings), appA) {
		t.Errorf("webhook payload %+v", p)
	}
	hooks.mu.Lock()
	t.Logf("%d webhook messages; a's change: %+v", len(hooks.got), p)
	if len(hooks.bad) > 0 {
		t.Errorf("webhook requests with a bad signature or body: %v", hooks.bad)
	}
	hooks.mu.Unlock()

	// The dashboard a person reads first.
	dash := v.mustFleet("list")
	t.Logf("rimon fleet list:\n%s\nrimon fleet show a:\n%s", dash, text)
	if !strings.HasPrefix(dash, "2 agents: 1 untrusted, 1 trusted\n") || strings.Index(dash, "\na ") > strings.Index(dash, "\nb ") {
		t.Errorf("rimon fleet list:\n%s", dash)
	}

	// rimon fleet update: another machine's AK makes b invalid; its own
	// AK again is an operator's decision, recorded as a clear, and b is
	// attested from record 0 and trusted.
	if out := v.mustFleet("update", "b", "--ak", agentA.ak); !strings.Contains(out, "updated b") {
		t.Errorf("rimon fleet update: %q", out)
	}
	v.waitFor("b invalid with a's AK", func() bool { return v.list()["b"].State == fleet.Invalid })
	v.mustFleet("update", "b", "--ak", agentB.ak, "--interval", "2s")
	v.waitFor("b trusted again", func() bool { return v.list()["b"].State == fleet.Trusted })
	if h := v.mustFleet("history", "b"); !strings.Contains(h, "registration changed: a new AK") {
		t.Errorf("b's history does not record the new AK:\n%s", h)
	}
	if r := v.fleet("update", "b"); r.code != exitUsage {
		t.Errorf("update with nothing to change: exit %d", r.code)
	}

	// A read-only token reads and may not change.
	readTok := writeFile(t, filepath.Join(dir, "read-token"), testReadToken+"\n")
	r := v.fleet("list", "--token-file", readTok)
	if r.code != 0 {
		t.Errorf("list with a read token: %d %s", r.code, r.stderr)
	}
	r = v.fleet("remove", "b", "--token-file", readTok)
	if r.code != exitError || !strings.Contains(r.stderr, "403 Forbidden") {
		t.Errorf("remove with a read token: %d %q", r.code, r.stderr)
	}
	if strings.Contains(v.stderr.String(), testAdminToken) || strings.Contains(v.stderr.String(), testReadToken) {
		t.Error("the verifier's log holds a token")
	}

	// SIGTERM: a clean stop, the state stored.
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-v.done:
		if err != nil {
			t.Fatalf("the verifier exited with %v after SIGTERM:\n%s", err, tail(v.stderr.String(), 3000))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the verifier did not stop after SIGTERM:\n%s", tail(v.stderr.String(), 3000))
	}
	if !strings.Contains(v.stderr.String(), "msg=stopped") {
		t.Errorf("no clean stop in the log:\n%s", tail(v.stderr.String(), 2000))
	}
	st, err := sqlstore.Open(context.Background(), v.db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := st.Agent(context.Background(), "a")
	if err != nil || a.Status != fleet.Untrusted || a.LeaseOwner != "" {
		t.Errorf("after the stop, the stored agent a: %+v, %v; want untrusted with no lease", a, err)
	}
}

// TestFleetDashboard pins what rimon fleet list prints: counts by state,
// worst first, then the agents worst first in aligned columns with times
// relative to now.
func TestFleetDashboard(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	f := &fleetFlags{g: &globals{stdout: &out}}
	sum := &api.Summary{Agents: 4, States: map[fleet.Status]int{fleet.Trusted: 2, fleet.Compromised: 1, fleet.Unreachable: 1}}
	agents := []api.Agent{
		{AgentSpec: api.AgentSpec{Name: "web-1"}, State: fleet.Trusted, Since: now.Add(-3 * time.Hour), LastPoll: now.Add(-12 * time.Second), Reason: "all 412 measurements approved by prod"},
		{AgentSpec: api.AgentSpec{Name: "db-1"}, State: fleet.Unreachable, Since: now.Add(-5 * time.Minute), LastPoll: now.Add(-40 * time.Second), Reason: "dial tcp 10.0.0.7:8443: connection refused"},
		{AgentSpec: api.AgentSpec{Name: "web-2"}, State: fleet.Trusted, Since: now.Add(-50 * time.Hour), LastPoll: now.Add(-2 * time.Second)},
		{AgentSpec: api.AgentSpec{Name: "build-7"}, State: fleet.Compromised, Since: now.Add(-90 * time.Second), LastPoll: now.Add(-90 * time.Second), Reason: "continuity: the log no longer\nextends the accepted prefix"},
	}
	f.dashboard(sum, agents, now)
	want := `4 agents: 1 compromised, 1 unreachable, 2 trusted

NAME     STATE        SINCE   LAST CHECK  REASON
build-7  COMPROMISED  1m ago  1m ago      continuity: the log no longer extends the accepted prefix
db-1     UNREACHABLE  5m ago  40s ago     dial tcp 10.0.0.7:8443: connection refused
web-1    TRUSTED      3h ago  12s ago     all 412 measurements approved by prod
web-2    TRUSTED      2d ago  2s ago
`
	if out.String() != want {
		t.Errorf("dashboard:\n%s\nwant:\n%s", out.String(), want)
	}
	// On a terminal, a reason is cut to the width.
	out.Reset()
	f.terminal, f.width = true, 60
	f.dashboard(sum, []api.Agent{agents[3]}, now)
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")[2:] {
		if n := len([]rune(line)); n > 60 {
			t.Errorf("a line of %d characters on a 60-column terminal: %q", n, line)
		}
	}
	if !strings.Contains(out.String(), "…") {
		t.Errorf("the long reason was not cut:\n%s", out.String())
	}
	out.Reset()
	f.dashboard(&api.Summary{States: map[fleet.Status]int{}}, nil, now)
	if !strings.HasPrefix(out.String(), "0 agents (add one: rimon fleet add") {
		t.Errorf("an empty fleet: %q", out.String())
	}
}

// TestReadmeFleetQuickStart runs the README's fleet quick start as a new
// user would, with bash, openssl and rimon (this test binary) on PATH: two
// agents on the simulator, a verifier over HTTPS, rimon fleet. Only the
// build step, the directory and the ports are changed.
func TestReadmeFleetQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a verifier and two agents")
	}
	for _, tool := range []string{"bash", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the quick start needs %s: %v", tool, err)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Fleet quick start[^\n]*\n.*?```sh\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no fleet quick start with a sh block")
	}
	script := string(m[1])
	bin := t.TempDir()
	writeFile(t, filepath.Join(bin, "rimon"), "#!/bin/sh\nRIMON_AS_MAIN=1 exec "+os.Args[0]+" \"$@\"\n")
	os.Chmod(filepath.Join(bin, "rimon"), 0o755)
	verifierPort, agentBase := freePort(t, 1), freePort(t, 2)-1
	for _, r := range []struct{ old, new string }{
		{"make build && export PATH=$PWD:$PATH\n", ""},
		{`cd "$(mktemp -d)"`, `cd "$WORKDIR"`},
		{"127.0.0.1:8443", "127.0.0.1:" + strconv.Itoa(verifierPort)},
		{"127.0.0.1:910$n", "127.0.0.1:$((" + strconv.Itoa(agentBase) + "+n))"},
	} {
		if !strings.Contains(script, r.old) {
			t.Fatalf("the quick start no longer has %q, which this test replaces", r.old)
		}
		script = strings.ReplaceAll(script, r.old, r.new)
	}
	work := t.TempDir()
	cmd := exec.Command("bash", "-e", "-c", script)
	cmd.Dir = work
	cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "HOME=" + work, "WORKDIR=" + work,
		"CGO_CFLAGS=" + os.Getenv("CGO_CFLAGS")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(5 * time.Minute):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
		t.Fatalf("the quick start did not end:\n%s", out.String())
	}
	text := out.String()
	if err != nil {
		t.Fatalf("the quick start failed (%v):\n%s\nverifier.log:\n%s", err, text, readTail(filepath.Join(work, "verifier.log")))
	}
	app1 := filepath.Join(work, "app1", "server")
	for _, want := range []string{"2 agents: 2 trusted\n", "machine1 is untrusted: ", "2 agents: 1 untrusted, 1 trusted\n", app1, "trusted -> untrusted"} {
		if !strings.Contains(text, want) {
			t.Errorf("the quick start's output lacks %q:\n%s", want, text)
		}
	}
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	return tail(string(b), 3000)
}

// freePort finds n consecutive free loopback ports and returns the last.
func freePort(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		ok := true
		var held []net.Listener
		for i := 1; i < n && ok; i++ {
			li, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+i))
			if err != nil {
				ok = false
				break
			}
			held = append(held, li)
		}
		l.Close()
		for _, h := range held {
			h.Close()
		}
		if ok {
			return p + n - 1
		}
	}
	t.Fatal("no free ports")
	return 0
}

// openssl runs openssl in dir; the test's certificates come from it, not
// from rimon's code.
func openssl(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestVerifierTLSAndClientCertificates: a verifier over HTTPS with
// --client-ca; rimon fleet with a client certificate and no token is an
// admin; without the CA pinned the certificate check fails; a pushing
// agent's token is printed once, into a file only its owner reads.
func TestVerifierTLSAndClientCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a verifier")
	}
	dir := t.TempDir()
	openssl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
		"-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "server.key", "-out", "server.crt")
	openssl(t, dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
		"-subj", "/CN=operators CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
		"-keyout", "ca.key", "-out", "ca.crt")
	openssl(t, dir, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=alice", "-keyout", "alice.key", "-out", "alice.csr")
	writeFile(t, filepath.Join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n")
	openssl(t, dir, "x509", "-req", "-in", "alice.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "client.ext", "-out", "alice.crt")
	p := func(name string) string { return filepath.Join(dir, name) }

	// startVerifier passes --insecure-plain-http: start this one by hand.
	tokens := writeFile(t, p("tokens"), testAdminToken+"\n")
	v := &verifierProc{t: t, stderr: &lockedBuffer{}, done: make(chan error, 1), db: p("v.db")}
	v.cmd = exec.Command(os.Args[0], "verifier", "--db", v.db, "--listen", "127.0.0.1:0", "--token-file", tokens,
		"--tls-cert", p("server.crt"), "--tls-key", p("server.key"), "--client-ca", p("ca.crt"))
	v.cmd.Env = append(os.Environ(), "RIMON_AS_MAIN=1", "NOTIFY_SOCKET=")
	v.cmd.Stderr, v.cmd.Stdout = v.stderr, io.Discard
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.done <- v.cmd.Wait() }()
	t.Cleanup(v.stop)
	v.waitFor("the verifier to serve", func() bool { return strings.Contains(v.stderr.String(), "msg=ready") })
	m := regexp.MustCompile(`msg="serving API" url=(https://\S+)`).FindStringSubmatch(v.stderr.String())
	if m == nil {
		t.Fatalf("the verifier does not serve https:\n%s", v.stderr.String())
	}
	v.url = m[1]
	t.Setenv("RIMON_SERVER", v.url)
	t.Setenv("RIMON_TOKEN_FILE", "")

	r := rimon(t, "fleet", "list", "--ca", p("server.crt"), "--cert", p("alice.crt"), "--key", p("alice.key"))
	if r.code != 0 || !strings.HasPrefix(r.stdout, "0 agents") {
		t.Fatalf("list with a client certificate: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	ak := writeFile(t, p("ak.pem"), string(mustRead(t, "../../testdata/azure/kinvolk/akpub.pem")))
	r = rimon(t, "fleet", "add", "nat-1", "--push", "--ak", ak, "--push-token-out", p("push-token"),
		"--ca", p("server.crt"), "--cert", p("alice.crt"), "--key", p("alice.key"))
	if r.code != 0 || !strings.Contains(r.stdout, "its push token is in "+p("push-token")) {
		t.Fatalf("add --push: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	fi, err := os.Stat(p("push-token"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the push token file: %v %v, want mode 0600", fi, err)
	}
	tok := strings.TrimSpace(string(mustRead(t, p("push-token"))))
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(tok) {
		t.Errorf("push token %q", tok)
	}
	if !strings.Contains(v.stderr.String(), `who="client certificate CN=alice"`) {
		t.Errorf("the log does not name the certificate's subject:\n%s", tail(v.stderr.String(), 2000))
	}
	// The token was shown once: neither show nor the log has it.
	show := rimon(t, "fleet", "show", "nat-1", "--json", "--ca", p("server.crt"), "--token-file", tokens)
	if show.code != 0 || strings.Contains(show.stdout, tok) || strings.Contains(v.stderr.String(), tok) {
		t.Errorf("show: exit %d, or the token shown again or logged\n%s", show.code, show.stdout)
	}
	// The push token is not an API token.
	r = rimon(t, "fleet", "list", "--ca", p("server.crt"), "--token-file", p("push-token"))
	if r.code != exitError || !strings.Contains(r.stderr, "401 Unauthorized") {
		t.Errorf("list with the push token: exit %d %q, want 2 and 401", r.code, r.stderr)
	}
	// Without the verifier's CA the client refuses the server.
	r = rimon(t, "fleet", "list", "--token-file", tokens)
	if r.code != exitError || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("list without --ca: exit %d %q, want 2 naming the certificate", r.code, r.stderr)
	}
	// A certificate the CA did not sign is no admin: the server's own works as a client certificate nowhere.
	r = rimon(t, "fleet", "list", "--ca", p("server.crt"), "--cert", p("server.crt"), "--key", p("server.key"))
	if r.code == 0 {
		t.Errorf("a certificate from no trusted CA was accepted:\n%s", r.stdout)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifierSIGTERMMidPoll: SIGTERM while an attestation waits on an
// agent that does not answer. The verifier stops cleanly within its
// shutdown timeout, stores no verdict for the round cut short, and gives
// the agent back (no lease left) for the next start.
func TestVerifierSIGTERMMidPoll(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a verifier")
	}
	asked := make(chan struct{}, 16)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- struct{}{}
		<-r.Context().Done() // never answers
	}))
	defer hang.Close()
	defer hang.CloseClientConnections()
	dir := t.TempDir()
	v := startVerifier(t, dir, "--timeout", "5m", "--shutdown-timeout", "30s")
	ak := writeFile(t, filepath.Join(dir, "ak.pem"), string(mustRead(t, "../../testdata/azure/kinvolk/akpub.pem")))
	v.mustFleet("add", "silent", "--agent", hang.URL, "--ak", ak, "--interval", "1s")
	select {
	case <-asked:
	case <-time.After(60 * time.Second):
		t.Fatalf("the verifier never asked the agent:\n%s", v.stderr.String())
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-v.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM mid-poll: %v\n%s", err, tail(v.stderr.String(), 3000))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the verifier did not stop after SIGTERM mid-poll:\n%s", tail(v.stderr.String(), 3000))
	}
	st, err := sqlstore.Open(context.Background(), v.db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := st.Agent(context.Background(), "silent")
	if err != nil {
		t.Fatal(err)
	}
	if a.Status != fleet.Pending || a.LeaseOwner != "" || !a.LastPoll.IsZero() {
		t.Errorf("after SIGTERM mid-poll: state %s (%s), lease %q, last poll %v; want pending, no lease, never polled", a.Status, a.Reason, a.LeaseOwner, a.LastPoll)
	}
}

// TestFleetPushWithRimonQuote: an agent registered with rimon fleet add
// --push gets a token that the verifier's push endpoint (the engine's,
// behind the API's listener) accepts; evidence from rimon quote on swtpm
// for the challenge's nonce makes it trusted; the same evidence again, or
// another token, is refused.
func TestFleetPushWithRimonQuote(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a verifier and swtpm")
	}
	dir := t.TempDir()
	spec := testtpm.Swtpm(t)
	ak := writeFile(t, filepath.Join(dir, "ak.pem"), mustRimon(t, "provision", "--tpm", spec))
	log := filepath.Join(dir, "m.log")
	mustRimon(t, "measure", "--tpm", spec, "--log", log, writeFile(t, filepath.Join(dir, "app"), "app v1\n"))
	ref := writeFile(t, filepath.Join(dir, "ref.yaml"), mustRimon(t, "reference", "generate", "--from-log", log))

	v := startVerifier(t, filepath.Join(dir, "v"))
	v.mustFleet("reference", "add", "app", ref)
	tokFile := filepath.Join(dir, "push-token")
	v.mustFleet("add", "nat-1", "--push", "--ak", ak, "--reference", "app", "--push-token-out", tokFile)
	token := strings.TrimSpace(string(mustRead(t, tokFile)))

	post := func(path, tok string, body []byte) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("POST", v.url+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if code, _ := post("/v1/push/nat-1/challenge", testAdminToken, nil); code != http.StatusUnauthorized {
		t.Errorf("a challenge with the API's admin token: %d, want 401", code)
	}
	// As an agent does: a challenge, a quote for its nonce, the evidence;
	// a 503 ("push again") is answered with a new challenge.
	var body []byte
	var res map[string]any
	for try := 1; ; try++ {
		code, ch := post("/v1/push/nat-1/challenge", token, nil)
		nonce, _ := ch["nonce"].(string)
		if code != 200 || len(nonce) != 64 {
			t.Fatalf("challenge: %d %v", code, ch)
		}
		ev := filepath.Join(dir, "evidence")
		mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", nonce, "--bank", "sha256", "--out", ev)
		body = mustRead(t, ev)
		code, res = post("/v1/push/nat-1/evidence", token, body)
		if code == http.StatusServiceUnavailable && try < 5 {
			t.Logf("push %d: %d %v; pushing again", try, code, res)
			continue
		}
		if code != 200 || res["state"] != string(fleet.Trusted) {
			t.Fatalf("evidence (push %d): %d %v\n%s", try, code, res, tail(v.stderr.String(), 3000))
		}
		break
	}
	if code, res := post("/v1/push/nat-1/evidence", token, body); code != http.StatusConflict {
		t.Errorf("the same evidence again: %d %v, want 409", code, res)
	}
	var a api.Agent
	if err := json.Unmarshal([]byte(v.mustFleet("show", "nat-1", "--json")), &a); err != nil {
		t.Fatal(err)
	}
	if a.State != fleet.Trusted || !a.Push {
		t.Errorf("after the push: %+v", a)
	}
}

// TestVerifierOnPostgres: the same verifier on a private PostgreSQL
// cluster: an agent becomes trusted, and a second verifier process started
// on the database after the first stopped finds it as it was.
func TestVerifierOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, a verifier and an agent")
	}
	ctx := context.Background()
	pg, err := sqltest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	dsn, err := pg.CreateDatabase(ctx, "rimon_fleet_e2e")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "app", "server"), "#!/bin/sh\necho pg\n")
	agent := startSimAgent(t, dir, "settings:\n  debounce: 50ms\nmeasure:\n  - dir: "+filepath.Join(dir, "app")+"\n")
	v := startVerifier(t, filepath.Join(dir, "v1"), "--db", dsn)
	v.mustFleet("reference", "add", "app", agent.reference())
	v.mustFleet("add", "pg-1", "--agent", agent.url, "--ak", agent.ak, "--reference", "app", "--interval", "1s")
	v.waitFor("pg-1 trusted", func() bool { return v.list()["pg-1"].State == fleet.Trusted })
	v.stop()
	if err := v.cmd.ProcessState; err == nil || !err.Success() {
		t.Fatalf("the first verifier did not stop cleanly: %v\n%s", err, tail(v.stderr.String(), 2000))
	}

	v2 := startVerifier(t, filepath.Join(dir, "v2"), "--db", dsn)
	if !strings.Contains(v2.stderr.String(), "agents=1") {
		t.Errorf("the second verifier does not count the agent at start:\n%s", v2.stderr.String())
	}
	a := v2.list()["pg-1"]
	if a.State != fleet.Trusted {
		t.Errorf("on the second verifier pg-1 is %q (%s), want trusted as stored", a.State, a.Reason)
	}
	var hist []api.Event
	if err := json.Unmarshal([]byte(v2.mustFleet("history", "pg-1", "--json")), &hist); err != nil || len(hist) == 0 || hist[len(hist)-1].NewState != fleet.Trusted {
		t.Errorf("pg-1's history on the second verifier: %+v (%v)", hist, err)
	}
}

func TestRedactDSN(t *testing.T) {
	for in, want := range map[string]string{
		"/var/lib/rimon/verifier.db":                    "/var/lib/rimon/verifier.db",
		"sqlite:/tmp/v.db":                              "sqlite:/tmp/v.db",
		"postgres://rimon:s3cret@db:5432/fleet":         "postgres://rimon:xxxxx@db:5432/fleet",
		"postgres://rimon@db/fleet?sslmode=verify-full": "postgres://rimon@db/fleet?sslmode=verify-full",
	} {
		if got := redactDSN(in); got != want {
			t.Errorf("redactDSN(%q) = %q, want %q", in, got, want)
		}
	}
}
