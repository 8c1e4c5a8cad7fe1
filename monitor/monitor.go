package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/ociimage"
	"github.com/rimon-dev/rimon/policy"
)

// Recorder appends a measurement to the log and extends the PCR;
// *eventlog.Writer is one.
type Recorder interface {
	Append(ctx context.Context, pcr int, ev eventlog.Event) (eventlog.Record, error)
	Verify(ctx context.Context) error
}

var _ Recorder = (*eventlog.Writer)(nil)

// Notifier tells the service manager about the agent's state (sd_notify).
type Notifier interface {
	Notify(state string) error
}

// Config is what a Monitor needs. Policy, Recorder and Logger are required.
type Config struct {
	Policy *policy.Policy
	// Reload reads the policy again on SIGHUP; nil ignores SIGHUP.
	Reload   func() (*policy.Policy, error)
	Recorder Recorder
	// Known is the last measurement of each path already in the log (see
	// [KnownSet.Add]), so that a restart records only what changed.
	Known  KnownSet
	Logger *slog.Logger
	// Notify, when set, receives READY=1, STATUS= and WATCHDOG=1.
	Notify Notifier
	// Watchdog is the systemd watchdog interval (WATCHDOG_USEC); pings go
	// out at half of it. 0 disables them.
	Watchdog time.Duration
	// Progress, when set, receives a progress line during long scans (a terminal).
	Progress io.Writer
	// Workers bounds parallel hashing; 0 means one per core.
	Workers int
	// Ready, when set, is closed once the initial measurement is recorded
	// and the watches are in place.
	Ready chan<- struct{}
}

// Known is the last recorded measurement of a path.
type Known struct {
	Kind    string
	SHA256  string
	Present bool
}

// KnownSet maps each path to its last recorded measurement.
type KnownSet map[string]Known

// Add takes a record into account (later records win); records of other
// producers than rimon are ignored. It fits [eventlog.WriterOptions.OnOpen].
func (k KnownSet) Add(r *eventlog.Record) {
	if r.ContentType != eventlog.ContentTypeRimon {
		return
	}
	e := r.Event()
	k[e.Path] = Known{Kind: e.Kind, SHA256: e.SHA256, Present: e.Reason != eventlog.ReasonDeleted}
}

// Reasons the agent adds to those of the eventlog package.
const (
	// ReasonCreated marks a path that appeared after the initial scan.
	ReasonCreated = "created"
)

type key struct {
	kind policy.Kind
	path string
}

type result struct {
	key    key
	seq    uint64
	digest string
	size   uint64
	extra  []eventlog.Field
	absent bool
	err    error
}

type pending struct {
	first, last time.Time
	timer       *time.Timer
}

// Monitor is the agent. Create it with [New] and start it with [Monitor.Run].
type Monitor struct {
	cfg     Config
	pol     *policy.Policy
	log     *slog.Logger
	watcher *fsnotify.Watcher
	watched map[string]bool
	known   map[string]Known

	pending  map[key]*pending
	inflight map[key]uint64 // sequence number of the measurement in flight
	dirty    map[key]bool
	applied  map[key]uint64
	seq      uint64
	fire     chan key
	results  chan result
	wg       sync.WaitGroup
	sem      chan struct{}

	done       chan struct{} // closed when Run returns
	rescanning bool
	rescanDone chan []result
	degraded   bool

	records, errors int
	lastChange      time.Time
}

// New checks cfg and returns a Monitor.
func New(cfg Config) (*Monitor, error) {
	if cfg.Policy == nil || cfg.Recorder == nil || cfg.Logger == nil {
		return nil, errors.New("monitor: Policy, Recorder and Logger are required")
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = 4
	}
	known := map[string]Known{}
	for k, v := range cfg.Known {
		known[k] = v
	}
	return &Monitor{
		cfg: cfg, pol: cfg.Policy, log: cfg.Logger,
		watched: map[string]bool{}, known: known,
		pending: map[key]*pending{}, inflight: map[key]uint64{}, dirty: map[key]bool{}, applied: map[key]uint64{},
		fire: make(chan key, 256), results: make(chan result, 64), sem: make(chan struct{}, workers),
		rescanDone: make(chan []result, 1), done: make(chan struct{}),
	}, nil
}

// Run measures, watches and records until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	w, err := fsnotify.NewBufferedWatcher(4096)
	if err != nil {
		return fmt.Errorf("start watching: %w", err)
	}
	m.watcher = w
	defer w.Close()
	defer close(m.done)
	// Catch SIGHUP from the start: a reload asked for during the initial
	// scan waits for it, rather than killing the process.
	hup := make(chan os.Signal, 1)
	if m.cfg.Reload != nil {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}

	m.installWatches()
	if err := m.initialScan(ctx); err != nil {
		return err
	}
	if m.cfg.Ready != nil {
		close(m.cfg.Ready)
	}
	m.notify("READY=1\n" + m.status())
	m.log.Info("ready", "targets", len(m.known), "watched_dirs", len(m.watched), "records", m.records)

	var rescanC <-chan time.Time
	if iv := m.rescanInterval(); iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		rescanC = t.C
	}
	var dogC <-chan time.Time
	if m.cfg.Watchdog > 0 {
		t := time.NewTicker(m.cfg.Watchdog / 2)
		defer t.Stop()
		dogC = t.C
	}
	statusT := time.NewTicker(10 * time.Second)
	defer statusT.Stop()

	for {
		select {
		case <-ctx.Done():
			return m.shutdown(ctx)
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watcher closed")
			}
			m.handleEvent(ev)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watcher closed")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				m.log.Warn("inotify queue overflowed: rescanning everything")
				m.startRescan(ctx, "overflow")
			} else {
				m.log.Error("watch error", "err", err)
			}
		case k := <-m.fire:
			m.fired(ctx, k)
		case r := <-m.results:
			m.finished(ctx, r)
		case rs := <-m.rescanDone:
			m.rescanning = false
			m.applyBatch(ctx, rs, ReasonCreated)
		case <-rescanC:
			m.startRescan(ctx, "periodic")
			if err := m.cfg.Recorder.Verify(ctx); err != nil {
				m.errors++
				m.log.Error("log and TPM disagree", "err", err)
				m.notify("STATUS=ERROR: log and TPM disagree: " + err.Error())
			}
		case <-hup:
			m.reload(ctx)
		case <-dogC:
			m.notify("WATCHDOG=1")
		case <-statusT.C:
			m.notify("STATUS=" + m.status())
		}
	}
}

func (m *Monitor) rescanInterval() time.Duration {
	iv := m.pol.Rescan
	if m.degraded && (iv == 0 || iv > 30*time.Second) {
		iv = 30 * time.Second
	}
	return iv
}

func (m *Monitor) status() string {
	s := fmt.Sprintf("measuring %d paths, %d directories watched, %d records, %d errors", len(m.known), len(m.watched), m.records, m.errors)
	if m.degraded {
		s += "; watch limit reached: periodic rescans only"
	}
	return s
}

func (m *Monitor) notify(state string) {
	if m.cfg.Notify == nil {
		return
	}
	if err := m.cfg.Notify.Notify(state); err != nil {
		m.log.Warn("sd_notify failed", "err", err)
	}
}

// shutdown waits for measurements in flight and records them.
func (m *Monitor) shutdown(ctx context.Context) error {
	for _, p := range m.pending {
		p.timer.Stop()
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	keep := context.WithoutCancel(ctx)
	for {
		select {
		case r := <-m.results:
			delete(m.dirty, r.key) // no new measurements after shutdown
			m.finished(keep, r)
		case <-done:
			for {
				select {
				case r := <-m.results:
					m.finished(keep, r)
				default:
					m.log.Info("stopped", "records", m.records)
					return nil
				}
			}
		}
	}
}

// ---- watches ----

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

// ---- events ----

func (m *Monitor) handleEvent(ev fsnotify.Event) {
	name := filepath.Clean(ev.Name)
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(name); err == nil && fi.IsDir() {
			m.newDirectory(name)
			return
		}
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if m.watched[name] {
			delete(m.watched, name)
		}
		// Whatever was known below a removed directory is gone too.
		for p, k := range m.known {
			if k.Present && p != name && policy.Under(p, name) {
				if t, ok := m.pol.TargetFor(p); ok {
					m.schedule(key{t.Kind, t.Path})
				}
			}
		}
	}
	t, ok := m.pol.TargetFor(name)
	if !ok {
		return
	}
	if ev.Op == fsnotify.Chmod && t.Kind == policy.File {
		return // permissions are not part of a file's measurement
	}
	if t.Kind == policy.File && m.pol.Symlinks == policy.Skip && t.Rule.Kind != policy.File {
		if fi, err := os.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return
		}
	}
	m.schedule(key{t.Kind, t.Path})
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
	now := time.Now()
	p := m.pending[k]
	if p != nil {
		p.last = now
		return
	}
	p = &pending{first: now, last: now}
	m.pending[k] = p
	p.timer = time.AfterFunc(m.pol.Debounce, func() { m.sendFire(k) })
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
	now := time.Now()
	quiet := now.Sub(p.last)
	if quiet < m.pol.Debounce && now.Sub(p.first) < 10*m.pol.Debounce {
		p.timer = time.AfterFunc(m.pol.Debounce-quiet, func() { m.sendFire(k) })
		return
	}
	delete(m.pending, k)
	if _, busy := m.inflight[k]; busy {
		m.dirty[k] = true
		return
	}
	m.start(ctx, k)
}

// start measures k in the background.
func (m *Monitor) start(ctx context.Context, k key) {
	m.seq++
	seq := m.seq
	m.inflight[k] = seq
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.sem <- struct{}{}
		r := measureTarget(ctx, k)
		<-m.sem
		r.seq = seq
		m.results <- r
	}()
}

func (m *Monitor) finished(ctx context.Context, r result) {
	delete(m.inflight, r.key)
	m.apply(ctx, r, ReasonCreated)
	if m.dirty[r.key] {
		delete(m.dirty, r.key)
		m.schedule(r.key)
	}
}

// ---- measuring ----

func measureTarget(ctx context.Context, k key) result {
	r := result{key: k}
	switch k.kind {
	case policy.File:
		res, err := measure.File(ctx, k.path)
		if err != nil {
			r.absent, r.err = isAbsent(err), err
			return r
		}
		r.digest, r.size = res.Digest.String(), uint64(res.Size)
	case policy.Tree:
		res, err := measure.Tree(ctx, k.path, 0)
		if err != nil {
			r.absent, r.err = isAbsent(err), err
			return r
		}
		r.digest, r.size = res.Digest.String(), uint64(len(res.Entries))
	case policy.Image:
		res, err := ociimage.Verify(ctx, k.path)
		if err != nil {
			r.absent, r.err = isAbsent(err), err
			return r
		}
		r.digest, r.size = res.Digest, uint64(res.Blobs)
		r.extra = res.Fields()
	}
	return r
}

func isAbsent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, measure.ErrNotRegular) || errors.Is(err, measure.ErrNotDirectory)
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

// apply records a result when it differs from what is known: deleted,
// changed, or newReason for a path that was not present before.
func (m *Monitor) apply(ctx context.Context, r result, newReason string) {
	if r.seq < m.applied[r.key] {
		return // an older measurement than one already applied
	}
	m.applied[r.key] = r.seq
	if errors.Is(r.err, context.Canceled) {
		return // stopped while measuring: nothing was recorded
	}
	if r.err != nil && !r.absent {
		m.errors++
		m.log.Error("measurement failed", "path", r.key.path, "kind", string(r.key.kind), "err", r.err)
		return
	}
	prev, had := m.known[r.key.path]
	ev := eventlog.Event{Kind: kindOf(r.key.kind), Path: r.key.path, SHA256: r.digest, Size: r.size, Extra: r.extra}
	switch {
	case r.absent:
		if !had || !prev.Present {
			return
		}
		ev.Reason, ev.SHA256, ev.Size, ev.Extra = eventlog.ReasonDeleted, "", 0, nil
	case had && prev.Present && prev.SHA256 == r.digest && prev.Kind == ev.Kind:
		return
	case had && prev.Present:
		ev.Reason = eventlog.ReasonChanged
	default:
		ev.Reason = newReason
	}
	rec, err := m.cfg.Recorder.Append(context.WithoutCancel(ctx), m.pol.PCR, ev)
	if err != nil {
		m.errors++
		m.log.Error("record failed", "path", ev.Path, "reason", ev.Reason, "err", err)
		var ee *eventlog.ExtendError
		if !errors.As(err, &ee) {
			return // nothing was written: try again on the next change or rescan
		}
	}
	m.records++
	m.lastChange = time.Now()
	m.known[r.key.path] = Known{Kind: ev.Kind, SHA256: ev.SHA256, Present: !r.absent}
	m.log.Info("measured", "recnum", rec.RecNum, "path", ev.Path, "kind", ev.Kind, "sha256", ev.SHA256, "reason", ev.Reason)
}

// ---- scans ----

// Expand lists what the policy covers now, in path order: its files (the
// file, glob and dir rules expanded), trees and images.
func Expand(pol *policy.Policy) []policy.Target {
	var out []policy.Target
	for _, k := range expand(pol, nil) {
		out = append(out, policy.Target{Kind: k.kind, Path: k.path})
	}
	return out
}

// targets lists what the policy covers now, plus the known paths it still
// covers (so that deletions are found).
func (m *Monitor) targets() []key { return expand(m.pol, m.known) }

func expand(pol *policy.Policy, known map[string]Known) []key {
	seen := map[key]bool{}
	var out []key
	add := func(k key) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for i := range pol.Rules {
		r := &pol.Rules[i]
		switch r.Kind {
		case policy.File:
			add(key{policy.File, r.Path})
		case policy.Tree, policy.Image:
			add(key{r.Kind, r.Path})
		case policy.Glob, policy.Dir:
			root, want := r.Path, func(string) bool { return true }
			if r.Kind == policy.Glob {
				root, want = r.Pattern.StaticPrefix(), r.Pattern.CouldContain
			}
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				if d.IsDir() {
					if p != root && (!want(p) || (r.Kind == policy.Dir && pol.Excluded(r, p))) {
						return filepath.SkipDir
					}
					return nil
				}
				if d.Type()&fs.ModeSymlink != 0 && pol.Symlinks == policy.Skip {
					return nil
				}
				if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
					return nil
				}
				if t, ok := pol.TargetFor(p); ok && t.Kind == policy.File {
					add(key{policy.File, p})
				}
				return nil
			})
		}
	}
	for p, k := range known {
		if !k.Present {
			continue
		}
		if t, ok := pol.TargetFor(p); ok && t.Path == p {
			add(key{t.Kind, p})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].path != out[j].path {
			return out[i].path < out[j].path
		}
		return out[i].kind < out[j].kind
	})
	return out
}

// measureAll measures keys in parallel and returns the results in order.
// It runs outside the main goroutine: it touches nothing of m but its
// fixed configuration; seq is taken by the caller.
func (m *Monitor) measureAll(ctx context.Context, keys []key, seq uint64, progress func(done int)) []result {
	out := make([]result, len(keys))
	var files []string
	var fileIdx []int
	for i, k := range keys {
		if k.kind == policy.File {
			files = append(files, k.path)
			fileIdx = append(fileIdx, i)
		}
	}
	// Files in chunks, so progress can be shown.
	const chunk = 2048
	done := 0
	for start := 0; start < len(files); start += chunk {
		end := min(start+chunk, len(files))
		for j, o := range measure.Files(ctx, files[start:end], m.cfg.Workers) {
			i := fileIdx[start+j]
			r := result{key: keys[i], seq: seq}
			if o.Err != nil {
				r.absent, r.err = isAbsent(o.Err), o.Err
			} else {
				r.digest, r.size = o.Digest.String(), uint64(o.Size)
			}
			out[i] = r
		}
		done += end - start
		if progress != nil {
			progress(done)
		}
	}
	for i, k := range keys {
		if k.kind != policy.File {
			out[i] = measureTarget(ctx, k)
			out[i].seq = seq
			done++
		}
	}
	return out
}

func (m *Monitor) initialScan(ctx context.Context) error {
	start := time.Now()
	keys := m.targets()
	m.log.Info("initial scan", "targets", len(keys))
	last := time.Now()
	progress := func(done int) {
		if time.Since(last) < time.Second && done < len(keys) {
			return
		}
		last = time.Now()
		msg := fmt.Sprintf("initial scan: measured %d of %d", done, len(keys))
		m.notify("STATUS=" + msg)
		if m.cfg.Progress != nil {
			fmt.Fprintf(m.cfg.Progress, "\r%s", msg)
		}
	}
	m.seq++
	results := m.measureAll(ctx, keys, m.seq, progress)
	if m.cfg.Progress != nil && len(keys) > 0 {
		fmt.Fprintln(m.cfg.Progress)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	hashed := time.Since(start)
	before := m.records
	m.applyBatch(ctx, results, eventlog.ReasonInitial)
	m.log.Info("initial scan done", "targets", len(keys), "records", m.records-before,
		"hash_seconds", hashed.Seconds(), "record_seconds", time.Since(start).Seconds()-hashed.Seconds())
	return nil
}

// applyBatch records scan results in order. A path with an event-driven
// measurement pending or in flight is left to it.
func (m *Monitor) applyBatch(ctx context.Context, rs []result, newReason string) {
	for _, r := range rs {
		if _, p := m.pending[r.key]; p {
			continue
		}
		if _, f := m.inflight[r.key]; f {
			continue
		}
		m.apply(ctx, r, newReason)
	}
	m.notify("STATUS=" + m.status())
}

func (m *Monitor) startRescan(ctx context.Context, why string) {
	if m.rescanning {
		return
	}
	m.rescanning = true
	keys := m.targets()
	m.log.Info("rescan", "why", why, "targets", len(keys))
	m.seq++
	seq := m.seq
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		rs := m.measureAll(ctx, keys, seq, nil)
		select {
		case m.rescanDone <- rs:
		case <-ctx.Done():
		}
	}()
	// Directories may have appeared that were never watched (overflow), or
	// the watch limit may have been raised.
	m.installWatches()
}

// ---- reload ----

func (m *Monitor) reload(ctx context.Context) {
	p, err := m.cfg.Reload()
	if err != nil {
		m.errors++
		m.log.Error("policy reload rejected; keeping the old policy", "err", err)
		return
	}
	if p.PCR != m.pol.PCR || p.Log != m.pol.Log || !sameBanks(p, m.pol) {
		m.errors++
		m.log.Error("policy reload rejected; keeping the old policy: pcr, banks and log can change only with a restart",
			"source", p.Source)
		return
	}
	m.pol = p
	for _, pd := range m.pending {
		pd.timer.Stop()
	}
	m.pending = map[key]*pending{}
	m.installWatches()
	m.log.Info("policy reloaded", "source", p.Source, "rules", len(p.Rules))
	m.startRescan(ctx, "reload")
}

func sameBanks(a, b *policy.Policy) bool {
	if len(a.Banks) != len(b.Banks) {
		return false
	}
	for i := range a.Banks {
		if a.Banks[i] != b.Banks[i] {
			return false
		}
	}
	return true
}
