package monitor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

// memRecorder is a pure-Go recorder: the monitor's logic does not speak to
// a TPM, so these tests keep the records in memory.
type memRecorder struct {
	mu        sync.Mutex
	events    []eventlog.Event
	verifyErr error
}

func (r *memRecorder) Append(ctx context.Context, pcr int, ev eventlog.Event) (eventlog.Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	return eventlog.Record{RecNum: uint64(len(r.events) - 1)}, nil
}

func (r *memRecorder) Verify(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.verifyErr
}

func (r *memRecorder) snapshot() []eventlog.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]eventlog.Event(nil), r.events...)
}

// last returns the last event for path.
func (r *memRecorder) last(path string) (eventlog.Event, int) {
	var out eventlog.Event
	n := 0
	for _, e := range r.snapshot() {
		if e.Path == path {
			out = e
			n++
		}
	}
	return out, n
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// syncBuffer collects the monitor's log.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type harness struct {
	logs   syncBuffer
	t      *testing.T
	dir    string
	rec    *memRecorder
	cancel context.CancelFunc
	done   chan error
}

func loadPolicy(t *testing.T, dir, yaml string) *policy.Policy {
	t.Helper()
	yaml = strings.ReplaceAll(yaml, "$DIR", dir)
	p, err := policy.Parse("test.yaml", strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t *testing.T, dir string, pol *policy.Policy) *harness {
	t.Helper()
	h := &harness{t: t, dir: dir, rec: &memRecorder{}, done: make(chan error, 1)}
	ready := make(chan struct{})
	m, err := New(Config{Policy: pol, Recorder: h.rec, Logger: slog.New(slog.NewTextHandler(&h.logs, nil)), Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- m.Run(ctx) }()
	select {
	case <-ready:
	case err := <-h.done:
		t.Fatalf("monitor stopped before ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("monitor not ready after 20s")
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
}

// waitFor polls until cond holds; events arrive asynchronously.
func (h *harness) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; records: %+v", what, h.rec.snapshot())
}

// settle waits long enough for any pending measurement to be recorded.
func (h *harness) settle() { time.Sleep(400 * time.Millisecond) }

func write(t *testing.T, p, content string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const watchPolicy = `settings:
  debounce: 50ms
measure:
  - file: $DIR/etc/app.conf
  - dir: $DIR/bin
    exclude: ["*.tmp", "$DIR/bin/cache/**"]
  - glob: $DIR/conf.d/*.conf
  - tree: $DIR/static
exclude:
  - "*.swp"
`

func TestInitialScanIsOrderedAndComplete(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/etc/app.conf", "conf")
	write(t, dir+"/bin/b", "b")
	write(t, dir+"/bin/a", "a")
	write(t, dir+"/bin/sub/c", "c")
	write(t, dir+"/bin/x.tmp", "ignored")
	write(t, dir+"/bin/cache/blob", "ignored")
	write(t, dir+"/conf.d/one.conf", "1")
	write(t, dir+"/conf.d/readme.txt", "ignored")
	write(t, dir+"/static/index.html", "<html>")
	h := start(t, dir, loadPolicy(t, dir, watchPolicy))
	var got []string
	for _, e := range h.rec.snapshot() {
		got = append(got, e.Kind+" "+strings.TrimPrefix(e.Path, dir)+" "+e.Reason)
	}
	want := []string{"file /bin/a initial", "file /bin/b initial", "file /bin/sub/c initial", "file /conf.d/one.conf initial",
		"file /etc/app.conf initial", "tree /static initial"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("initial records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWatchScenarios(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/etc/app.conf", "v1")
	write(t, dir+"/bin/app", "app v1")
	write(t, dir+"/static/index.html", "<html>")
	h := start(t, dir, loadPolicy(t, dir, watchPolicy))
	count := func(p string) int { _, n := h.rec.last(p); return n }

	t.Run("write", func(t *testing.T) {
		write(t, dir+"/etc/app.conf", "v2")
		h.waitFor(t, "v2 recorded", func() bool { e, _ := h.rec.last(dir + "/etc/app.conf"); return e.SHA256 == sum([]byte("v2")) })
		if e, _ := h.rec.last(dir + "/etc/app.conf"); e.Reason != eventlog.ReasonChanged {
			t.Errorf("reason %q, want changed", e.Reason)
		}
	})
	t.Run("append_in_chunks", func(t *testing.T) {
		before := count(dir + "/bin/app")
		f, err := os.OpenFile(dir+"/bin/app", os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			fmt.Fprintf(f, "chunk %d\n", i)
			time.Sleep(10 * time.Millisecond) // quicker than the debounce
		}
		f.Close()
		data, _ := os.ReadFile(dir + "/bin/app")
		h.waitFor(t, "final content", func() bool { e, _ := h.rec.last(dir + "/bin/app"); return e.SHA256 == sum(data) })
		h.settle()
		if n := count(dir+"/bin/app") - before; n != 1 {
			t.Errorf("%d records for one write in ten chunks, want 1", n)
		}
	})
	t.Run("atomic_rename_over", func(t *testing.T) {
		write(t, dir+"/etc/.app.conf.new", "v3")
		if err := os.Rename(dir+"/etc/.app.conf.new", dir+"/etc/app.conf"); err != nil {
			t.Fatal(err)
		}
		h.waitFor(t, "v3 recorded", func() bool { e, _ := h.rec.last(dir + "/etc/app.conf"); return e.SHA256 == sum([]byte("v3")) })
	})
	t.Run("chmod_only", func(t *testing.T) {
		before := count(dir + "/etc/app.conf")
		os.Chmod(dir+"/etc/app.conf", 0o600)
		h.settle()
		if count(dir+"/etc/app.conf") != before {
			t.Error("a chmod made a new record")
		}
	})
	t.Run("delete_and_recreate", func(t *testing.T) {
		os.Remove(dir + "/etc/app.conf")
		h.waitFor(t, "deletion", func() bool { e, _ := h.rec.last(dir + "/etc/app.conf"); return e.Reason == eventlog.ReasonDeleted })
		write(t, dir+"/etc/app.conf", "v4")
		h.waitFor(t, "recreation", func() bool { e, _ := h.rec.last(dir + "/etc/app.conf"); return e.SHA256 == sum([]byte("v4")) })
		if e, _ := h.rec.last(dir + "/etc/app.conf"); e.Reason != ReasonCreated {
			t.Errorf("reason %q, want created", e.Reason)
		}
	})
	t.Run("new_file_and_directory", func(t *testing.T) {
		write(t, dir+"/bin/new/deeper/tool", "tool")
		h.waitFor(t, "file in a new directory", func() bool { return count(dir+"/bin/new/deeper/tool") == 1 })
		write(t, dir+"/conf.d/late.conf", "late")
		h.waitFor(t, "new glob match", func() bool { return count(dir+"/conf.d/late.conf") == 1 })
	})
	t.Run("ignored", func(t *testing.T) {
		n := len(h.rec.snapshot())
		write(t, dir+"/conf.d/notes.txt", "no rule")
		write(t, dir+"/bin/x.tmp", "excluded by rule")
		write(t, dir+"/bin/.app.swp", "excluded globally")
		write(t, dir+"/bin/cache/blob", "excluded directory")
		write(t, dir+"/elsewhere", "not covered")
		h.settle()
		if got := h.rec.snapshot()[n:]; len(got) != 0 {
			t.Errorf("ignored paths made records: %+v", got)
		}
	})
	t.Run("tree", func(t *testing.T) {
		before := count(dir + "/static")
		write(t, dir+"/static/css/site.css", "body{}")
		h.waitFor(t, "tree change", func() bool { return count(dir+"/static") == before+1 })
		os.Chmod(dir+"/static/index.html", 0o600) // modes are part of a tree digest
		h.waitFor(t, "tree chmod", func() bool { return count(dir+"/static") == before+2 })
	})
	t.Run("rename_away", func(t *testing.T) {
		os.Rename(dir+"/bin/app", dir+"/bin/app.old")
		h.waitFor(t, "old name deleted", func() bool { e, _ := h.rec.last(dir + "/bin/app"); return e.Reason == eventlog.ReasonDeleted })
		h.waitFor(t, "new name created", func() bool { e, _ := h.rec.last(dir + "/bin/app.old"); return e.Reason == ReasonCreated })
	})
}

// TestOverflowRescan overflows the inotify queue and checks that the
// rescan finds every final content.
func TestOverflowRescan(t *testing.T) {
	const knob = "/proc/sys/fs/inotify/max_queued_events"
	old, err := os.ReadFile(knob)
	if err != nil || os.WriteFile(knob, []byte("64"), 0) != nil {
		t.Fatalf("this test lowers %s and needs root: %v", knob, err)
	}
	defer os.WriteFile(knob, old, 0)
	dir := t.TempDir()
	const n = 300
	for i := 0; i < n; i++ {
		write(t, fmt.Sprintf("%s/bin/f%03d", dir, i), "v0")
	}
	h := start(t, dir, loadPolicy(t, dir, "settings:\n  debounce: 20ms\nmeasure:\n  - dir: $DIR/bin\n"))
	os.WriteFile(knob, old, 0) // the monitor's inotify instance keeps the small queue
	for round := 1; round <= 5; round++ {
		for i := 0; i < n; i++ {
			os.WriteFile(fmt.Sprintf("%s/bin/f%03d", dir, i), []byte(fmt.Sprintf("v%d-%d", round, i)), 0o644)
		}
	}
	h.waitFor(t, "every final content", func() bool {
		for i := 0; i < n; i++ {
			e, _ := h.rec.last(fmt.Sprintf("%s/bin/f%03d", dir, i))
			if e.SHA256 != sum([]byte(fmt.Sprintf("v5-%d", i))) {
				return false
			}
		}
		return true
	})
}

func TestReloadKeepsOldPolicyOnError(t *testing.T) {
	dir := t.TempDir()
	pol := loadPolicy(t, dir, "measure:\n  - file: $DIR/a\n")
	var next func() (*policy.Policy, error)
	m, err := New(Config{Policy: pol, Recorder: &memRecorder{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Reload: func() (*policy.Policy, error) { return next() }})
	if err != nil {
		t.Fatal(err)
	}
	w, err := newTestWatcher(m)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	next = func() (*policy.Policy, error) { return nil, errors.New("p.yaml:3: bad") }
	m.reload(context.Background())
	if m.pol != pol || m.errors != 1 {
		t.Error("a bad policy replaced the old one")
	}
	next = func() (*policy.Policy, error) {
		return loadPolicy(t, dir, "settings:\n  pcr: 16\nmeasure:\n  - file: $DIR/a\n"), nil
	}
	m.reload(context.Background())
	if m.pol != pol {
		t.Error("a policy with another PCR replaced the old one")
	}
	good := loadPolicy(t, dir, "measure:\n  - file: $DIR/b\n")
	next = func() (*policy.Policy, error) { return good, nil }
	m.reload(context.Background())
	if m.pol != good {
		t.Error("a good policy was not taken")
	}
}

// TestWatchLimitFallsBackToRescans runs out of inotify watches and checks
// that periodic rescans still record changes.
func TestWatchLimitFallsBackToRescans(t *testing.T) {
	const knob = "/proc/sys/fs/inotify/max_user_watches"
	old, err := os.ReadFile(knob)
	if err != nil || os.WriteFile(knob, []byte("1"), 0) != nil {
		t.Fatalf("this test lowers %s and needs root: %v", knob, err)
	}
	defer os.WriteFile(knob, old, 0)
	dir := t.TempDir()
	write(t, dir+"/bin/sub/tool", "v1")
	h := start(t, dir, loadPolicy(t, dir, "settings:\n  rescan: 1s\nmeasure:\n  - dir: $DIR/bin\n"))
	if !strings.Contains(h.logs.String(), "inotify watch limit reached") || !strings.Contains(h.logs.String(), "sysctl -w fs.inotify.max_user_watches") {
		t.Errorf("the log does not explain the watch limit:\n%s", h.logs.String())
	}
	write(t, dir+"/bin/sub/tool", "v2")
	h.waitFor(t, "a rescan to find the change", func() bool {
		e, _ := h.rec.last(dir + "/bin/sub/tool")
		return e.SHA256 == sum([]byte("v2"))
	})
}

func TestSymlinkModes(t *testing.T) {
	for _, mode := range []string{"follow", "skip"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir+"/target/real", "real content")
			write(t, dir+"/bin/plain", "plain")
			if err := os.Symlink(dir+"/target/real", dir+"/bin/link"); err != nil {
				t.Fatal(err)
			}
			h := start(t, dir, loadPolicy(t, dir, "settings:\n  symlinks: "+mode+"\nmeasure:\n  - dir: $DIR/bin\n"))
			e, n := h.rec.last(dir + "/bin/link")
			switch mode {
			case "follow":
				if n != 1 || e.SHA256 != sum([]byte("real content")) {
					t.Errorf("follow: link recorded %d times, digest %s; want the target's content", n, e.SHA256)
				}
			case "skip":
				if n != 0 {
					t.Errorf("skip: the link was recorded: %+v", e)
				}
			}
			if _, n := h.rec.last(dir + "/bin/plain"); n != 1 {
				t.Errorf("the plain file was recorded %d times", n)
			}
		})
	}
}

// TestProgress: a scan reports its progress on the terminal writer.
func TestProgress(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		write(t, fmt.Sprintf("%s/bin/f%d", dir, i), "x")
	}
	var progress syncBuffer
	ready := make(chan struct{})
	m, err := New(Config{Policy: loadPolicy(t, dir, "measure:\n  - dir: $DIR/bin\n"), Recorder: &memRecorder{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Progress: &progress, Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	<-ready
	cancel()
	<-done
	if !strings.Contains(progress.String(), "initial scan: measured 3 of 3") {
		t.Errorf("progress output %q", progress.String())
	}
}

// TestPeriodicCheckReportsDivergence: the periodic rescan asks the
// recorder to compare log and TPM, and says loudly when they disagree.
func TestPeriodicCheckReportsDivergence(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/bin/a", "a")
	h := start(t, dir, loadPolicy(t, dir, "settings:\n  rescan: 1s\nmeasure:\n  - dir: $DIR/bin\n"))
	h.rec.mu.Lock()
	h.rec.verifyErr = errors.New("PCR 23 sha256: TPM has 11..., replay gives 22...")
	h.rec.mu.Unlock()
	h.waitFor(t, "the divergence in the log", func() bool {
		return strings.Contains(h.logs.String(), "log and TPM disagree") && strings.Contains(h.logs.String(), "TPM has 11")
	})
}

// TestWorkers checks the rule Config.Workers documents for measurements of
// changes: 0 means DefaultChangeWorkers, at least 2, half for large work.
func TestWorkers(t *testing.T) {
	pol := loadPolicy(t, t.TempDir(), "measure:\n  - file: $DIR/a\n")
	for _, tc := range []struct{ n, workers, big int }{
		{0, DefaultChangeWorkers, DefaultChangeWorkers / 2}, {-1, 4, 2}, {1, 2, 1}, {2, 2, 1}, {3, 3, 1}, {8, 8, 4},
	} {
		m, err := New(Config{Policy: pol, Recorder: &memRecorder{}, Logger: slogTo(io.Discard), Workers: tc.n})
		if err != nil {
			t.Fatal(err)
		}
		if cap(m.sem) != tc.workers || cap(m.bigSem) != tc.big {
			t.Errorf("Workers %d: %d measurements of changes at once, %d large; want %d and %d",
				tc.n, cap(m.sem), cap(m.bigSem), tc.workers, tc.big)
		}
	}
}
