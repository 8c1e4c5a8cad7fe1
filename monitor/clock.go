package monitor

import "time"

// Clock is the time a Monitor runs on: when changes are quiet enough to
// measure (debounce), when a failure is retried, when rescans, status
// lines and watchdog pings are due, and the time of an unrecorded change.
// [Config.Clock] nil is the system clock; tests give one they advance.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless
	// the timer is stopped first, as [time.AfterFunc] does.
	AfterFunc(d time.Duration, f func()) Timer
	// NewTicker sends the time on its channel every d, dropping ticks
	// for a slow receiver, as [time.NewTicker] does.
	NewTicker(d time.Duration) Ticker
}

// Timer is a [Clock]'s pending call.
type Timer interface {
	// Stop prevents the call; it reports whether the call was pending.
	Stop() bool
}

// Ticker is a [Clock]'s ticker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// systemClock is the real time.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

func (systemClock) NewTicker(d time.Duration) Ticker { return systemTicker{time.NewTicker(d)} }

type systemTicker struct{ *time.Ticker }

func (t systemTicker) C() <-chan time.Time { return t.Ticker.C }
