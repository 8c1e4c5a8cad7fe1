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
	// changed, when set, is called after each record.
	changed func()
}

func (r *memRecorder) Append(ctx context.Context, pcr int, ev eventlog.Event) (eventlog.Record, error) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	n, changed := len(r.events), r.changed
	r.mu.Unlock()
	if changed != nil {
		changed()
	}
	return eventlog.Record{RecNum: uint64(n - 1)}, nil
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

// syncBuffer collects the monitor's log or its sd_notify states.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
	// changed, when set, is called after each write.
	changed func()
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	n, err := s.b.Write(p)
	changed := s.changed
	s.mu.Unlock()
	if changed != nil {
		changed()
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness runs a Monitor with its real inotify watcher on a fake clock.
// Time moves only when the test moves it: waitFor makes each pending call
// (debounce, retry) when nothing else can make progress, and tick makes a
// ticker (rescan) tick. No test waits on the wall clock but for the
// deadline that fails it.
type harness struct {
	logs     syncBuffer
	notes    syncBuffer // sd_notify states
	t        *testing.T
	dir      string
	rec      *memRecorder
	m        *Monitor
	clock    *fakeClock
	activity chan struct{} // a record, a log line, a timer, an event handled
	cancel   context.CancelFunc
	done     chan error
}

// deadline bounds every wait of these tests (wall clock).
const deadline = 20 * time.Second

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
	return startWith(t, dir, Config{Policy: pol}, &memRecorder{})
}

// startWith runs a Monitor of cfg, whose Recorder is rec unless set, its
// Logger, Notify, Ready and Clock the harness's.
func startWith(t *testing.T, dir string, cfg Config, rec *memRecorder) *harness {
	t.Helper()
	h := &harness{t: t, dir: dir, rec: rec, done: make(chan error, 1), clock: newFakeClock(), activity: make(chan struct{}, 1)}
	rec.changed, h.logs.changed, h.notes.changed, h.clock.changed = h.poke, h.poke, h.poke, h.poke
	if cfg.Recorder == nil {
		cfg.Recorder = rec
	}
	ready := make(chan struct{})
	cfg.Logger, cfg.Notify, cfg.Ready, cfg.Clock = slogTo(&h.logs), notifyTo{&h.notes}, ready, h.clock
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	m.onLoop = h.poke
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- m.Run(ctx) }()
	select {
	case <-ready:
	case err := <-h.done:
		t.Fatalf("monitor stopped before ready: %v", err)
	case <-time.After(deadline):
		t.Fatalf("monitor not ready after %v", deadline)
	}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) poke() {
	select {
	case h.activity <- struct{}{}:
	default:
	}
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

// waitFor waits until cond holds. Whenever it does not, and a call of the
// clock is pending (a debounce, a retry), the clock moves to it; else the
// wait lasts until something happens: a record, a log line, a timer set,
// an event handled.
func (h *harness) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	h.waitPolling(t, what, 0, cond)
}

// waitPolling is waitFor for a cond whose change nothing announces (the
// kernel's table of open files): it looks again every poll as well.
func (h *harness) waitPolling(t *testing.T, what string, poll time.Duration, cond func() bool) {
	t.Helper()
	end := time.NewTimer(deadline)
	defer end.Stop()
	var again <-chan time.Time
	if poll > 0 {
		tk := time.NewTicker(poll)
		defer tk.Stop()
		again = tk.C
	}
	for !cond() {
		if h.clock.fireNext() {
			continue
		}
		select {
		case <-h.activity:
		case <-again:
		case <-end.C:
			t.Fatalf("timed out waiting for %s; records: %+v", what, h.rec.snapshot())
		}
	}
}

// idle reports whether the monitor has nothing to measure: no change
// waiting for its debounce or being measured, no rescan running.
func (h *harness) idle() bool {
	res := make(chan bool, 1)
	select {
	case h.m.probe <- func() {
		m := h.m
		res <- len(m.pending) == 0 && len(m.inflight) == 0 && !m.rescanning && len(m.fire) == 0 && len(m.results) == 0
	}:
		return <-res
	case <-h.m.done:
		return true
	}
}

// sync writes a file the policy covers and waits until it is recorded and
// the monitor is idle: inotify delivers events in order, so every change
// made before is handled by then.
func (h *harness) sync(t *testing.T, path string) {
	t.Helper()
	content := fmt.Sprintf("sync %d", time.Now().UnixNano())
	write(t, path, content)
	h.waitFor(t, "the sync file "+path, func() bool { e, _ := h.rec.last(path); return e.SHA256 == sum([]byte(content)) })
	h.waitFor(t, "the monitor to be idle", h.idle)
}

// tick waits until a ticker of period d runs, then moves the clock by d.
func (h *harness) tick(t *testing.T, d time.Duration) {
	t.Helper()
	h.waitFor(t, fmt.Sprintf("a ticker of %v", d), func() bool { return h.clock.hasTicker(d) })
	h.clock.Advance(d)
}

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
		// The clock stands still while the chunks are written: they all
		// come within the debounce time (TestDebounce times the rule).
		for i := 0; i < 10; i++ {
			fmt.Fprintf(f, "chunk %d\n", i)
		}
		f.Close()
		data, _ := os.ReadFile(dir + "/bin/app")
		h.waitFor(t, "final content", func() bool { e, _ := h.rec.last(dir + "/bin/app"); return e.SHA256 == sum(data) })
		h.sync(t, dir+"/conf.d/sync-chunks.conf")
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
		h.sync(t, dir+"/conf.d/sync-chmod.conf")
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
		h.sync(t, dir+"/conf.d/sync-ignored.conf")
		if got := h.rec.snapshot()[n:]; len(got) != 1 || got[0].Path != dir+"/conf.d/sync-ignored.conf" {
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
	h.tick(t, time.Second)
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

// TestSymlinkTargetChange: a covered symbolic link leads to a file in a
// directory no rule covers (as /etc/ssl/certs/*.pem lead into
// /usr/share/ca-certificates); a change of that file is measured under the
// link's path when it happens, not at the next rescan.
func TestSymlinkTargetChange(t *testing.T) {
	for _, rule := range []string{"file: $DIR/bin/link", "dir: $DIR/bin", "glob: $DIR/bin/*"} {
		t.Run(strings.Fields(rule)[0], func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir+"/outside/target", "v1")
			write(t, dir+"/bin/plain", "plain")
			if err := os.Symlink(dir+"/outside/target", dir+"/bin/link"); err != nil {
				t.Fatal(err)
			}
			h := start(t, dir, loadPolicy(t, dir, "measure:\n  - "+rule+"\n"))
			if e, n := h.rec.last(dir + "/bin/link"); n != 1 || e.SHA256 != sum([]byte("v1")) {
				t.Fatalf("the link was recorded %d times, digest %s; want the target's content", n, e.SHA256)
			}
			write(t, dir+"/outside/target", "v2")
			h.waitFor(t, "the target's change recorded under the link", func() bool {
				e, _ := h.rec.last(dir + "/bin/link")
				return e.SHA256 == sum([]byte("v2"))
			})
			if _, n := h.rec.last(dir + "/outside/target"); n != 0 {
				t.Errorf("the target was recorded under its own path, which no rule covers")
			}
		})
	}
}

// TestRenamedAncestor: a directory above the rules' roots is swapped for a
// copy (cp -a app app.new; mv app app.old; mv app.new app), which inotify
// reports only to the watch on its parent. The agent must look again at
// everything below and watch the new directories: a change made after the
// swap is recorded when it happens, not at the next rescan.
func TestRenamedAncestor(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/app/bin/tool", "v1")
	write(t, dir+"/app/etc/app.conf", "c1")
	h := start(t, dir, loadPolicy(t, dir, "measure:\n  - file: $DIR/app/bin/tool\n  - dir: $DIR/app/etc\n"))
	write(t, dir+"/copy/bin/tool", "v1")
	write(t, dir+"/copy/etc/app.conf", "c1")
	if err := os.Rename(dir+"/app", dir+"/app.old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+"/copy", dir+"/app"); err != nil {
		t.Fatal(err)
	}
	h.sync(t, dir+"/app/etc/sync")
	write(t, dir+"/app/bin/tool", "EVIL")
	write(t, dir+"/app/etc/app.conf", "EVIL")
	h.waitFor(t, "the changes after the swap recorded", func() bool {
		a, _ := h.rec.last(dir + "/app/bin/tool")
		b, _ := h.rec.last(dir + "/app/etc/app.conf")
		return a.SHA256 == sum([]byte("EVIL")) && b.SHA256 == sum([]byte("EVIL"))
	})
	// And the old directory, now elsewhere, is no longer watched.
	write(t, dir+"/app.old/bin/tool", "old")
	h.sync(t, dir+"/app/etc/sync")
	if e, _ := h.rec.last(dir + "/app/bin/tool"); e.SHA256 != sum([]byte("EVIL")) {
		t.Errorf("a change in the renamed-away directory was recorded as the tool's: %+v", e)
	}
}

// TestSkippedLinkReplacesFile: with "symlinks: skip", a covered file
// replaced by a symbolic link is recorded as deleted when it happens: the
// policy does not follow the link, so the file it covered is gone (it was
// ignored until a rescan, which then followed the link).
func TestSkippedLinkReplacesFile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/d/app.conf", "good")
	write(t, dir+"/evil.conf", "EVIL")
	h := start(t, dir, loadPolicy(t, dir, "settings:\n  symlinks: skip\nmeasure:\n  - dir: $DIR/d\n"))
	if err := os.Symlink(dir+"/evil.conf", dir+"/d/tmp.lnk"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+"/d/tmp.lnk", dir+"/d/app.conf"); err != nil {
		t.Fatal(err)
	}
	h.waitFor(t, "app.conf recorded as deleted", func() bool {
		e, _ := h.rec.last(dir + "/d/app.conf")
		return e.Reason == "deleted"
	})
	h.tick(t, 5*time.Minute) // a rescan does not follow the link either
	h.sync(t, dir+"/d/sync")
	if e, _ := h.rec.last(dir + "/d/app.conf"); e.Reason != "deleted" || e.SHA256 != "" {
		t.Errorf("after a rescan: %+v; want app.conf still deleted", e)
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
	h.tick(t, time.Second)
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

// TestRescanIntervalFollowsDegradedMode: when watches go missing after
// start (the watch limit, or a directory that cannot be watched), periodic
// rescans come every 30 s at most, not at the policy's interval set at
// start.
func TestRescanIntervalFollowsDegradedMode(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/bin/a", "a")
	h := start(t, dir, loadPolicy(t, dir, "settings:\n  rescan: 10m\nmeasure:\n  - dir: $DIR/bin\n"))
	h.waitFor(t, "the 10 min rescan ticker", func() bool { return h.clock.hasTicker(10 * time.Minute) })
	done := make(chan struct{})
	h.m.probe <- func() { h.m.degraded = true; close(done) }
	<-done
	h.sync(t, dir+"/bin/sync") // a loop iteration after the change
	h.waitFor(t, "a 30 s rescan ticker", func() bool {
		return h.clock.hasTicker(30*time.Second) && !h.clock.hasTicker(10*time.Minute)
	})
}
