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

// watch adds a watch on dir; it returns false when no more can be added.
func (m *Monitor) watch(dir string) bool {
	if m.watched[dir] {
		return true
	}
	err := m.watcher.Add(dir)
	switch {
	case err == nil:
		m.watched[dir] = true
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
		m.log.Warn("cannot watch directory", "dir", dir, "err", err)
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
