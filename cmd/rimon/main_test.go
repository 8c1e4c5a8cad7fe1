package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// TestMain lets the test binary act as rimon itself when RIMON_AS_MAIN is
// set, so tests can run it as a separate process.
func TestMain(m *testing.M) {
	if os.Getenv("RIMON_AS_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type result struct {
	code           int
	stdout, stderr string
}

// rimon runs the command line in process.
func rimon(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func mustRimon(t *testing.T, args ...string) string {
	t.Helper()
	r := rimon(t, args...)
	if r.code != 0 {
		t.Fatalf("rimon %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDryRunIsByteIdenticalToSha256sum(t *testing.T) {
	dir := t.TempDir()
	files := []string{
		writeFile(t, filepath.Join(dir, "plain"), "hello\n"),
		writeFile(t, filepath.Join(dir, "with space"), ""),
		writeFile(t, filepath.Join(dir, `back\slash`), "x"),
		writeFile(t, filepath.Join(dir, "big"), strings.Repeat("0123456789", 300000)),
	}
	want, err := exec.Command("sha256sum", files...).Output()
	if err != nil {
		t.Fatalf("sha256sum: %v", err)
	}
	got := mustRimon(t, append([]string{"measure", "--dry-run"}, files...)...)
	if got != string(want) {
		t.Errorf("rimon measure --dry-run printed\n%q\nsha256sum printed\n%q", got, want)
	}
}

// TestBadInput checks that each bad input gives one clear line, the exit
// code that means it, and leaves the log untouched.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, filepath.Join(dir, "ok"), "ok")
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := writeFile(t, filepath.Join(dir, "garbage.log"), "\x1e{\"recnum\":0,\"pcr\":23}\nnot a record\n")
	otherBoot := filepath.Join(dir, "other-boot.log")
	vec, err := os.ReadFile("../../testdata/vectors/replay.log")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, otherBoot, string(vec))
	log := filepath.Join(dir, "m.log")

	for _, tc := range []struct {
		name string
		args []string
		code int
		text string
	}{
		{"missing_file", []string{"measure", "--tpm", "sim", "--log", log, filepath.Join(dir, "nope")}, exitError, "nope: no such file or directory"},
		{"directory_without_tree", []string{"measure", "--tpm", "sim", "--log", log, dir}, exitError, "is a directory (use --tree"},
		{"fifo", []string{"measure", "--tpm", "sim", "--log", log, fifo}, exitError, "not a regular file (it is a FIFO)"},
		{"one_bad_of_two", []string{"measure", "--tpm", "sim", "--log", log, file, fifo}, exitError, "FIFO"},
		{"garbage_log", []string{"measure", "--tpm", "sim", "--log", garbage, file}, exitError, `record 0 (byte 0): field "digests" is missing`},
		{"garbage_log_show", []string{"log", "show", "--log", garbage}, exitError, `record 0 (byte 0)`},
		{"log_of_another_boot", []string{"measure", "--tpm", "sim", "--log", otherBoot, file}, exitError, "log belongs to another boot"},
		{"unknown_bank", []string{"log", "replay", "--log", otherBoot, "--bank", "md5"}, exitUsage, `unknown PCR bank "md5"`},
		{"unknown_bank_pcr_read", []string{"pcr", "read", "--tpm", "sim", "--bank", "sm3", "23"}, exitUsage, "unknown PCR bank"},
		{"tpm_unreachable", []string{"measure", "--tpm", "tcp:127.0.0.1:1", "--log", log, file}, exitError, "swtpm not reachable at tcp:127.0.0.1:1"},
		{"no_tpm_device", []string{"measure", "--tpm", filepath.Join(dir, "tpmrm9"), "--log", log, file}, exitError, "no TPM at"},
		{"bad_pcr", []string{"measure", "--tpm", "sim", "--log", log, "--pcr", "24", file}, exitUsage, "--pcr 24"},
		{"bad_reason", []string{"measure", "--tpm", "sim", "--log", log, "--reason", "Launch!", file}, exitUsage, "--reason"},
		{"no_paths", []string{"measure", "--tpm", "sim", "--log", log}, exitUsage, "requires at least 1 arg"},
		{"unknown_flag", []string{"measure", "--frobnicate", file}, exitUsage, "unknown flag"},
		{"unknown_command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"missing_log_replay", []string{"log", "replay", "--log", filepath.Join(dir, "none.log")}, exitError, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotFiles(t, dir)
			r := rimon(t, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.text) {
				t.Errorf("rimon %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.text)
			}
			if !strings.HasPrefix(r.stderr, "rimon: ") {
				t.Errorf("stderr %q does not start with 'rimon: '", r.stderr)
			}
			if after := snapshotFiles(t, dir); after != before {
				t.Errorf("a failed command changed the files in %s:\nbefore %s\nafter  %s", dir, before, after)
			}
		})
	}
}

// snapshotFiles summarizes the names and contents of dir's files.
func snapshotFiles(t *testing.T, dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		b.WriteString(e.Name())
		b.WriteString("=")
		s := sha256.Sum256(data)
		b.WriteString(hexs(s[:]))
		b.WriteString(" ")
	}
	return b.String()
}

// TestUnreadableFile runs rimon without the capabilities that let root read
// any file, so the refusal is real even when the tests run as root.
func TestUnreadableFile(t *testing.T) {
	dir := t.TempDir()
	secret := writeFile(t, filepath.Join(dir, "secret"), "x")
	if err := os.Chmod(secret, 0); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	args := []string{"measure", "--dry-run", secret}
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatalf("running as root needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE: %v", err)
		}
		cmd = exec.Command(setpriv, append([]string{"--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all", os.Args[0]}, args...)...)
	} else {
		cmd = exec.Command(os.Args[0], args...)
	}
	cmd.Env = append(os.Environ(), "RIMON_AS_MAIN=1")
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != exitError || !strings.Contains(string(out), "secret: open: permission denied") {
		t.Errorf("rimon measure of an unreadable file: %v\n%s\nwant exit %d and 'permission denied'", err, out, exitError)
	}
}

// TestSimulatorPCREqualsReplay measures files on the in-process simulator
// and compares the PCR read from it with the log's replay in every active bank.
func TestSimulatorPCREqualsReplay(t *testing.T) {
	ctx := context.Background()
	tp := testtpm.Open(t)
	banks, err := tp.ActiveBanks(ctx, 23)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "m.log")
	w, _, err := logfile.OpenWriter(ctx, logPath, tp, logfile.WriterOptions{Banks: banks.Active, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	dir := t.TempDir()
	var paths []string
	for i := 0; i < 10; i++ {
		paths = append(paths, writeFile(t, filepath.Join(dir, string(rune('a'+i))), strings.Repeat("z", i*1000)))
	}
	ms, err := measureAll(ctx, paths, measureFlags{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if _, err := w.Append(ctx, 23, m.Event("initial")); err != nil {
			t.Fatal(err)
		}
	}
	recs, _, err := logfile.Snapshot(ctx, logPath)
	if err != nil {
		t.Fatal(err)
	}
	st, err := eventlog.Replay(recs, banks.Active)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tp.ReadPCRs(ctx, 23, banks.Active)
	if err != nil {
		t.Fatal(err)
	}
	if len(banks.Active) < 2 {
		t.Errorf("the simulator has %d active banks; the test wants several", len(banks.Active))
	}
	for _, h := range banks.Active {
		if !bytes.Equal(vals[h], st.Value(23, h)) {
			t.Errorf("%s: TPM %x, replay %x", eventlog.BankName(h), vals[h], st.Value(23, h))
		}
	}
}

// failingExtend reads PCRs from a real TPM but loses every extend: the
// process "crashed" after appending.
type failingExtend struct{ *tpm.TPM }

func (failingExtend) ExtendPCR(ctx context.Context, pcr int, d map[crypto.Hash][]byte) error {
	return context.Canceled
}

func tpm2PCR(t *testing.T, spec string) string {
	t.Helper()
	out, err := exec.Command("tpm2_pcrread", "-T", testtpm.TCTI(spec), "sha256:23").CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_pcrread: %v\n%s", err, out)
	}
	i := strings.Index(string(out), "0x")
	if i < 0 {
		t.Fatalf("tpm2_pcrread printed no value:\n%s", out)
	}
	return strings.ToLower(strings.TrimSpace(string(out[i+2:])))
}

// TestSwtpmInterop measures on a private swtpm, reads PCR 23 with
// tpm2_pcrread, injects a crash between append and extend, and checks that
// the next run repairs it.
func TestSwtpmInterop(t *testing.T) {
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	a := writeFile(t, filepath.Join(dir, "a"), "a")
	b := writeFile(t, filepath.Join(dir, "b"), "b")
	c := writeFile(t, filepath.Join(dir, "c"), "c")

	mustRimon(t, "measure", "--tpm", spec, "--log", log, a, b)
	replay := strings.TrimSpace(mustRimon(t, "log", "replay", "--log", log))
	if got := tpm2PCR(t, spec); got != replay {
		t.Fatalf("tpm2_pcrread sha256:23 = %s, rimon log replay = %s", got, replay)
	}
	if got := strings.TrimSpace(mustRimon(t, "pcr", "read", "--tpm", spec, "23")); got != replay {
		t.Errorf("rimon pcr read 23 = %s, want %s", got, replay)
	}

	// Crash between append and extend.
	ctx := context.Background()
	tp, err := tpm.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	banks, _ := tp.ActiveBanks(ctx, 23)
	boot, _ := logfile.CurrentBootID()
	w, _, err := logfile.OpenWriter(ctx, log, failingExtend{tp}, logfile.WriterOptions{Banks: banks.Active, PCR: 23, BootID: boot})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, 23, eventlog.Event{Kind: "file", Path: c, SHA256: strings.Repeat("00", 32), Reason: "manual"}); err == nil {
		t.Fatal("Append with a lost extend reported success")
	}
	w.Close()
	tp.Close()
	if r := rimon(t, "log", "check", "--tpm", spec, "--log", log); r.code != exitCheck || !strings.Contains(r.stderr, "record(s) [2] were written but not extended") {
		t.Fatalf("log check after a crash: exit %d, %s", r.code, r.stderr)
	}

	r := rimon(t, "measure", "--tpm", spec, "--log", log, c)
	if r.code != 0 || !strings.Contains(r.stderr, "repaired: record(s) [2]") {
		t.Fatalf("measure after a crash: exit %d\n%s", r.code, r.stderr)
	}
	replay = strings.TrimSpace(mustRimon(t, "log", "replay", "--log", log))
	if got := tpm2PCR(t, spec); got != replay {
		t.Errorf("after repair: tpm2_pcrread = %s, replay = %s", got, replay)
	}
	if out := mustRimon(t, "log", "check", "--tpm", spec, "--log", log); !strings.Contains(out, "(4 records)") {
		t.Errorf("log check after repair printed %q", out)
	}

	// An extend outside rimon is a divergence: exit 1, naming the values.
	if out, err := exec.Command("tpm2_pcrextend", "-T", testtpm.TCTI(spec), "23:sha256="+strings.Repeat("11", 32)).CombinedOutput(); err != nil {
		t.Fatalf("tpm2_pcrextend: %v\n%s", err, out)
	}
	r = rimon(t, "log", "check", "--tpm", spec, "--log", log)
	if r.code != exitCheck || !strings.Contains(r.stderr, "PCR 23 sha256: TPM has") || !strings.Contains(r.stderr, replay) {
		t.Errorf("log check after a foreign extend: exit %d, %s", r.code, r.stderr)
	}
	if r := rimon(t, "measure", "--tpm", spec, "--log", log, c); r.code != exitError || !strings.Contains(r.stderr, "disagree") {
		t.Errorf("measure on a diverged log: exit %d, %s; want a refusal", r.code, r.stderr)
	}
}

func TestTreeMeasurement(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), "x")
	out := mustRimon(t, "measure", "--dry-run", "--tree", dir)
	log := filepath.Join(t.TempDir(), "m.log")
	rec := mustRimon(t, "measure", "--tpm", "sim", "--log", log, "--tree", dir)
	digest := strings.Fields(out)[0]
	if !strings.Contains(rec, " tree "+digest+" manual "+dir) {
		t.Errorf("measure --tree printed %q, want the tree digest %s", rec, digest)
	}
}

// TestNoCgoBinary builds rimon without cgo: it must still drive swtpm, and
// say clearly that the simulator needs a cgo build.
func TestNoCgoBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "rimon")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "pcr", "read", "--tpm", "sim", "23").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitError || !strings.Contains(string(out), "needs a binary built with cgo") {
		t.Errorf("no-cgo rimon --tpm sim: %v\n%s", err, out)
	}
	spec := testtpm.Swtpm(t)
	out, err = exec.Command(bin, "pcr", "read", "--tpm", spec, "23").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != strings.Repeat("0", 64) {
		t.Errorf("no-cgo rimon on swtpm: %v\n%s", err, out)
	}
}

// TestMeasureImage records a docker save archive built here, and refuses
// it once a layer is corrupted.
func TestMeasureImage(t *testing.T) {
	dir := t.TempDir()
	layer := []byte("layer tar")
	ls := sha256.Sum256(layer)
	cfg := []byte(`{"rootfs":{"type":"layers","diff_ids":["sha256:` + hexs(ls[:]) + `"]}}`)
	cs := sha256.Sum256(cfg)
	mk := func(layer []byte) string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for name, b := range map[string][]byte{
			"manifest.json":       []byte(`[{"Config":"` + hexs(cs[:]) + `.json","RepoTags":["web:1"],"Layers":["l1/layer.tar"]}]`),
			hexs(cs[:]) + ".json": cfg,
			"l1/layer.tar":        layer,
		} {
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
			tw.Write(b)
		}
		tw.Close()
		return writeFile(t, filepath.Join(dir, "web.tar"), buf.String())
	}
	log := filepath.Join(dir, "m.log")
	out := mustRimon(t, "measure", "--tpm", "sim", "--log", log, "--image", mk(layer))
	if !strings.Contains(out, " image "+hexs(cs[:])+" manual ") {
		t.Errorf("measure --image printed %q, want the config digest %x", out, cs)
	}
	show := mustRimon(t, "log", "show", "--json", "--log", log)
	if !strings.Contains(show, `"config_digest": "sha256:`+hexs(cs[:])) {
		t.Errorf("the record lacks config_digest:\n%s", show)
	}
	mk([]byte("layer taR"))
	before := snapshotFiles(t, dir)
	if r := rimon(t, "measure", "--tpm", "sim", "--log", log, "--image", filepath.Join(dir, "web.tar")); r.code != exitError || !strings.Contains(r.stderr, "image is corrupt") {
		t.Errorf("corrupt image: exit %d, %s", r.code, r.stderr)
	}
	if snapshotFiles(t, dir) != before {
		t.Error("a refused image changed the log")
	}
}

func hexs(b []byte) string { return hex.EncodeToString(b) }
