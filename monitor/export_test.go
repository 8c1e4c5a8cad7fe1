package monitor

import "github.com/fsnotify/fsnotify"

func newTestWatcher(m *Monitor) (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	m.watcher = w
	return w, err
}
