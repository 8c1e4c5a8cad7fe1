package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// shapeLog is a log on a private swtpm, written the way rimon writes each
// shape of record: by the CLI (file, tree, image), by the log writer as the
// agent does (deletion, creation), or record by record and extended into
// the TPM as systemd-pcrextend and systemd-cryptsetup do (systemd records)
// and as the agent's unmeasured records are shaped (docs/FORMAT.md).
type shapeLog struct {
	spec, dir, log string
	records        int // records written
	notRecomputed  int // of which digests cannot be recomputed
	unmeasured     int // of which say a path could not be measured
	pcrs           map[int]bool
}

func newShapeLog(t *testing.T) *shapeLog {
	spec := testtpm.Swtpm(t)
	dir := t.TempDir()
	return &shapeLog{spec: spec, dir: dir, log: filepath.Join(dir, "measurements.log"), pcrs: map[int]bool{23: true}}
}

func (s *shapeLog) measure(t *testing.T, args ...string) {
	t.Helper()
	mustRimon(t, append([]string{"measure", "--tpm", s.spec, "--log", s.log}, args...)...)
	s.records++
}

func (s *shapeLog) file(t *testing.T, name, content string) string {
	return writeFile(t, filepath.Join(s.dir, name), content)
}

// appendEvent writes ev as the agent does, through the log writer.
func (s *shapeLog) appendEvent(t *testing.T, ev eventlog.Event) {
	t.Helper()
	ctx := context.Background()
	tp, err := tpm.Open(ctx, s.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	b, err := tp.ActiveBanks(ctx, 23)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := logfile.CurrentBootID()
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := logfile.OpenWriter(ctx, s.log, tp, logfile.WriterOptions{Banks: b.Active, BootID: boot, PCR: 23})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Append(ctx, 23, ev); err != nil {
		t.Fatal(err)
	}
	s.records++
}

// appendRecord appends rec to the log and extends it into the TPM, as a
// producer other than rimon's writer does. digest gives the digest of a
// bank; rimon records are numbered by their position.
func (s *shapeLog) appendRecord(t *testing.T, rec eventlog.Record, digest func(h crypto.Hash) []byte) {
	t.Helper()
	ctx := context.Background()
	tp, err := tpm.Open(ctx, s.spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	b, err := tp.ActiveBanks(ctx, rec.PCR)
	if err != nil {
		t.Fatal(err)
	}
	ext := map[crypto.Hash][]byte{}
	for _, h := range b.Active {
		d := digest(h)
		rec.Digests = append(rec.Digests, eventlog.Digest{Alg: h, Value: d})
		ext[h] = d
	}
	if rec.ContentType == eventlog.ContentTypeRimon {
		rec.RecNum, rec.HasRecNum = uint64(s.records), true
	}
	m, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(s.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(m); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := tp.ExtendPCR(ctx, rec.PCR, ext); err != nil {
		t.Fatal(err)
	}
	s.records++
	s.pcrs[rec.PCR] = true
}

// systemd appends a record of systemd's shape (src/shared/tpm2-util.c):
// no recnum, a "string", "bootId", "timestamp" and "eventType". The digest
// is the hash of the string, or for a volume-key record the HMAC of the
// string keyed with the LUKS volume key.
func (s *shapeLog) systemd(t *testing.T, pcr int, str, eventType string) {
	t.Helper()
	content, _ := json.Marshal(map[string]any{"string": str, "bootId": "7a1c2e9b0d4f4e6a8b3c5d7e9f0a1b2c", "timestamp": 5284713, "eventType": eventType})
	s.appendRecord(t, eventlog.Record{PCR: pcr, ContentType: eventlog.ContentTypeSystemd, RawContent: content}, func(h crypto.Hash) []byte {
		if eventType == "volume-key" {
			m := hmac.New(h.New, []byte("LUKS volume key of the test"))
			m.Write([]byte(str))
			return m.Sum(nil)
		}
		hh := h.New()
		hh.Write([]byte(str))
		return hh.Sum(nil)
	})
	if eventType == "volume-key" {
		s.notRecomputed++
	}
}

// unmeasured appends an unmeasured record; pathField is "path" or
// "path_escaped" (BRIEF contract, docs/FORMAT.md).
func (s *shapeLog) addUnmeasured(t *testing.T, pathField, path, reason, cause, errText string) {
	t.Helper()
	s.unmeasured++
	boot, err := logfile.CurrentBootID()
	if err != nil {
		t.Fatal(err)
	}
	c, err := eventlog.NewContent(
		eventlog.Field{Key: "kind", Str: "unmeasured"}, eventlog.Field{Key: pathField, Str: path},
		eventlog.Field{Key: "reason", Str: reason}, eventlog.Field{Key: "cause", Str: cause},
		eventlog.Field{Key: "error", Str: errText},
		eventlog.Field{Key: "time", Str: "2026-11-28T13:40:00.5Z"}, eventlog.Field{Key: "boot_id", Str: boot})
	if err != nil {
		t.Fatal(err)
	}
	s.appendRecord(t, eventlog.Record{PCR: 23, ContentType: eventlog.ContentTypeRimon, Content: c}, func(h crypto.Hash) []byte {
		return c.Digests([]crypto.Hash{h})[0].Value
	})
}

// dockerArchive writes a docker save archive of one image with one layer.
func dockerArchive(t *testing.T, path string) string {
	layer := []byte("layer tar")
	ls := sha256.Sum256(layer)
	cfg := []byte(`{"rootfs":{"type":"layers","diff_ids":["sha256:` + hexs(ls[:]) + `"]}}`)
	cs := sha256.Sum256(cfg)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		b    []byte
	}{
		{"manifest.json", []byte(`[{"Config":"` + hexs(cs[:]) + `.json","RepoTags":["web:1"],"Layers":["l1/layer.tar"]}]`)},
		{hexs(cs[:]) + ".json", cfg},
		{"l1/layer.tar", layer},
	} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.b)), Typeflag: tar.TypeReg})
		tw.Write(f.b)
	}
	tw.Close()
	return writeFile(t, path, buf.String())
}

// The shapes of record rimon writes, each a function adding it to a log.
var shapes = []struct {
	name string
	add  func(t *testing.T, s *shapeLog)
}{
	{"file", func(t *testing.T, s *shapeLog) { s.measure(t, s.file(t, "app", "v1\n")) }},
	{"tree", func(t *testing.T, s *shapeLog) {
		s.file(t, "tree/bin/tool", "tool")
		s.file(t, "tree/etc/conf", "x = 1\n")
		s.measure(t, "--tree", filepath.Join(s.dir, "tree"))
	}},
	{"image", func(t *testing.T, s *shapeLog) {
		s.measure(t, "--image", dockerArchive(t, filepath.Join(s.dir, "web.tar")))
	}},
	{"deletion", func(t *testing.T, s *shapeLog) {
		s.appendEvent(t, eventlog.Event{Kind: eventlog.KindFile, Path: filepath.Join(s.dir, "gone.conf"), Reason: eventlog.ReasonDeleted})
	}},
	{"creation", func(t *testing.T, s *shapeLog) {
		sum := sha256.Sum256([]byte("new\n"))
		s.appendEvent(t, eventlog.Event{Kind: eventlog.KindFile, Path: s.file(t, "new.conf", "new\n"), Reason: "created", SHA256: hexs(sum[:]), Size: 4})
	}},
	{"systemd", func(t *testing.T, s *shapeLog) {
		s.systemd(t, 11, "enter-initrd", "phase")
		s.systemd(t, 15, "machine-id:6c7b4a3f2e1d4c0b9a8f7e6d5c4b3a21", "machine-id")
		s.systemd(t, 15, "cryptsetup:root:1e023a55-60f9-4b6b-9b80-67438dc5f065", "volume-key")
		s.measure(t, s.file(t, "after-systemd", "x"))
	}},
	{"unmeasured", func(t *testing.T, s *shapeLog) {
		s.addUnmeasured(t, "path", filepath.Join(s.dir, "secret"), "changed", "unreadable", "open: permission denied")
		s.addUnmeasured(t, "path_escaped", "/srv/data/caf%E9%25.txt", "initial", "name_not_utf8", "name is not valid UTF-8")
	}},
}

// TestEveryShapeThroughEveryReader writes each shape of record rimon writes
// (and a log mixing them all) and reads it with every reader: log replay,
// log show, log check on the TPM and on the simulator, quote and verify.
func TestEveryShapeThroughEveryReader(t *testing.T) {
	t.Run("mixed", func(t *testing.T) {
		s := newShapeLog(t)
		for i := len(shapes) - 1; i >= 0; i-- { // systemd records in the middle, not first
			shapes[i].add(t, s)
		}
		checkEveryReader(t, s)
	})
	t.Run("file_then_image", func(t *testing.T) { // the sequence that once broke replay
		s := newShapeLog(t)
		shapes[0].add(t, s)
		shapes[2].add(t, s)
		checkEveryReader(t, s)
	})
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			s := newShapeLog(t)
			sh.add(t, s)
			checkEveryReader(t, s)
		})
	}
}

func checkEveryReader(t *testing.T, s *shapeLog) {
	t.Helper()
	var pcrs []string
	for p := range s.pcrs {
		pcrs = append(pcrs, strconv.Itoa(p))
	}
	// log replay: the value of every PCR the log names, in two banks, is the TPM's.
	for _, p := range pcrs {
		for _, bank := range []string{"sha256", "sha1"} {
			replayed := strings.TrimSpace(mustRimon(t, "log", "replay", "--log", s.log, "--pcr", p, "--bank", bank))
			read := strings.TrimSpace(mustRimon(t, "pcr", "read", "--tpm", s.spec, "--bank", bank, p))
			if replayed != read {
				t.Errorf("log replay --pcr %s --bank %s = %s, the TPM has %s", p, bank, replayed, read)
			}
		}
	}

	// log show: every record, none marked edited, the HMAC ones marked so.
	show := mustRimon(t, "log", "show", "--log", s.log)
	if n := strings.Count(show, "\n"); n != s.records || strings.Contains(show, "EDITED") {
		t.Errorf("log show: %d lines for %d records:\n%s", n, s.records, show)
	}
	if n := strings.Count(show, "extended digest, not recomputable"); n != s.notRecomputed {
		t.Errorf("log show marks %d records as not recomputable, want %d:\n%s", n, s.notRecomputed, show)
	}
	var recs []struct {
		Verified, Recomputable bool
		Problem                string
	}
	if err := json.Unmarshal([]byte(mustRimon(t, "log", "show", "--json", "--log", s.log)), &recs); err != nil || len(recs) != s.records {
		t.Fatalf("log show --json: %d records, %v", len(recs), err)
	}
	for i, r := range recs {
		if r.Problem != "" || r.Verified != r.Recomputable {
			t.Errorf("log show --json record %d: %+v", i, r)
		}
	}

	// log check, on the TPM the log was written to and on a fresh simulator.
	want := "(" + strconv.Itoa(s.records) + " records)"
	for _, tpmSpec := range []string{s.spec, "sim"} {
		if out := mustRimon(t, "log", "check", "--tpm", tpmSpec, "--log", s.log); !strings.Contains(out, "ok: log") || !strings.Contains(out, want) {
			t.Errorf("log check --tpm %s:\n%s", tpmSpec, out)
		}
	}

	// quote and verify: every record is covered by the quote.
	ak := writeFile(t, filepath.Join(s.dir, "ak.pem"), mustRimon(t, "provision", "--tpm", s.spec))
	ev := filepath.Join(s.dir, "evidence")
	sel := strings.Join(pcrs, ",")
	mustRimon(t, "quote", "--tpm", s.spec, "--log", s.log, "--nonce", testNonce, "--pcrs", sel, "--bank", "sha256", "--out", ev)
	r := rimon(t, "verify", "--evidence", ev, "--nonce", testNonce, "--ak", ak, "--pcrs", sel, "--json")
	// A path that could not be measured is never approved: UNTRUSTED.
	if want := map[bool]int{false: 0, true: exitCheck}[s.unmeasured > 0]; r.code != want {
		t.Fatalf("verify: exit %d, want %d (%d unmeasured records)\n%s%s", r.code, want, s.unmeasured, r.stdout, r.stderr)
	}
	if s.unmeasured > 0 && !strings.Contains(r.stdout, "not measured (") {
		t.Errorf("verify: the unmeasured records are not reported\n%s", r.stdout)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("verify --json: %v\n%s", err, r.stdout)
	}
	if got := res["records"]; got != float64(s.records) {
		t.Errorf("verify: %v records, want %d\n%s", got, s.records, r.stdout)
	}
	if got := res["covered"]; got != float64(s.records) {
		t.Errorf("verify: the quote covers %v records, want all %d\n%s", got, s.records, r.stdout)
	}
}
