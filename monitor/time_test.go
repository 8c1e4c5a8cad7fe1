package monitor

import (
	"context"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rimon-dev/rimon/policy"
)

// These tests drive the agent's timing rules (debounce, retry backoff,
// reload) on Run's behalf, in a testing/synctest bubble: its clock moves
// only when every goroutine of the bubble waits, so they measure time
// exactly and never wait for it. (Run itself cannot run in a bubble: its
// inotify reads block on a file descriptor; the harness gives it a fake
// clock instead.)

// newBubbled returns a Monitor of a policy measuring dir/a, made inside
// the bubble so that its timers and channels are the bubble's.
func newBubbled(t *testing.T, dir, settings string) *Monitor {
	t.Helper()
	write(t, dir+"/a", "v1")
	m, err := New(Config{Policy: loadPolicy(t, dir, "settings:\n"+settings+"measure:\n  - file: $DIR/a\n"),
		Recorder: &memRecorder{}, Logger: slogTo(io.Discard)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDebounce: a path is measured once it has been quiet for the debounce
// time, or ten times that after its first change when it never goes quiet.
func TestDebounce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes int // one every 7 ms (-1: for ever)
		want   time.Duration
	}{
		{"one_write", 1, 50 * time.Millisecond},
		// The last write at 28 ms, quiet from then.
		{"five_writes", 5, 78 * time.Millisecond},
		// Fires at 50, 99, 148 ... ms (49 ms after the last write, 1 ms
		// short of quiet): the first at or after 500 ms measures.
		{"never_quiet", -1, 540 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			synctest.Test(t, func(t *testing.T) {
				m := newBubbled(t, dir, "  debounce: 50ms\n")
				ctx := context.Background()
				k := key{policy.File, dir + "/a"}
				t0 := time.Now()
				m.schedule(k)
				writes := tc.writes - 1
				tick := time.NewTicker(7 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-tick.C:
						if writes != 0 {
							writes--
							m.schedule(k)
						}
						continue
					case got := <-m.fire:
						m.fired(ctx, got)
					}
					if _, busy := m.inflight[k]; busy {
						break
					}
					if _, p := m.pending[k]; !p {
						t.Fatal("the change was dropped")
					}
				}
				if got := time.Since(t0); got != tc.want {
					t.Errorf("measured %v after the first change, want %v", got, tc.want)
				}
				if r := <-m.results; r.err != nil || r.digest != sum([]byte("v1")) {
					t.Errorf("result %+v", r)
				}
				m.wg.Wait()
			})
		})
	}
}

// TestRetryBackoff: a path that could not be measured or recorded is
// retried after 250 ms, then twice as long each time, up to 5 minutes, or
// ten times the time budget for a timeout.
func TestRetryBackoff(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		m := newBubbled(t, dir, "  max_file_time: 1m\n")
		k := key{policy.File, dir + "/a"}
		u := m.unrecorded(k)
		u.cause = CauseError
		want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}
		for d := 4 * time.Second; d < 5*time.Minute; d *= 2 {
			want = append(want, d)
		}
		want = append(want, 5*time.Minute, 5*time.Minute)
		for i, w := range want {
			u.tries = i + 1
			t0 := time.Now()
			m.retryLater(k, u)
			if got := <-m.retry; got != k {
				t.Fatalf("retried %v", got)
			}
			if got := time.Since(t0); got != w {
				t.Errorf("try %d: retried after %v, want %v", i+1, got, w)
			}
		}
		u.cause, u.tries = CauseTimeout, 40
		t0 := time.Now()
		m.retryLater(k, u)
		<-m.retry
		if got := time.Since(t0); got != 10*time.Minute {
			t.Errorf("a timeout retried after %v, want ten times max_file_time", got)
		}
		// A path recorded meanwhile is not retried.
		m.retryLater(k, u)
		m.settled(k)
		select {
		case got := <-m.retry:
			t.Errorf("retried %v after it was recorded", got)
		case <-time.After(time.Hour):
		}
	})
}

// TestReloadDropsPendingChanges: a reload stops the debounce of changes
// seen under the old policy (its rescan measures them again).
func TestReloadDropsPendingChanges(t *testing.T) {
	dir := t.TempDir()
	// The watcher is made outside the bubble: its reads would block the
	// bubble's clock.
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	synctest.Test(t, func(t *testing.T) {
		m := newBubbled(t, dir, "  debounce: 50ms\n")
		m.watcher = w
		next := loadPolicy(t, dir, "settings:\n  debounce: 50ms\nmeasure:\n  - file: $DIR/b\n")
		m.cfg.Reload = func() (*policy.Policy, error) { return next, nil }
		m.schedule(key{policy.File, dir + "/a"})
		m.reload(context.Background())
		if m.pol != next || len(m.pending) != 0 || !m.rescanning {
			t.Fatalf("after the reload: policy taken %v, %d pending, rescanning %v", m.pol == next, len(m.pending), m.rescanning)
		}
		select {
		case k := <-m.fire:
			t.Errorf("a change of the old policy fired after the reload: %v", k)
		case rs := <-m.rescanDone:
			if len(rs) != 1 || rs[0].key.path != dir+"/b" {
				t.Errorf("the rescan measured %+v, want only %s/b", rs, dir)
			}
		}
		select {
		case k := <-m.fire:
			t.Errorf("a change of the old policy fired after the reload: %v", k)
		case <-time.After(time.Second):
		}
		m.wg.Wait()
	})
}

// TestReloadKeepsCoveredPendingChanges: a change waiting for its debounce
// when the policy is reloaded is still measured when the new policy covers
// its path; a reload during a rescan gets a rescan of its own after it
// (the running one may have read a path before the change).
func TestReloadKeepsCoveredPendingChanges(t *testing.T) {
	dir := t.TempDir()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	synctest.Test(t, func(t *testing.T) {
		m := newBubbled(t, dir, "  debounce: 50ms\n")
		m.watcher = w
		next := loadPolicy(t, dir, "settings:\n  debounce: 50ms\nmeasure:\n  - file: $DIR/a\n  - file: $DIR/b\n")
		m.cfg.Reload = func() (*policy.Policy, error) { return next, nil }
		m.schedule(key{policy.File, dir + "/a"})
		m.rescanning = true // a rescan is running
		m.reload(context.Background())
		if len(m.pending) != 1 || m.rescanNext != "reload" {
			t.Fatalf("after the reload: %d pending, next rescan %q; want a's change kept and a rescan to follow", len(m.pending), m.rescanNext)
		}
		select {
		case k := <-m.fire:
			if k.path != dir+"/a" {
				t.Errorf("fired %v, want %s/a", k, dir)
			}
		case <-time.After(time.Second):
			t.Error("the pending change of a was lost in the reload")
		}
		m.wg.Wait()
	})
}
