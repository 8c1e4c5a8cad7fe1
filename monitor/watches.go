package monitor

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/rimon-dev/rimon/policy"
)

func (m *Monitor) installWatches() {
	m.degraded = false // set again by watch if the limit is still in the way
	for i := range m.pol.Rules {
		r := &m.pol.Rules[i]
		root, want := ruleRoot(r), func(string) bool { return true }
		switch r.Kind {
		case policy.Glob:
			want = r.Pattern.CouldContain
		case policy.Dir:
			want = func(d string) bool { return d == r.Path || !m.pol.Excluded(r, d) }
		}
		m.watchAncestors(root)
		fi, err := os.Stat(root)
		switch {
		case err == nil && fi.IsDir() && r.Kind != policy.File:
			m.watchTree(root, want)
		case err == nil:
			m.watch(filepath.Dir(root))
		default:
			// Not there yet: watch the nearest directory that is, to see it appear.
			m.watch(existingAncestor(root))
		}
	}
}

// ruleRoot is the directory (or file) a rule's watches start from.
func ruleRoot(r *policy.Rule) string {
	if r.Kind == policy.Glob {
		return r.Pattern.StaticPrefix()
	}
	return r.Path
}

func existingAncestor(p string) string {
	for {
		p = filepath.Dir(p)
		if fi, err := os.Stat(p); (err == nil && fi.IsDir()) || p == "/" {
			return p
		}
	}
}

// watchTree watches root and every directory below it that want accepts.
func (m *Monitor) watchTree(root string, want func(dir string) bool) {
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		if !want(p) {
			return filepath.SkipDir
		}
		if !m.watch(p) {
			return filepath.SkipAll
		}
		return nil
	})
}

// dirID names a directory's inode.
type dirID struct{ dev, ino uint64 }

func statDir(p string) (dirID, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return dirID{}, false
	}
	return dirID{uint64(st.Dev), st.Ino}, true
}

// watchAncestors watches every directory above root, so that renaming or
// removing any of them (which inotify reports only to the watch on its
// parent) makes the agent look again at everything below.
func (m *Monitor) watchAncestors(root string) {
	for a := filepath.Dir(root); ; a = filepath.Dir(a) {
		m.ancestors[a] = true
		if _, err := os.Stat(a); err == nil {
			m.watch(a)
		}
		if a == "/" || a == "." {
			return
		}
	}
}

// unwatchUnder drops the watches on dir and every directory below it, and
// measures again every known path below it: dir was removed or renamed,
// and whatever now stands at its path is not what was watched.
func (m *Monitor) unwatchUnder(dir string) {
	for d := range m.watched {
		if d == dir || policy.Under(d, dir) {
			m.watcher.Remove(d)
			delete(m.watched, d)
		}
	}
	for p, k := range m.known {
		if k.Present && p != dir && policy.Under(p, dir) {
			if t, ok := m.pol.TargetFor(p); ok {
				m.schedule(key{t.Kind, t.Path})
			}
		}
	}
	if m.ancestors[dir] {
		// Something above a rule's root: watch what stands there now.
		m.installWatches()
	}
}

// watch adds a watch on dir; it returns false when no more can be added.
// A directory watched before whose path now leads to another inode (it was
// renamed and another put in its place) is watched anew, and what was known
// below it measured again.
func (m *Monitor) watch(dir string) bool {
	id, ok := statDir(dir)
	if have, w := m.watched[dir]; w {
		if ok && have == id {
			return true
		}
		m.unwatchUnder(dir)
		if !ok {
			return true
		}
	}
	err := m.watcher.Add(dir)
	switch {
	case err == nil:
		m.watched[dir] = id
	case errors.Is(err, syscall.ENOSPC):
		if !m.degraded {
			m.degraded = true
			limit, _ := os.ReadFile("/proc/sys/fs/inotify/max_user_watches")
			m.log.Error("inotify watch limit reached: changes in unwatched directories are found by periodic rescans only",
				"max_user_watches", string(trim(limit)), "fix", "sysctl -w fs.inotify.max_user_watches=1048576 (and in /etc/sysctl.d to keep it)",
				"rescan", m.rescanInterval().String())
			m.notify("STATUS=" + m.status())
		}
		return false
	case errors.Is(err, fs.ErrNotExist):
	default:
		// Changes below it are found by rescans only, as when the watch
		// limit is reached.
		m.degraded = true
		m.log.Error("cannot watch directory: changes below it are found by periodic rescans only", "dir", dir, "err", err,
			"rescan", m.rescanInterval().String())
	}
	return true
}

func trim(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// watchLinkTarget watches the directory of the file a covered path
// resolves to when a symbolic link is on the way: inotify reports changes
// of the link's directory, not of the file the link leads to, which may lie
// where no rule covers. Its events are then taken as changes of k.
func (m *Monitor) watchLinkTarget(k key) {
	if k.kind != policy.File {
		return // a tree's or image's root link is followed by its watches
	}
	// One lstat per measured file on the loop: only a path that is itself
	// a link is resolved (a link in a directory on the way is not followed
	// here; the directory's watch sees the file's own changes).
	if fi, err := os.Lstat(k.path); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return
	}
	real, err := filepath.EvalSymlinks(k.path)
	if err != nil || real == k.path {
		return
	}
	for _, have := range m.linked[real] {
		if have == k {
			return
		}
	}
	m.linked[real] = append(m.linked[real], k)
	m.watch(filepath.Dir(real))
}
