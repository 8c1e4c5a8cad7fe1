package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/tpm"
)

type recordingNotifier []string

func (r *recordingNotifier) Notify(state string) error {
	*r = append(*r, state)
	return nil
}

// TestGuardStates feeds the guard the results a writer returns and checks
// when the agent may ping the watchdog and when it stops.
func TestGuardStates(t *testing.T) {
	unreachable := fmt.Errorf("%w at tcp:127.0.0.1:1: send: broken pipe", tpm.ErrUnreachable)
	steps := []struct {
		name      string
		err       error
		appending bool
		canRecord bool
		stopped   bool
	}{
		{"recorded", nil, true, true, false},
		{"extend_lost", &logfile.ExtendError{Index: 3, Err: unreachable}, true, false, false},
		{"tpm_still_gone", unreachable, false, false, false},
		{"tpm_back_and_agrees", nil, false, true, false},
		{"disk_full", fmt.Errorf("append to log x: %w", syscall.ENOSPC), true, false, false},
		{"verify_ok_but_append_still_failed", nil, false, false, false},
		{"append_works_again", nil, true, true, false},
		{"stopping", context.Canceled, false, true, false},
		{"log_deleted", fmt.Errorf("%w: x was deleted", logfile.ErrLogLost), true, false, true},
	}
	var cause error
	g := newGuard(nil, func(err error) { cause = err }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var sent recordingNotifier
	n := gatedNotifier{&sent, g}
	for _, s := range steps {
		g.observe(s.err, s.appending)
		sent = nil
		n.Notify("WATCHDOG=1")
		n.Notify("STATUS=x")
		if got := g.canRecord() == nil; got != s.canRecord {
			t.Errorf("after %s: can record = %v, want %v", s.name, got, s.canRecord)
		}
		if pinged := len(sent) == 2; pinged != s.canRecord {
			t.Errorf("after %s: notifications %q; want the watchdog ping only when the agent can record", s.name, sent)
		}
		if got := cause != nil; got != s.stopped {
			t.Errorf("after %s: stopped = %v (%v), want %v", s.name, got, cause, s.stopped)
		}
	}
	if !errors.Is(cause, errLostGround) || !errors.Is(cause, logfile.ErrLogLost) {
		t.Errorf("stop cause = %v, want errLostGround wrapping ErrLogLost", cause)
	}
	for _, err := range []error{&logfile.DivergenceError{Reset: true}, &eventlog.ReplayError{}, logfile.ErrOtherBoot} {
		if !lostGround(err) {
			t.Errorf("lostGround(%T) = false, want true", err)
		}
	}
}
