package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/monitor"
	"github.com/rimon-dev/rimon/tpm"
)

// errLostGround wraps the error that made the agent stop: its log or its
// TPM no longer holds what it recorded.
var errLostGround = errors.New("watch stopped")

// guard stands between the monitor and the log writer. It serializes the
// writer (the monitor and the health check both use it), learns from each
// result whether the agent can record, and stops the agent when its log
// or its TPM is lost:
//
//   - the log file deleted, replaced or truncated, or the TPM's PCR no
//     longer the replay of the log (reset, or a TPM that restarted without
//     its state): nothing recorded from now on could be verified, so the
//     agent stops with an error that says what happened;
//   - the TPM unreachable, or an append that failed (a full disk, an
//     immutable log): the agent cannot record for now. It keeps running
//     (a verifier can still fetch evidence, which lists what is unrecorded)
//     but stops pinging the systemd watchdog until it records again, so
//     that systemd restarts it if the fault lasts. The health check
//     reconnects to the TPM and reconciles as soon as it answers.
type guard struct {
	w      *logfile.Writer
	stop   context.CancelCauseFunc
	logger *slog.Logger

	wmu  sync.Mutex    // serializes w
	kick chan struct{} // wakes the health check when recording fails

	mu       sync.Mutex
	tpmErr   error // the TPM could not be reached or read
	writeErr error // the last append failed; cleared by a successful one
	fatal    error
}

var _ monitor.Recorder = (*guard)(nil)

func newGuard(w *logfile.Writer, stop context.CancelCauseFunc, logger *slog.Logger) *guard {
	return &guard{w: w, stop: stop, logger: logger, kick: make(chan struct{}, 1)}
}

// Append appends through the writer and notes what the result says.
func (g *guard) Append(ctx context.Context, pcr int, ev eventlog.Event) (eventlog.Record, error) {
	g.wmu.Lock()
	rec, err := g.w.Append(ctx, pcr, ev)
	g.wmu.Unlock()
	g.observe(err, true)
	return rec, err
}

// Verify compares log and TPM through the writer and notes the result.
func (g *guard) Verify(ctx context.Context) error {
	g.wmu.Lock()
	err := g.w.Verify(ctx)
	g.wmu.Unlock()
	g.observe(err, false)
	return err
}

// lostGround reports whether err means the log or the TPM no longer holds
// what the agent recorded.
func lostGround(err error) bool {
	var div *logfile.DivergenceError
	var rep *eventlog.ReplayError
	return errors.Is(err, logfile.ErrLogLost) || errors.As(err, &div) || errors.As(err, &rep) || errors.Is(err, logfile.ErrOtherBoot)
}

func (g *guard) observe(err error, appending bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	wasOK := g.tpmErr == nil && g.writeErr == nil
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return // stopping: says nothing about log or TPM
	case err == nil:
		g.tpmErr = nil
		if appending {
			g.writeErr = nil
		}
	case lostGround(err):
		if g.fatal == nil {
			g.fatal = err
			g.logger.Error("lost ground: stopping", "err", err)
			g.stop(fmt.Errorf("%w: %w", errLostGround, err))
		}
		return
	case errors.Is(err, tpm.ErrUnreachable):
		// An ExtendError wraps it too: the record is in the log, and the
		// reconciliation after reconnecting extends it.
		g.tpmErr = err
	case appending:
		g.writeErr = err
	default:
		g.tpmErr = err // Verify could not read the log or the TPM
	}
	switch isOK := g.tpmErr == nil && g.writeErr == nil; {
	case wasOK && !isOK:
		g.logger.Error("cannot record: watchdog pings stop until recording works again", "err", err)
		select {
		case g.kick <- struct{}{}:
		default:
		}
	case !wasOK && isOK:
		g.logger.Info("recording again: log and TPM agree")
	}
}

// canRecord returns why the agent cannot record now, or nil.
func (g *guard) canRecord() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.fatal != nil:
		return g.fatal
	case g.tpmErr != nil:
		return g.tpmErr
	}
	return g.writeErr
}

// check runs until ctx ends: it compares log and TPM every interval (so
// that a log deleted or a TPM lost while nothing changes is noticed), and
// every retry while the agent cannot record (so that it resumes as soon
// as the TPM answers again).
func (g *guard) check(ctx context.Context, every, retry time.Duration) {
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-g.kick:
			t.Stop() // no stale tick follows (Go 1.23 timers)
		}
		g.Verify(ctx)
		if g.canRecord() != nil {
			t.Reset(retry)
		} else {
			t.Reset(every)
		}
	}
}

// checkIntervals are how often the health check runs: every interval
// while the agent records (at least as often as the watchdog wants a
// ping), every retry while it cannot.
func checkIntervals(watchdog time.Duration) (every, retry time.Duration) {
	every, retry = 5*time.Second, time.Second
	if watchdog > 0 && watchdog/2 < every {
		every = watchdog / 2
	}
	return every, min(every, retry)
}

// gatedNotifier passes sd_notify messages on, except watchdog pings while
// the agent cannot record.
type gatedNotifier struct {
	monitor.Notifier
	g interface{ canRecord() error }
}

func (n gatedNotifier) Notify(state string) error {
	if state == "WATCHDOG=1" && n.g.canRecord() != nil {
		return nil
	}
	return n.Notifier.Notify(state)
}
