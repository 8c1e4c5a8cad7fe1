package monitor

import (
	"context"
	"errors"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/measure"
)

// Causes of an unmeasured record (docs/FORMAT.md, "Unmeasured records").
const (
	CauseUnstable        = "unstable"
	CauseUnreadable      = "unreadable"
	CauseNameNotUTF8     = "name_not_utf8"
	CauseTooLarge        = "too_large"
	CauseTimeout         = "timeout"
	CauseUnsupportedType = "unsupported_type"
	CauseSymlinkRefused  = "symlink_refused"
	CauseError           = "error"
)

// Retry policy for paths that could not be measured or recorded.
const (
	// unstableTries is how many measurements of a path that keeps changing
	// fail before it is recorded as unstable; other causes that may pass
	// (an I/O error, a failed append) wait as long. Each measurement reads
	// the file up to measure.MaxAttempts times.
	unstableTries = 2
	firstRetry    = 250 * time.Millisecond
	maxRetry      = 5 * time.Minute
)

// Unrecorded is a path the agent knows changed but has not recorded yet:
// its measurement or its record failed and is being retried. It is what
// the evidence header's unrecorded field lists (docs/FORMAT.md).
type Unrecorded struct {
	// Path is the path, or its path_escaped form when it is not UTF-8.
	Path string
	// Cause is one of the Cause constants.
	Cause string
	// Since is when the agent first failed to record the change.
	Since time.Time
	// Tries counts the failed attempts.
	Tries int
}

// unrec is the agent's state of a path in the unrecorded set.
type unrec struct {
	cause, err string
	since      time.Time
	tries      int
	// recorded is set once an unmeasured record says why the path is
	// not measured: the log then tells the truth, retries go on.
	recorded bool
	timer    Timer
}

func (u *unrec) stopTimer() {
	if u.timer != nil {
		u.timer.Stop()
		u.timer = nil
	}
}

// unrecorded returns k's entry in the unrecorded set, adding it.
func (m *Monitor) unrecorded(k key) *unrec {
	u := m.unrec[k]
	if u == nil {
		u = &unrec{since: m.clock.Now()}
		m.unrec[k] = u
	}
	return u
}

// causeOf maps a measurement error to the cause of its record.
func causeOf(err error) string {
	switch {
	case errors.Is(err, errNameNotUTF8):
		return CauseNameNotUTF8
	case errors.Is(err, measure.ErrUnstable):
		return CauseUnstable
	case errors.Is(err, measure.ErrTooLarge):
		return CauseTooLarge
	case errors.Is(err, measure.ErrTimeout):
		return CauseTimeout
	case errors.Is(err, measure.ErrSymlinkRefused):
		return CauseSymlinkRefused
	case errors.Is(err, measure.ErrNotRegular):
		return CauseUnsupportedType
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EIO), errors.Is(err, syscall.EACCES):
		return CauseUnreadable
	}
	return CauseError
}

// failed handles a path that changed and could not be measured: it stays
// in the unrecorded set, is retried with backoff, and, once the cause is
// certain, an unmeasured record says so in the log and the PCR.
func (m *Monitor) failed(ctx context.Context, r result, reason string) {
	m.errors++
	cause := causeOf(r.err)
	u := m.unrecorded(r.key)
	u.tries++
	if u.cause != cause {
		u.recorded = false
	}
	u.cause, u.err = cause, shortError(r.err)
	m.log.Error("measurement failed", "path", r.key.path, "kind", string(r.key.kind), "cause", cause, "tries", u.tries, "err", r.err)
	prev := m.known[r.key.path]
	if prev.Kind == eventlog.KindUnmeasured && prev.Present && prev.Cause == cause {
		u.recorded = true // the log already says so
	}
	transient := cause == CauseUnstable || cause == CauseError
	if !u.recorded && (!transient || u.tries >= unstableTries) {
		ev := unmeasuredEvent(r.key.path, reason, cause, u.err)
		if err := m.record(ctx, ev); err == nil {
			u.recorded = true
			m.known[r.key.path] = Known{Kind: eventlog.KindUnmeasured, Present: true, Cause: cause}
		}
	}
	if cause == CauseNameNotUTF8 && u.recorded {
		// A name does not change: a rename is another path. Nothing to retry.
		m.settled(r.key)
		return
	}
	m.retryLater(r.key, u)
}

// unmeasuredEvent is the record of a path that could not be measured.
func unmeasuredEvent(path, reason, cause, errText string) eventlog.Event {
	ev := eventlog.Event{Kind: eventlog.KindUnmeasured, Reason: reason,
		Extra: []eventlog.Field{{Key: "cause", Str: cause}, {Key: "error", Str: errText}}}
	if utf8.ValidString(path) {
		ev.Path = path
	} else {
		ev.Extra = append(ev.Extra, eventlog.Field{Key: "path_escaped", Str: eventlog.EscapePath(path)})
	}
	return ev
}

// shortError is an error's text for a record: valid UTF-8 (a path in it
// is escaped) and at most 200 bytes.
func shortError(err error) string {
	s := err.Error()
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// settled takes k out of the unrecorded set: its current state is recorded.
func (m *Monitor) settled(k key) {
	if u := m.unrec[k]; u != nil {
		u.stopTimer()
		delete(m.unrec, k)
		m.log.Info("recorded after failures", "path", k.path, "tries", u.tries)
		m.publish()
	}
}

// retryLater measures k again after a backoff that doubles with each try,
// independent of the rescan interval.
func (m *Monitor) retryLater(k key, u *unrec) {
	u.stopTimer()
	d := firstRetry << min(u.tries-1, 20)
	limit := maxRetry
	if u.cause == CauseTimeout {
		limit = max(maxRetry, 10*m.pol.MaxFileTime)
	}
	d = min(d, limit)
	u.timer = m.clock.AfterFunc(d, func() {
		select {
		case m.retry <- k:
		case <-m.done:
		}
	})
	m.publish()
}

// retried measures k again unless a measurement is already on its way.
func (m *Monitor) retried(ctx context.Context, k key) {
	u := m.unrec[k]
	if u == nil {
		return
	}
	u.timer = nil
	if _, p := m.pending[k]; p {
		return
	}
	if _, f := m.inflight[k]; f {
		return
	}
	if t, ok := m.pol.TargetFor(k.path); !ok || t.Kind != k.kind {
		// The policy no longer covers it.
		delete(m.unrec, k)
		m.publish()
		return
	}
	m.start(ctx, k)
}

// publish makes the unrecorded set visible to [Monitor.Unrecorded].
func (m *Monitor) publish() {
	var out []Unrecorded
	for k, u := range m.unrec {
		if u.recorded {
			continue
		}
		p := k.path
		if !utf8.ValidString(p) {
			p = eventlog.EscapePath(p)
		}
		out = append(out, Unrecorded{Path: p, Cause: u.cause, Since: u.since, Tries: u.tries})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	m.mu.Lock()
	changed := len(out) != len(m.unrecPub)
	m.unrecPub = out
	m.mu.Unlock()
	if changed {
		m.notify("STATUS=" + m.status())
	}
}

// Unrecorded lists the paths the agent knows changed but has not recorded
// yet (their measurement or record failed and is retried), in path order.
// Paths whose failure an unmeasured record already states are not listed.
// It is safe to call from any goroutine (the evidence endpoint does).
func (m *Monitor) Unrecorded() []Unrecorded {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Unrecorded(nil), m.unrecPub...)
}

func (m *Monitor) unrecordedSummary() (int, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.unrecPub) == 0 {
		return 0, ""
	}
	u := m.unrecPub[0]
	return len(m.unrecPub), u.Cause + ": " + u.Path
}

// unescapePath inverts [eventlog.EscapePath].
func unescapePath(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
