package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
)

func extra(e eventlog.Event, key string) string {
	for _, f := range e.Extra {
		if f.Key == key {
			return f.Str
		}
	}
	return ""
}

// TestNeverQuiet replaces a watched file and appends a byte every 2 ms:
// the file never settles, so it is recorded as unstable; once the writes
// stop, its real digest is recorded.
func TestNeverQuiet(t *testing.T) {
	dir := t.TempDir()
	app := dir + "/bin/app"
	write(t, app, strings.Repeat("v1", 12<<20))
	h := start(t, dir, loadPolicy(t, dir, "measure:\n  - dir: $DIR/bin\n"))
	write(t, dir+"/bin/.app.new", strings.Repeat("v2", 12<<20))
	os.Rename(dir+"/bin/.app.new", app)
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
				f.Write([]byte("x"))
			}
		}
	}()
	h.waitFor(t, "an unstable record", func() bool {
		e, _ := h.rec.last(app)
		return e.Kind == eventlog.KindUnmeasured && extra(e, "cause") == CauseUnstable && e.Reason == eventlog.ReasonChanged
	})
	close(stop)
	<-stopped
	f.Close()
	data, _ := os.ReadFile(app)
	h.waitFor(t, "the settled digest", func() bool {
		e, _ := h.rec.last(app)
		return e.Kind == eventlog.KindFile && e.SHA256 == sum(data)
	})
}

// TestNameNotUTF8: a file whose name is not UTF-8 is recorded as not
// measured, under its escaped name.
func TestNameNotUTF8(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/bin/ok", "ok")
	h := start(t, dir, loadPolicy(t, dir, "measure:\n  - dir: $DIR/bin\n"))
	write(t, dir+"/bin/evil\xff%", "evil")
	want := eventlog.EscapePath(dir) + "/bin/evil%FF%25"
	h.waitFor(t, "a name_not_utf8 record", func() bool {
		for _, e := range h.rec.snapshot() {
			if e.Kind == eventlog.KindUnmeasured && e.Path == "" && extra(e, "path_escaped") == want &&
				extra(e, "cause") == CauseNameNotUTF8 && e.Reason == ReasonCreated {
				return true
			}
		}
		return false
	})
}

// TestUnmeasuredContent checks the unmeasured record's content and its
// canonical encoding against the example in docs/FORMAT.md.
func TestUnmeasuredContent(t *testing.T) {
	ev := unmeasuredEvent("/opt/app/evil\xff", "created", CauseNameNotUTF8, "the path is not valid UTF-8")
	c, err := ev.Content()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, f := range c {
		keys = append(keys, f.Key)
	}
	if got := strings.Join(keys, ","); got != "boot_id,cause,error,kind,path_escaped,reason,time" {
		t.Errorf("fields %s", got)
	}
	if got := c.Str("path_escaped"); got != "/opt/app/evil%FF" {
		t.Errorf("path_escaped = %q", got)
	}
	if got := unescapePath(c.Str("path_escaped")); got != "/opt/app/evil\xff" {
		t.Errorf("unescapePath = %q", got)
	}
	// docs/FORMAT.md, section 1.2: SHA-256 of the canonical encodings,
	// computed with Python from the page's rules alone.
	if got, want := sum(c.Canonical()), "db506dac93092cbb7ef54360be9630aa6ab0d7078149a63da4a5bb28037bd5bc"; got != want {
		t.Errorf("canonical digest = %s, want %s (docs/FORMAT.md)", got, want)
	}
	c2, err := unmeasuredEvent("/usr/bin/app", "changed", CauseUnstable,
		"measure /usr/bin/app: file kept changing while it was read (3 attempts)").Content()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sum(c2.Canonical()), "94f070f972af9009cb02d4155b67201b6926b84f77affbe269a03f9272dc6f70"; got != want {
		t.Errorf("canonical digest = %s, want %s (docs/FORMAT.md)", got, want)
	}
}

// flakyRecorder fails its first appends, as a full disk would.
type flakyRecorder struct {
	memRecorder
	fails int
}

func (r *flakyRecorder) Append(ctx context.Context, pcr int, ev eventlog.Event) (eventlog.Record, error) {
	r.mu.Lock()
	if r.fails > 0 {
		r.fails--
		r.mu.Unlock()
		return eventlog.Record{}, errors.New("append to log: no space left on device")
	}
	r.mu.Unlock()
	return r.memRecorder.Append(ctx, pcr, ev)
}

// TestFailedAppendIsRetried: a change whose record cannot be written is
// never forgotten: it is listed as unrecorded, retried without waiting for
// a rescan, with a backoff that doubles, and recorded once the log takes it.
func TestFailedAppendIsRetried(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/bin/app", "v1")
	rec := &flakyRecorder{}
	pol := loadPolicy(t, dir, "settings:\n  debounce: 20ms\nmeasure:\n  - dir: $DIR/bin\n")
	h := startWith(t, dir, Config{Policy: pol, Recorder: rec}, &rec.memRecorder)
	rec.mu.Lock()
	rec.fails = 3
	rec.mu.Unlock()
	write(t, dir+"/bin/app", "v2")
	var seen []Unrecorded
	h.waitFor(t, "the change listed as unrecorded", func() bool { seen = h.m.Unrecorded(); return len(seen) > 0 })
	if len(seen) != 1 || seen[0].Path != dir+"/bin/app" || seen[0].Cause != CauseError || seen[0].Tries < 1 {
		t.Errorf("Unrecorded() = %+v, want the app with cause error", seen)
	}
	if want := "1 changes not recorded, retrying (error: " + dir + "/bin/app)"; !strings.Contains(h.notes.String(), want) {
		t.Errorf("STATUS= does not say %q:\n%s", want, h.notes.String())
	}
	h.waitFor(t, "the change recorded after the log recovered", func() bool {
		e, _ := rec.last(dir + "/bin/app")
		return e.SHA256 == sum([]byte("v2"))
	})
	h.waitFor(t, "the unrecorded list emptied", func() bool { return len(h.m.Unrecorded()) == 0 })
	var retries []time.Duration
	for _, d := range h.clock.callDelays() {
		if d != pol.Debounce {
			retries = append(retries, d)
		}
	}
	if want := []time.Duration{firstRetry, 2 * firstRetry, 4 * firstRetry}; fmt.Sprint(retries) != fmt.Sprint(want) {
		t.Errorf("retried after %v, want %v", retries, want)
	}
}

// TestLargeFilesDoNotStarve: four 1 TiB sparse files within the size
// budget keep part of the workers busy, and a change to another file is
// still recorded; deleting them stops their reads.
func TestLargeFilesDoNotStarve(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/bin/small", "v1")
	h := start(t, dir, loadPolicy(t, dir, "settings:\n  max_file_size: 2TiB\nmeasure:\n  - dir: $DIR/bin\n"))
	var bigs []string
	for i := 0; i < 4; i++ {
		p := filepath.Join(dir, "bin", "sparse"+string(rune('a'+i)))
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(1 << 40)
		f.Close()
		bigs = append(bigs, p)
	}
	h.waitPolling(t, "the large files being read", 10*time.Millisecond, func() bool { return openCount(bigs) >= 1 })
	write(t, dir+"/bin/small", "v2")
	h.waitFor(t, "the small change", func() bool { e, _ := h.rec.last(dir + "/bin/small"); return e.SHA256 == sum([]byte("v2")) })
	for _, p := range bigs {
		os.Remove(p)
	}
	h.waitPolling(t, "the reads of deleted files to stop", 10*time.Millisecond, func() bool { return openCount(bigs) == 0 })
}

// openCount counts this process's descriptors open on any of paths
// (deleted files show with " (deleted)").
func openCount(paths []string) int {
	n := 0
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		l, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		l = strings.TrimSuffix(l, " (deleted)")
		for _, p := range paths {
			if l == p {
				n++
			}
		}
	}
	return n
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// notifyTo collects sd_notify states.
type notifyTo struct{ w io.Writer }

func (n notifyTo) Notify(state string) error { _, err := io.WriteString(n.w, state+"\n"); return err }

// TestSymlinkRefused: a link that a user without privileges plants in a
// watched directory, pointing to a root-only file, is recorded as refused;
// the file's digest and size appear nowhere.
func TestSymlinkRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chowning a link to another user needs root")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	write(t, dir+"/secret/pin", "1234")
	os.Chmod(dir+"/secret/pin", 0o600)
	write(t, dir+"/bin/app", "app")
	h := start(t, dir, loadPolicy(t, dir, "measure:\n  - dir: $DIR/bin\n"))
	// Made outside the watched directory, owned by nobody, then moved in.
	link, made := dir+"/bin/pin", dir+"/pin"
	if err := os.Symlink(dir+"/secret/pin", made); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(made, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(made, link); err != nil {
		t.Fatal(err)
	}
	h.waitFor(t, "a symlink_refused record", func() bool {
		e, _ := h.rec.last(link)
		return e.Kind == eventlog.KindUnmeasured && extra(e, "cause") == CauseSymlinkRefused
	})
	for _, e := range h.rec.snapshot() {
		if e.SHA256 == sum([]byte("1234")) || (e.Path == link && e.Size != 0) {
			t.Errorf("the secret's digest or size was recorded: %+v", e)
		}
	}
}

// TestFileReplacedByFIFO: a watched file replaced by a FIFO is recorded as
// not measured (unsupported_type), not as deleted, and the FIFO is never
// opened; a new FIFO in a watched directory is ignored, as before.
func TestFileReplacedByFIFO(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/bin/app", "app")
	h := start(t, dir, loadPolicy(t, dir, "measure:\n  - dir: $DIR/bin\n"))
	if err := syscall.Mkfifo(dir+"/fifo", 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+"/fifo", dir+"/bin/app"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(dir+"/bin/newfifo", 0o644); err != nil {
		t.Fatal(err)
	}
	h.waitFor(t, "an unsupported_type record", func() bool {
		e, _ := h.rec.last(dir + "/bin/app")
		return e.Kind == eventlog.KindUnmeasured && extra(e, "cause") == CauseUnsupportedType && e.Reason == eventlog.ReasonChanged
	})
	if e, n := h.rec.last(dir + "/bin/newfifo"); n != 0 {
		t.Errorf("a new FIFO was recorded: %+v", e)
	}
}

// TestRestartKeepsUnmeasuredRecords: an agent restarted on a log whose last
// record for a path says it could not be measured does not record it again
// for the same cause (the log already says so); another cause is recorded.
func TestRestartKeepsUnmeasuredRecords(t *testing.T) {
	dir := t.TempDir()
	write(t, dir+"/bin/big", strings.Repeat("x", 2048))
	pol := loadPolicy(t, dir, "settings:\n  max_file_size: 1KiB\nmeasure:\n  - dir: $DIR/bin\n")
	first := start(t, dir, pol)
	e, n := first.rec.last(dir + "/bin/big")
	if n != 1 || e.Kind != eventlog.KindUnmeasured {
		t.Fatalf("first run: %d records, last %+v; want one unmeasured record", n, e)
	}
	first.stop()

	// The log as the next run reads it.
	known := KnownSet{}
	for _, ev := range first.rec.snapshot() {
		c, err := ev.Content()
		if err != nil {
			t.Fatal(err)
		}
		known.Add(&eventlog.Record{ContentType: eventlog.ContentTypeRimon, Content: c})
	}
	second := startWith(t, dir, Config{Policy: pol, Known: known}, &memRecorder{})
	second.sync(t, dir+"/bin/sync")
	if _, n := second.rec.last(dir + "/bin/big"); n != 0 {
		t.Errorf("the restarted agent recorded the unmeasured file again (%d records)", n)
	}
}
