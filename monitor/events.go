package monitor

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	"github.com/rimon-dev/rimon/policy"
)

func (m *Monitor) handleEvent(ev fsnotify.Event) {
	name := filepath.Clean(ev.Name)
	for _, k := range m.linked[name] {
		// The target of a covered symbolic link changed.
		if cancel := m.cancel[k]; cancel != nil && ev.Has(fsnotify.Remove|fsnotify.Rename|fsnotify.Create) {
			cancel()
		}
		m.schedule(k)
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(name); err == nil && fi.IsDir() {
			m.newDirectory(name)
			return
		}
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if _, w := m.watched[name]; w || m.ancestors[name] {
			// A watched directory, or one above a rule's root, went away
			// or was renamed: the watches below it follow the old inodes,
			// and what was known below it is gone from this path.
			m.unwatchUnder(name)
		}
	}
	t, ok := m.pol.TargetFor(name)
	if !ok {
		return
	}
	if m.skippedLink(t) && !m.known[t.Path].Present {
		return // a link the policy skips, where no covered file was
	}
	k := key{t.Kind, t.Path}
	// A chmod is measured too: permissions are not part of a file's digest,
	// but a file made unreadable can no longer be vouched for.
	if t.Kind == policy.File && ev.Has(fsnotify.Remove|fsnotify.Rename|fsnotify.Create) {
		// The file in flight was deleted or replaced: stop reading it, and
		// measure what is there now.
		if cancel := m.cancel[k]; cancel != nil {
			cancel()
		}
	}
	m.schedule(k)
}

// newDirectory watches a directory that appeared and measures what is in it.
func (m *Monitor) newDirectory(dir string) {
	if t, ok := m.pol.TargetFor(dir); ok && t.Kind != policy.File {
		m.schedule(key{t.Kind, t.Path}) // a tree or image changed
	}
	below, above := false, false
	for i := range m.pol.Rules {
		r := &m.pol.Rules[i]
		root := ruleRoot(r)
		if r.Kind == policy.File {
			root = filepath.Dir(root)
		}
		above = above || (root != dir && policy.Under(root, dir))
		switch r.Kind {
		case policy.Dir, policy.Tree, policy.Image:
			below = below || policy.Under(dir, r.Path)
		case policy.Glob:
			below = below || (policy.Under(dir, root) && r.Pattern.CouldContain(dir))
		case policy.File:
			below = below || dir == root
		}
	}
	if above {
		// A directory on the way to a rule's root: watch what now exists.
		m.installWatches()
	}
	if !below && !above {
		return
	}
	if below {
		m.watchTree(dir, func(d string) bool { return true })
	}
	// Files created before the watch was in place.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if t, ok := m.pol.TargetFor(p); ok {
				m.schedule(key{t.Kind, t.Path})
			}
		}
		return nil
	})
}

// schedule measures k once it has been quiet for the debounce time, or
// after ten times that when it never goes quiet.
func (m *Monitor) schedule(k key) {
	now := m.clock.Now()
	p := m.pending[k]
	if p != nil {
		p.last = now
		return
	}
	p = &pending{first: now, last: now}
	m.pending[k] = p
	p.timer = m.clock.AfterFunc(m.pol.Debounce, func() { m.sendFire(k) })
}

func (m *Monitor) sendFire(k key) {
	select {
	case m.fire <- k:
	case <-m.done:
	}
}

func (m *Monitor) fired(ctx context.Context, k key) {
	p := m.pending[k]
	if p == nil {
		return
	}
	now := m.clock.Now()
	quiet := now.Sub(p.last)
	if quiet < m.pol.Debounce && now.Sub(p.first) < 10*m.pol.Debounce {
		p.timer = m.clock.AfterFunc(m.pol.Debounce-quiet, func() { m.sendFire(k) })
		return
	}
	delete(m.pending, k)
	if _, busy := m.inflight[k]; busy {
		m.dirty[k] = true
		return
	}
	m.start(ctx, k)
}

// largeFile is the size from which a file takes a place in the lane of
// large work (Monitor.bigSem), which never holds every worker.
const largeFile = 64 << 20

// start measures k in the background.
func (m *Monitor) start(ctx context.Context, k key) {
	m.seq++
	seq := m.seq
	m.inflight[k] = seq
	mctx, cancel := context.WithCancel(ctx)
	m.cancel[k] = cancel
	opts := m.budget()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer cancel()
		big := k.kind != policy.File
		if fi, err := os.Stat(k.path); err == nil && fi.Size() > largeFile {
			big = true
		}
		r := result{key: k, err: context.Canceled}
		if big {
			select {
			case m.bigSem <- struct{}{}:
				defer func() { <-m.bigSem }()
			case <-mctx.Done():
			}
		}
		if mctx.Err() == nil {
			select {
			case m.sem <- struct{}{}:
				r = measureTarget(mctx, k, opts)
				<-m.sem
			case <-mctx.Done():
			}
		}
		r.seq = seq
		m.results <- r
	}()
}

func (m *Monitor) finished(ctx context.Context, r result) {
	delete(m.inflight, r.key)
	delete(m.cancel, r.key)
	m.apply(ctx, r, ReasonCreated)
	if m.dirty[r.key] {
		delete(m.dirty, r.key)
		m.schedule(r.key)
	}
}

// skippedLink reports whether t is a symbolic link that the policy's
// "symlinks: skip" leaves out (a file named by a file rule is followed).
func (m *Monitor) skippedLink(t policy.Target) bool {
	if t.Kind != policy.File || m.pol.Symlinks != policy.Skip || t.Rule.Kind == policy.File {
		return false
	}
	fi, err := os.Lstat(t.Path)
	return err == nil && fi.Mode()&fs.ModeSymlink != 0
}
