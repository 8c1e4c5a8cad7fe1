package monitor

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"unicode/utf8"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/measure/target"
	"github.com/rimon-dev/rimon/policy"
)

// budget is the policy's bound on the work of one file.
func (m *Monitor) budget() measure.Options {
	return measure.Options{MaxSize: m.pol.MaxFileSize, MaxTime: m.pol.MaxFileTime}
}

func measureTarget(ctx context.Context, k key, opts measure.Options) result {
	r := result{key: k}
	if k.kind == policy.File && !utf8.ValidString(k.path) {
		// It cannot be recorded under its name: do not read it, only see
		// whether it is there.
		if _, err := os.Lstat(k.path); err != nil {
			r.err, r.absent = err, errors.Is(err, fs.ErrNotExist)
		} else {
			r.err = errNameNotUTF8
		}
		return r
	}
	res, err := target.Measure(ctx, kindOf(k.kind), k.path, target.Options{Budget: opts})
	r.digest, r.size, r.extra = res.Digest, res.Size, res.Extra
	if err != nil {
		r.err = err
		r.absent, r.notDir = classify(k.path, err)
	}
	return r
}

// classify tells a path that is gone (absent) from one that holds
// something other than what was expected: a FIFO, socket or device where a
// file was (notDir). A directory where a file was counts as gone.
func classify(path string, err error) (absent, notDir bool) {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, measure.ErrNotDirectory):
		return true, false
	case errors.Is(err, measure.ErrNotRegular):
		if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
			return true, false
		}
		return false, true
	}
	return false, false
}

func kindOf(k policy.Kind) string {
	switch k {
	case policy.Tree:
		return eventlog.KindTree
	case policy.Image:
		return eventlog.KindImage
	}
	return eventlog.KindFile
}

// errNameNotUTF8 stands for the measurement of a path that cannot be named
// in a record.
var errNameNotUTF8 = errors.New("the path is not valid UTF-8")

// apply records a result when it differs from what is known: deleted,
// changed, or newReason for a path that was not present before. A path
// that could not be measured goes to [Monitor.failed].
func (m *Monitor) apply(ctx context.Context, r result, newReason string) {
	if r.seq < m.applied[r.key] {
		return // an older measurement than one already applied
	}
	m.applied[r.key] = r.seq
	if errors.Is(r.err, context.Canceled) {
		return // stopped while measuring (a shutdown, or a change: measured again)
	}
	prev, had := m.known[r.key.path]
	present := had && prev.Present
	reason := newReason
	if present {
		reason = eventlog.ReasonChanged
	}
	if r.notDir && !present && r.key.kind == policy.File {
		// A FIFO, socket or device that appeared where no file was known:
		// not a file the rule covers, unless the rule names it.
		if t, ok := m.pol.TargetFor(r.key.path); !ok || t.Rule.Kind != policy.File {
			r.absent = true
		}
	}
	if t, ok := m.pol.TargetFor(r.key.path); m.pol.Symlinks == policy.Skip && ok && m.skippedLink(t) {
		// A covered file replaced by a link the policy skips: for the
		// policy, the file is gone (its target is not measured).
		r.absent, r.err = true, nil
	}
	if !r.absent && r.key.kind == policy.File && !utf8.ValidString(r.key.path) {
		r.err = errNameNotUTF8
	}
	if r.err != nil && !r.absent {
		m.failed(ctx, r, reason)
		return
	}
	ev := eventlog.Event{Kind: kindOf(r.key.kind), Path: r.key.path, SHA256: r.digest, Size: r.size, Extra: r.extra}
	switch {
	case r.absent:
		if !present {
			m.settled(r.key)
			return
		}
		if !utf8.ValidString(r.key.path) {
			// A deletion cannot be recorded under a name that is not UTF-8:
			// the unmeasured record stays the last word on it.
			m.known[r.key.path] = Known{Kind: prev.Kind}
			m.settled(r.key)
			return
		}
		ev.Reason, ev.SHA256, ev.Size, ev.Extra = eventlog.ReasonDeleted, "", 0, nil
	case present && prev.SHA256 == r.digest && prev.Kind == ev.Kind:
		m.watchLinkTarget(r.key) // known from an earlier run of the agent
		m.settled(r.key)
		return
	default:
		ev.Reason = reason
	}
	if err := m.record(ctx, ev); err != nil {
		// Nothing was written: remember the change and try again.
		u := m.unrecorded(r.key)
		u.tries++
		u.cause, u.err, u.recorded = CauseError, shortError(err), false
		m.retryLater(r.key, u)
		return
	}
	m.known[r.key.path] = Known{Kind: ev.Kind, SHA256: ev.SHA256, Present: !r.absent}
	if !r.absent {
		m.watchLinkTarget(r.key)
	}
	m.settled(r.key)
}

// record appends ev. When nothing was written it returns the error, and
// the caller keeps the path in the unrecorded set.
func (m *Monitor) record(ctx context.Context, ev eventlog.Event) error {
	rec, err := m.cfg.Recorder.Append(context.WithoutCancel(ctx), m.pol.PCR, ev)
	if err != nil {
		m.errors++
		m.log.Error("record failed", "path", ev.Path, "reason", ev.Reason, "err", err)
		var ee *logfile.ExtendError
		if !errors.As(err, &ee) {
			return err
		}
	}
	m.records++
	m.log.Info("measured", "recnum", rec.RecNum, "path", ev.Path, "kind", ev.Kind, "sha256", ev.SHA256, "reason", ev.Reason)
	return nil
}
