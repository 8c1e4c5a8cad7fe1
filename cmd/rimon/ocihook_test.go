package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/policy"
)

func policyNoRootfs() policy.Containers {
	c := policy.DefaultContainers()
	c.Rootfs = false
	return c
}

// buildStaticHello builds a static Go program that prints its arguments,
// the one binary of the test containers' root file systems.
func buildStaticHello(t *testing.T, dst string) {
	t.Helper()
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "go.mod"), "module hello\n\ngo 1.21\n")
	writeFile(t, filepath.Join(src, "main.go"), "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() { fmt.Println(\"hello from the container\", os.Args[1:]) }\n")
	cmd := exec.Command("go", "build", "-o", dst, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the container's program: %v\n%s", err, out)
	}
}

// needRunc skips a test when runc cannot run a container here.
func needRunc(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("runc is not installed: the OCI hook cannot be run by a real runtime")
	}
	if os.Geteuid() != 0 {
		t.Skip("runc needs root to run a container (rootless runc needs a user namespace setup this test does not make)")
	}
	return p
}

// bundle makes an OCI bundle whose root file system holds the static
// program and the mount points runc would otherwise create, so that the
// tree the hook measures is the tree the test made. hookArgs are the
// arguments of the createRuntime hook (the test binary as rimon).
func makeBundle(t *testing.T, hello string, hookArgs []string, edit func(cfg map[string]any)) string {
	t.Helper()
	b := t.TempDir()
	rootfs := filepath.Join(b, "rootfs")
	for _, d := range []string{"proc", "dev", "sys", "etc"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(hello)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "hello"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(rootfs, "etc", "app.conf"), "mode=1\n")
	// Links out of the root file system: recorded as links, never followed.
	for name, target := range map[string]string{"host": "/", "etc/up": "../../../../etc/shadow"} {
		if err := os.Symlink(target, filepath.Join(rootfs, name)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("runc", "spec")
	cmd.Dir = b
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	var cfg map[string]any
	raw, err := os.ReadFile(filepath.Join(b, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	proc := cfg["process"].(map[string]any)
	proc["args"] = []any{"/hello", "started"}
	proc["terminal"] = false
	cfg["root"] = map[string]any{"path": "rootfs", "readonly": true}
	cfg["hooks"] = map[string]any{"createRuntime": []any{map[string]any{
		"path": os.Args[0],
		"args": append([]any{"rimon"}, anySlice(hookArgs)...),
		"env":  []any{"RIMON_AS_MAIN=1"},
	}}}
	if edit != nil {
		edit(cfg)
	}
	out, err := json.MarshalIndent(cfg, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(b, "config.json"), string(out))
	return b
}

func anySlice(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// runcRun runs the bundle's container to its end and returns its output.
func runcRun(t *testing.T, state, bundle, id string) (string, error) {
	t.Helper()
	cmd := exec.Command("runc", "--root", state, "run", "--bundle", bundle, id)
	out, err := cmd.CombinedOutput()
	exec.Command("runc", "--root", state, "delete", "--force", id).Run()
	return string(out), err
}

func containerRecords(t *testing.T, log string) []eventlog.Record {
	t.Helper()
	f, err := os.Open(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := eventlog.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", log, err)
	}
	var out []eventlog.Record
	for _, r := range recs {
		if r.Content.Str("kind") == eventlog.KindContainer {
			out = append(out, r)
		}
	}
	return out
}

// treeDigest is what rimon measure --tree gives for dir.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	out := mustRimon(t, "measure", "--dry-run", "--tree", dir)
	d, _, _ := strings.Cut(out, " ")
	return d
}

// TestOCIHookRunc: runc runs real containers with rimon as their
// createRuntime hook on a swtpm: one record per start, before the
// container's process runs, whose root file system digest is rimon measure
// --tree's; the same bundle started twice gives the same launch digest; a
// changed file changes the root file system digest; the log replays to the
// TPM's PCR.
func TestOCIHookRunc(t *testing.T) {
	needRunc(t)
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	hello := filepath.Join(dir, "hello")
	buildStaticHello(t, hello)
	log := filepath.Join(dir, "measurements.log")
	b := makeBundle(t, hello, []string{"oci-hook", "--tpm", spec, "--log", log}, nil)
	state := t.TempDir()
	rootfs := filepath.Join(b, "rootfs")

	for i, id := range []string{"web-1", "web-2"} {
		out, err := runcRun(t, state, b, id)
		if err != nil || !strings.Contains(out, "hello from the container [started]") {
			t.Fatalf("runc run %s: %v\n%s", id, err, out)
		}
		if n := len(containerRecords(t, log)); n != i+1 {
			t.Fatalf("after start %d: %d container records, want %d", i+1, n, i+1)
		}
	}
	recs := containerRecords(t, log)
	want := treeDigest(t, rootfs)
	for i, r := range recs {
		c := eventlog.ContainerFromContent(r.Content)
		if c.RootfsSHA256 != want {
			t.Errorf("record %d: rootfs digest %s, rimon measure --tree gives %s", i, c.RootfsSHA256, want)
		}
		if c.Rootfs != rootfs || c.Name != c.ID || r.Content.Str("reason") != "launch:container:"+c.Name || c.RootfsEntries != 9 {
			t.Errorf("record %d: %+v, reason %q", i, c, r.Content.Str("reason"))
		}
	}
	c0, c1 := eventlog.ContainerFromContent(recs[0].Content), eventlog.ContainerFromContent(recs[1].Content)
	if c0.LaunchSHA256 != c1.LaunchSHA256 || c0.ID == c1.ID {
		t.Errorf("two starts of one bundle: launch digests %s and %s (ids %s, %s), want equal", c0.LaunchSHA256, c1.LaunchSHA256, c0.ID, c1.ID)
	}

	// A changed file changes the root file system's digest.
	writeFile(t, filepath.Join(rootfs, "etc", "app.conf"), "mode=2\n")
	if out, err := runcRun(t, state, b, "web-3"); err != nil {
		t.Fatalf("runc run: %v\n%s", err, out)
	}
	recs = containerRecords(t, log)
	c2 := eventlog.ContainerFromContent(recs[2].Content)
	if now := treeDigest(t, rootfs); c2.RootfsSHA256 != now || now == want {
		t.Errorf("after a change: rootfs digest %s, rimon measure --tree gives %s (before: %s)", c2.RootfsSHA256, now, want)
	}
	if c2.LaunchSHA256 != c0.LaunchSHA256 {
		t.Errorf("a changed file changed the launch digest")
	}
	if r := rimon(t, "--tpm", spec, "--log", log, "log", "check"); r.code != 0 {
		t.Errorf("log check after three starts: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The verifier reports each start with its verdict.
	ak := writeFile(t, filepath.Join(dir, "ak.pem"), mustRimon(t, "provision", "--tpm", spec))
	ev := filepath.Join(dir, "ev.json")
	mustRimon(t, "quote", "--tpm", spec, "--log", log, "--nonce", testNonce, "--out", ev)
	ref := writeFile(t, filepath.Join(dir, "ref.yaml"), fmt.Sprintf("containers:\n  web-*:\n    launch: [%s]\n    rootfs: [%s]\n", c0.LaunchSHA256, want))
	r := rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", ak, "--reference", ref)
	if r.code != exitCheck || !strings.Contains(r.stdout, "container web-1 [record 0]: approved") ||
		!strings.Contains(r.stdout, "container web-3 [record 2]: NOT APPROVED") || !strings.Contains(r.stdout, "root file system digest "+c2.RootfsSHA256+" not allowed") {
		t.Errorf("verify with the first root file system only: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	writeFile(t, ref, fmt.Sprintf("containers:\n  web-*:\n    launch: [%s]\n    rootfs: [%s, %s]\n", c0.LaunchSHA256, want, c2.RootfsSHA256))
	r = rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", ak, "--reference", ref)
	if r.code != 0 || strings.Count(r.stdout, ": approved") != 3 {
		t.Errorf("verify with both root file systems: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	writeFile(t, ref, "containers:\n  db:\n    launch: ["+c0.LaunchSHA256+"]\n")
	r = rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", ak, "--reference", ref)
	if r.code != exitCheck || !strings.Contains(r.stdout, "FAIL container web-1: container not listed in the reference [record 0]") {
		t.Errorf("verify with web-* unlisted: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestOCIHookDeny: with on_error deny (the default) a hook that cannot
// reach its TPM fails and runc does not start the container; nothing is
// written to the log. With on_error allow the container starts.
func TestOCIHookDeny(t *testing.T) {
	needRunc(t)
	dir := t.TempDir()
	hello := filepath.Join(dir, "hello")
	buildStaticHello(t, hello)
	log := filepath.Join(dir, "measurements.log")
	unreachable := "tcp:127.0.0.1:1" // nothing listens on port 1
	state := t.TempDir()

	b := makeBundle(t, hello, []string{"oci-hook", "--tpm", unreachable, "--log", log}, nil)
	out, err := runcRun(t, state, b, "denied")
	if err == nil || strings.Contains(out, "hello from the container") {
		t.Fatalf("runc run with an unreachable TPM: err %v, output:\n%s\nwant the start refused before the process runs", err, out)
	}
	if !strings.Contains(out, "rimon: oci-hook:") || !strings.Contains(out, "on_error: deny") {
		t.Errorf("runc's error does not carry the hook's reason:\n%s", out)
	}
	if fi, err := os.Stat(log); err == nil && fi.Size() > 0 {
		t.Errorf("the log holds %d bytes after a refused start, want none", fi.Size())
	}

	pol := writeFile(t, filepath.Join(dir, "policy.yaml"), "containers:\n  on_error: allow\n")
	b = makeBundle(t, hello, []string{"oci-hook", "--tpm", unreachable, "--log", log, "--policy", pol}, nil)
	if out, err := runcRun(t, state, b, "allowed"); err != nil || !strings.Contains(out, "hello from the container") {
		t.Fatalf("runc run with on_error allow: %v\n%s", err, out)
	}
}

// TestOCIHookPolicySelects: a container the policy's when does not select
// starts without a record; one it selects gets one, without its root file
// system when rootfs is false.
func TestOCIHookPolicySelects(t *testing.T) {
	needRunc(t)
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	hello := filepath.Join(dir, "hello")
	buildStaticHello(t, hello)
	log := filepath.Join(dir, "measurements.log")
	pol := writeFile(t, filepath.Join(dir, "policy.yaml"), "containers:\n  when:\n    annotations:\n      '^example\\.com/measure$': '^yes$'\n  rootfs: false\n")
	state := t.TempDir()
	args := []string{"oci-hook", "--tpm", spec, "--log", log, "--policy", pol}
	b := makeBundle(t, hello, args, nil)
	if out, err := runcRun(t, state, b, "plain"); err != nil {
		t.Fatalf("runc run: %v\n%s", err, out)
	}
	if n := len(containerRecordsIfAny(t, log)); n != 0 {
		t.Fatalf("a container the policy does not select: %d records, want 0", n)
	}
	b = makeBundle(t, hello, args, func(cfg map[string]any) {
		cfg["annotations"] = map[string]any{"example.com/measure": "yes"}
	})
	if out, err := runcRun(t, state, b, "chosen"); err != nil {
		t.Fatalf("runc run: %v\n%s", err, out)
	}
	recs := containerRecords(t, log)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if c := eventlog.ContainerFromContent(recs[0].Content); c.RootfsSHA256 != "" || c.LaunchSHA256 == "" || c.Name != "chosen" {
		t.Errorf("record with rootfs: false: %+v", c)
	}
}

func containerRecordsIfAny(t *testing.T, log string) []eventlog.Record {
	if _, err := os.Stat(log); err != nil {
		return nil
	}
	return containerRecords(t, log)
}

// hookProcess runs rimon oci-hook as the runtime would, with stdin.
func hookProcess(t *testing.T, stdin []byte, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"oci-hook"}, args...)...)
	cmd.Env = []string{"RIMON_AS_MAIN=1"}
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// TestOCIHookHostileInput: garbage on stdin, a state naming a bundle whose
// config.json is odd or huge: the hook exits 2 with a clear error naming
// what is wrong, and writes nothing to the log.
func TestOCIHookHostileInput(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "measurements.log")
	bundle := func(config string) string {
		b := t.TempDir()
		os.MkdirAll(filepath.Join(b, "rootfs"), 0o755)
		writeFile(t, filepath.Join(b, "config.json"), config)
		return b
	}
	state := func(b string) []byte {
		return []byte(fmt.Sprintf(`{"ociVersion":"1.0.2","id":"x1","status":"creating","pid":1234,"bundle":%q}`, b))
	}
	big := bundle(`{"root":{"path":"rootfs"},"process":{"args":["/x"],"env":["A=` + strings.Repeat("a", 9<<20) + `"]}}`)
	deep := bundle(`{"root":{"path":"rootfs"},"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`)
	fifo := t.TempDir()
	if err := exec.Command("mkfifo", filepath.Join(fifo, "config.json")).Run(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		stdin []byte
		want  string
	}{
		{"empty_stdin", nil, "the state on stdin is empty"},
		{"garbage_stdin", []byte("\x00\x01garbage{"), "state: invalid JSON"},
		{"stdin_not_utf8", []byte("{\"id\":\"\xff\xfe\"}"), "invalid UTF-8 at byte 7"},
		{"not_json", []byte("hello"), "invalid JSON"},
		{"state_array", []byte(`[1,2]`), "want a JSON object"},
		{"id_bad", []byte(`{"id":"../etc","bundle":"/tmp"}`), "state.id"},
		{"bundle_relative", []byte(`{"id":"a","bundle":"rel/dir"}`), "state.bundle"},
		{"pid_float", []byte(`{"id":"a","bundle":"/tmp","pid":1.5}`), "state.pid"},
		{"dup_key", []byte(`{"id":"a","id":"b","bundle":"/tmp"}`), "state.id: appears twice"},
		{"stdin_huge", bytes.Repeat([]byte(" "), 2<<20), "larger than"},
		{"no_config", state(t.TempDir()), "config.json"},
		{"config_fifo", state(fifo), "not a regular file"},
		{"config_huge", state(big), "larger than 8 MiB"},
		{"config_deep", state(deep), "nested more than 64 levels"},
		{"config_float", state(bundle(`{"root":{"path":"rootfs"},"process":{"user":{"uid":1e3}}}`)), "without fraction or exponent"},
		{"config_huge_int", state(bundle(`{"root":{"path":"rootfs"},"process":{"user":{"uid":123456789012345678901234567890}}}`)), "want an integer"},
		{"config_args_type", state(bundle(`{"root":{"path":"rootfs"},"process":{"args":"/bin/sh"}}`)), "process.args: want a list of strings"},
		{"config_no_root", state(bundle(`{"process":{"args":["/x"]}}`)), "root: want an object"},
		{"config_lone_surrogate", state(bundle(`{"root":{"path":"rootfs"},"hostname":"\udc80"}`)), "unpaired surrogate"},
		{"config_dup", state(bundle(`{"root":{"path":"rootfs"},"root":{"path":"/"}}`)), "root: appears twice"},
		{"rootfs_missing", state(bundle(`{"root":{"path":"nothere"}}`)), "nothere"},
		{"name_control", state(bundle(`{"root":{"path":"rootfs"},"annotations":{"io.kubernetes.container.name":"a\u0007b"}}`)), "control character"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := hookProcess(t, tc.stdin, "--tpm", "sim", "--log", log)
			if code != exitError || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, output:\n%s\nwant exit %d and %q", code, out, exitError, tc.want)
			}
			for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
				if !strings.HasPrefix(line, "rimon: ") {
					t.Errorf("stderr line %q does not start with rimon: ", line)
				}
			}
			if _, err := os.Stat(log); err == nil {
				t.Errorf("the log exists after a refused start")
			}
		})
	}
}

// TestOCIHookBudget: the policy's max_file_size bounds the root file
// system's files: a larger one stops the start (on_error: deny).
func TestOCIHookBudget(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	b := t.TempDir()
	writeFile(t, filepath.Join(b, "rootfs", "big"), strings.Repeat("x", 4096))
	writeFile(t, filepath.Join(b, "config.json"), `{"root":{"path":"rootfs"}}`)
	pol := writeFile(t, filepath.Join(dir, "p.yaml"), "settings:\n  max_file_size: 1KiB\ncontainers:\n  rootfs: true\n")
	code, out := hookProcess(t, []byte(fmt.Sprintf(`{"id":"big","bundle":%q}`, b)), "--tpm", "sim", "--log", log, "--policy", pol)
	if code != exitError || !strings.Contains(out, "big") || !strings.Contains(out, "on_error: deny") {
		t.Errorf("a root file system with a file over max_file_size: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(log); err == nil {
		t.Error("the log exists after a refused start")
	}
}

// TestOCIHookInstall: the oci-hooks(5) file names this binary, the TPM, the
// log and the policy, stage createRuntime, and the policy's when.
func TestOCIHookInstall(t *testing.T) {
	dir := t.TempDir()
	pol := writeFile(t, filepath.Join(dir, "policy.yaml"), "containers:\n  when:\n    commands: ['^/usr/sbin/nginx$']\n")
	hooks := filepath.Join(dir, "hooks.d")
	out := mustRimon(t, "--tpm", "/dev/tpmrm0", "--log", "/run/rimon/m.log", "oci-hook", "install", "--dir", hooks, "--path", "/usr/bin/rimon", "--policy", pol)
	if strings.TrimSpace(out) != filepath.Join(hooks, "rimon.json") {
		t.Errorf("install printed %q", out)
	}
	var hf map[string]any
	raw, err := os.ReadFile(filepath.Join(hooks, "rimon.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &hf); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"version": "1.0.0",
		"hook":    map[string]any{"path": "/usr/bin/rimon", "args": []any{"rimon", "oci-hook", "--tpm", "/dev/tpmrm0", "--log", "/run/rimon/m.log", "--policy", pol}},
		"when":    map[string]any{"commands": []any{"^/usr/sbin/nginx$"}},
		"stages":  []any{"createRuntime"},
	}
	if g, w := fmt.Sprint(hf), fmt.Sprint(want); g != w {
		t.Errorf("hook file:\n%s\nwant\n%s", raw, w)
	}
	if r := rimon(t, "oci-hook", "install", "--dir", hooks, "--path", "relative/rimon"); r.code != exitUsage {
		t.Errorf("install --path relative: exit %d, want %d", r.code, exitUsage)
	}
}

// TestOCIHookPodman: rootful podman, with the hooks.d file rimon oci-hook
// install wrote, runs a container of an image imported from a local tar:
// the start is recorded, named as podman names the container, with the
// image identity from podman's storage files.
func TestOCIHookPodman(t *testing.T) {
	needRunc(t)
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed")
	}
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "measurements.log")
	rootfs := filepath.Join(dir, "rootfs")
	buildStaticHello(t, filepath.Join(rootfs, "hello"))
	tarball := filepath.Join(dir, "image.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tarball, "hello").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	hooks := filepath.Join(dir, "hooks.d")
	mustRimon(t, "--tpm", spec, "--log", log, "oci-hook", "install", "--dir", hooks, "--path", os.Args[0])
	// The test binary is rimon only with RIMON_AS_MAIN set: the one
	// change to the installed file.
	hf := filepath.Join(hooks, "rimon.json")
	var h map[string]any
	raw, err := os.ReadFile(hf)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	h["hook"].(map[string]any)["env"] = []any{"RIMON_AS_MAIN=1"}
	raw, _ = json.Marshal(h)
	writeFile(t, hf, string(raw))

	store := t.TempDir()
	base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--tmpdir", filepath.Join(store, "tmp"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc", "--hooks-dir", hooks}
	pm := func(args ...string) (string, error) {
		out, err := exec.Command(podman, append(append([]string{}, base...), args...)...).CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { pm("rm", "--all", "--force") })
	out, err := pm("import", tarball, "localhost/rimon-test:1")
	if err != nil {
		t.Skipf("podman cannot import an image here: %v\n%s", err, out)
	}
	imageID := "sha256:" + strings.TrimPrefix(strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]), "sha256:")
	for _, name := range []string{"web1", "web2"} {
		out, err = pm("run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
			"--name", name, "localhost/rimon-test:1", "/hello", "started")
		if err != nil || !strings.Contains(out, "hello from the container [started]") {
			t.Fatalf("podman run %s: %v\n%s", name, err, out)
		}
	}
	recs := containerRecords(t, log)
	if len(recs) != 2 {
		t.Fatalf("%d container records after two podman runs, want 2", len(recs))
	}
	c0, c1 := eventlog.ContainerFromContent(recs[0].Content), eventlog.ContainerFromContent(recs[1].Content)
	for i, c := range []eventlog.Container{c0, c1} {
		if c.Name != []string{"web1", "web2"}[i] || c.ImageSource != "podman" || c.ImageName != "localhost/rimon-test:1" ||
			c.ImageID != imageID || !strings.HasPrefix(c.ImageDigest, "sha256:") || c.RootfsSHA256 == "" {
			t.Errorf("record %d: %+v, want name web%d, image localhost/rimon-test:1 id %s from podman", i, c, i+1, imageID)
		}
	}
	// podman's ids, host names and per-container paths are normalized away.
	if c0.LaunchSHA256 != c1.LaunchSHA256 || c0.ID == c1.ID {
		t.Errorf("two podman runs of one image and command: launch digests %s and %s, want equal", c0.LaunchSHA256, c1.LaunchSHA256)
	}
	if c0.RootfsSHA256 != c1.RootfsSHA256 {
		t.Errorf("two podman runs of one image: root file system digests %s and %s, want equal", c0.RootfsSHA256, c1.RootfsSHA256)
	}

	// reference generate --from-image: the root file system of the saved
	// image is the tree rimon measure --tree gives for the tar unpacked.
	saved := filepath.Join(dir, "saved.tar")
	if out, err := pm("save", "--format", "oci-archive", "-o", saved, "localhost/rimon-test:1"); err != nil {
		t.Fatalf("podman save: %v\n%s", err, out)
	}
	unpacked := filepath.Join(dir, "unpacked")
	os.Mkdir(unpacked, 0o755)
	if out, err := exec.Command("tar", "-C", unpacked, "-xf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	ref := mustRimon(t, "reference", "generate", "--from-image", saved, "--container", "web*")
	if want := treeDigest(t, unpacked); !strings.Contains(ref, "rootfs:\n      - \""+want+"\"") || !strings.Contains(ref, imageID) {
		t.Errorf("reference generate --from-image:\n%s\nwant rootfs %s and image %s", ref, want, imageID)
	}
}

// BenchmarkOCIHookFixed: the hook's fixed cost in process, on a swtpm:
// read the state and config.json, normalize, open the TPM and the log,
// lock, append, extend (the root file system off). The log grows by one
// record an iteration, as a host's does.
func BenchmarkOCIHookFixed(b *testing.B) {
	spec := testtpm.Swtpm(b)
	dir := b.TempDir()
	log := filepath.Join(dir, "m.log")
	bundle := filepath.Join(dir, "bundle")
	os.MkdirAll(filepath.Join(bundle, "rootfs"), 0o755)
	raw, err := os.ReadFile("../../ocihook/testdata/podman-config.json")
	if err != nil {
		b.Fatal(err)
	}
	var cfg map[string]any
	json.Unmarshal(raw, &cfg)
	cfg["root"] = map[string]any{"path": "rootfs"}
	raw, _ = json.Marshal(cfg)
	os.WriteFile(filepath.Join(bundle, "config.json"), raw, 0o644)
	state := []byte(fmt.Sprintf(`{"ociVersion":"1.0.2","id":"bench","status":"creating","pid":1,"bundle":%q}`, bundle))
	cs := policyNoRootfs()
	g := &globals{tpm: spec, log: log, stdout: io.Discard, stderr: io.Discard}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := measureContainer(context.Background(), g, bytes.NewReader(state), cs, 23, measure.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
