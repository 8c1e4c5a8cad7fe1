package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/policy"
)

// Recorder appends a measurement to the log and extends the PCR;
// *logfile.Writer is one.
type Recorder interface {
	Append(ctx context.Context, pcr int, ev eventlog.Event) (eventlog.Record, error)
	Verify(ctx context.Context) error
}

var _ Recorder = (*logfile.Writer)(nil)

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
	// Workers bounds parallel hashing, with two rules. A scan (the initial
	// one, and each rescan) hashes up to Workers files at once, a tree's
	// files included; 0 means one per core. Measurements of changes run up
	// to Workers at once, at least 2 and 0 meaning [DefaultChangeWorkers]
	// (not one per core: each change measured is one file, tree or image),
	// of which large files, trees and images take at most half; a tree
	// measured after a change hashes its files on every core.
	Workers int
	// Ready, when set, is closed once the initial measurement is recorded
	// and the watches are in place.
	Ready chan<- struct{}
	// Clock is the time the monitor runs on; nil is the system clock.
	Clock Clock
}

// Known is the last recorded measurement of a path.
type Known struct {
	Kind    string
	SHA256  string
	Present bool
	// Cause is an unmeasured record's cause.
	Cause string
}

// KnownSet maps each path to its last recorded measurement.
type KnownSet map[string]Known

// Add takes a record into account (later records win); records of other
// producers than rimon are ignored. It fits [logfile.WriterOptions.OnOpen].
func (k KnownSet) Add(r *eventlog.Record) {
	if r.ContentType != eventlog.ContentTypeRimon {
		return
	}
	e := r.Event()
	if e.Kind == eventlog.KindUnmeasured {
		p := e.Path
		if esc := r.Content.Str("path_escaped"); p == "" && esc != "" {
			p = unescapePath(esc)
		}
		k[p] = Known{Kind: e.Kind, Present: true, Cause: r.Content.Str("cause")}
		return
	}
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
	// notDir is set with an [measure.ErrNotRegular] err for a FIFO, socket
	// or device: something that is not a directory where a file was.
	notDir bool
	err    error
}

type pending struct {
	first, last time.Time
	timer       Timer
}

// Monitor is the agent. Create it with [New] and start it with [Monitor.Run].
type Monitor struct {
	cfg     Config
	pol     *policy.Policy
	log     *slog.Logger
	clock   Clock
	watcher *fsnotify.Watcher
	watched map[string]dirID // watched directories, with the inode each watch is on
	// ancestors holds the directories above the rules' roots, watched so
	// that a rename or removal of any of them is seen.
	ancestors map[string]bool
	known     map[string]Known
	// linked maps the file a covered symbolic link resolves to onto the
	// covered paths that lead to it, so a change of the target (in a
	// directory no rule covers) is measured under the link's path.
	linked map[string][]key

	pending  map[key]*pending
	inflight map[key]uint64 // sequence number of the measurement in flight
	cancel   map[key]context.CancelFunc
	dirty    map[key]bool
	applied  map[key]uint64
	seq      uint64
	fire     chan key
	results  chan result
	wg       sync.WaitGroup
	sem      chan struct{} // measurements in flight
	bigSem   chan struct{} // of which large files, trees and images

	// unrec holds every path that changed and whose measurement failed,
	// until a measurement of it is recorded; retry carries its retries.
	unrec    map[key]*unrec
	retry    chan key
	mu       sync.Mutex   // guards unrecPub
	unrecPub []Unrecorded // what Unrecorded returns

	done       chan struct{} // closed when Run returns
	rescanning bool
	rescanNext string // why a rescan asked for during one must follow it
	rescanDone chan []result
	degraded   bool

	records, errors int

	// probe runs a function on Run's goroutine, and onLoop (when set)
	// after each event Run handles: tests see the state through them.
	probe  chan func()
	onLoop func()
}

// DefaultChangeWorkers is how many measurements of changes run at once
// when [Config.Workers] is 0.
const DefaultChangeWorkers = 4

// changeWorkers is how many measurements of changes run at once, and how
// many of them large files, trees and images may take, for
// [Config.Workers] n.
func changeWorkers(n int) (workers, big int) {
	if n <= 0 {
		n = DefaultChangeWorkers
	}
	n = max(n, 2) // so that large work never holds every worker
	return n, n / 2
}

// New checks cfg and returns a Monitor.
func New(cfg Config) (*Monitor, error) {
	if cfg.Policy == nil || cfg.Recorder == nil || cfg.Logger == nil {
		return nil, errors.New("monitor: Policy, Recorder and Logger are required")
	}
	workers, big := changeWorkers(cfg.Workers)
	clock := cfg.Clock
	if clock == nil {
		clock = systemClock{}
	}
	known := map[string]Known{}
	for k, v := range cfg.Known {
		known[k] = v
	}
	return &Monitor{
		cfg: cfg, pol: cfg.Policy, log: cfg.Logger, clock: clock,
		watched: map[string]dirID{}, ancestors: map[string]bool{}, known: known, linked: map[string][]key{},
		pending: map[key]*pending{}, inflight: map[key]uint64{}, cancel: map[key]context.CancelFunc{},
		dirty: map[key]bool{}, applied: map[key]uint64{}, unrec: map[key]*unrec{}, retry: make(chan key, 64),
		fire: make(chan key, 256), results: make(chan result, 64), sem: make(chan struct{}, workers),
		bigSem:     make(chan struct{}, big),
		rescanDone: make(chan []result, 1), done: make(chan struct{}), probe: make(chan func()),
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

	// The rescan interval follows the policy (a reload may change it) and
	// shortens while watches are missing (m.degraded).
	var rescanC <-chan time.Time
	var rescanT Ticker
	var rescanIv time.Duration
	retune := func() {
		iv := m.rescanInterval()
		if iv == rescanIv {
			return
		}
		if rescanT != nil {
			rescanT.Stop()
			rescanT, rescanC = nil, nil
		}
		if rescanIv = iv; iv > 0 {
			rescanT = m.clock.NewTicker(iv)
			rescanC = rescanT.C()
		}
	}
	retune()
	defer func() {
		if rescanT != nil {
			rescanT.Stop()
		}
	}()
	var dogC <-chan time.Time
	if m.cfg.Watchdog > 0 {
		t := m.clock.NewTicker(m.cfg.Watchdog / 2)
		defer t.Stop()
		dogC = t.C()
	}
	statusT := m.clock.NewTicker(10 * time.Second)
	defer statusT.Stop()

	for {
		retune()
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
				// Events may have been lost: look at everything again.
				m.log.Error("watch error: rescanning everything", "err", err)
				m.startRescan(ctx, "watch error")
			}
		case k := <-m.fire:
			m.fired(ctx, k)
		case k := <-m.retry:
			m.retried(ctx, k)
		case r := <-m.results:
			m.finished(ctx, r)
		case rs := <-m.rescanDone:
			m.rescanning = false
			m.applyBatch(ctx, rs, ReasonCreated)
			if why := m.rescanNext; why != "" {
				// Asked for while that one ran (a reload): it may have
				// read a path before the change that asked for it.
				m.rescanNext = ""
				m.startRescan(ctx, why)
			}
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
		case <-statusT.C():
			m.notify("STATUS=" + m.status())
		case f := <-m.probe:
			f()
			continue
		}
		if m.onLoop != nil {
			m.onLoop()
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
	if n, first := m.unrecordedSummary(); n > 0 {
		s += fmt.Sprintf("; %d changes not recorded, retrying (%s)", n, first)
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
	for _, u := range m.unrec {
		u.stopTimer()
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
