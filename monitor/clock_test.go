package monitor

import (
	"sync"
	"time"
)

// fakeClock is a [Clock] that moves only when a test advances it. Tests
// that run the agent with its real inotify watcher use it: testing/synctest
// cannot, since the watcher's reads block on a file descriptor, outside
// what a synctest bubble can wait for.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers map[*fakeTimer]bool // pending calls and tickers
	delays []time.Duration     // of every AfterFunc, in order
	// changed, when set, is called after a timer or ticker is added.
	changed func()
}

type fakeTimer struct {
	c      *fakeClock
	when   time.Time
	seq    int // breaks ties in creation order
	f      func()
	period time.Duration // a ticker's
	ch     chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), timers: map[*fakeTimer]bool{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(t *fakeTimer) {
	c.mu.Lock()
	c.seq++
	t.c, t.seq = c, c.seq
	c.timers[t] = true
	if t.f != nil {
		c.delays = append(c.delays, t.when.Sub(c.now))
	}
	changed := c.changed
	c.mu.Unlock()
	if changed != nil {
		changed()
	}
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	t := &fakeTimer{when: c.Now().Add(d), f: f}
	c.add(t)
	return t
}

func (c *fakeClock) NewTicker(d time.Duration) Ticker {
	t := &fakeTimer{when: c.Now().Add(d), period: d, ch: make(chan time.Time, 1)}
	c.add(t)
	return fakeTicker{t}
}

type fakeTicker struct{ *fakeTimer }

func (t fakeTicker) Stop() { t.fakeTimer.Stop() }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	ok := t.c.timers[t]
	delete(t.c.timers, t)
	return ok
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

// Advance moves the clock forward by d. Every call and tick due on the way
// happens at its time, in time order: a call in its own goroutine, a tick
// dropped when the last one was not received, as the time package does.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	c.advanceTo(end)
}

func (c *fakeClock) advanceTo(end time.Time) {
	for {
		c.mu.Lock()
		var first *fakeTimer
		for t := range c.timers {
			if !t.when.After(end) && (first == nil || t.when.Before(first.when) || (t.when.Equal(first.when) && t.seq < first.seq)) {
				first = t
			}
		}
		if first == nil {
			if end.After(c.now) {
				c.now = end
			}
			c.mu.Unlock()
			return
		}
		c.now = first.when
		if first.period > 0 {
			select {
			case first.ch <- c.now:
			default:
			}
			first.when = first.when.Add(first.period)
		} else {
			delete(c.timers, first)
		}
		c.mu.Unlock()
		if first.f != nil {
			go first.f()
		}
	}
}

// fireNext moves the clock to the earliest pending call (not a ticker) and
// makes it; it reports false when no call is pending.
func (c *fakeClock) fireNext() bool {
	c.mu.Lock()
	var first *fakeTimer
	for t := range c.timers {
		if t.f != nil && (first == nil || t.when.Before(first.when)) {
			first = t
		}
	}
	c.mu.Unlock()
	if first == nil {
		return false
	}
	c.advanceTo(first.when)
	return true
}

// hasTicker reports whether a ticker of period d is running.
func (c *fakeClock) hasTicker(d time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range c.timers {
		if t.period == d {
			return true
		}
	}
	return false
}

// callDelays returns the delay of every AfterFunc so far.
func (c *fakeClock) callDelays() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.delays...)
}
