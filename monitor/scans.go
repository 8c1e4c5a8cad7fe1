package monitor

import (
	"context"
	"fmt"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/measure/target"
	"github.com/rimon-dev/rimon/policy"
)

// targets lists what the policy covers now, plus the known paths it still
// covers (so that deletions are found).
func (m *Monitor) targets() []key {
	var keep []string
	for p, k := range m.known {
		if k.Present {
			keep = append(keep, p)
		}
	}
	var out []key
	for _, t := range policy.Expand(m.pol, keep...) {
		out = append(out, key{t.Kind, t.Path})
	}
	return out
}

// measureAll measures keys in parallel and returns the results in order.
// It runs outside the main goroutine: it touches nothing of m but its
// fixed configuration; seq and the budget opts are taken by the caller.
func (m *Monitor) measureAll(ctx context.Context, keys []key, seq uint64, opts measure.Options, progress func(done int)) []result {
	ts := make([]target.Target, len(keys))
	for i, k := range keys {
		ts[i] = target.Target{Kind: kindOf(k.kind), Path: k.path}
	}
	opts.Workers = m.cfg.Workers
	out := make([]result, len(keys))
	for i, o := range target.All(ctx, ts, target.Options{Budget: opts}, progress) {
		r := result{key: keys[i], seq: seq}
		if o.Err != nil {
			r.err = o.Err
			r.absent, r.notDir = classify(o.Path, o.Err)
		} else {
			r.digest, r.size, r.extra = o.Digest, o.Size, o.Extra
		}
		out[i] = r
	}
	return out
}

func (m *Monitor) initialScan(ctx context.Context) error {
	start := m.clock.Now()
	keys := m.targets()
	m.log.Info("initial scan", "targets", len(keys))
	last := start
	progress := func(done int) {
		if m.clock.Now().Sub(last) < time.Second && done < len(keys) {
			return
		}
		last = m.clock.Now()
		msg := fmt.Sprintf("initial scan: measured %d of %d", done, len(keys))
		m.notify("STATUS=" + msg)
		if m.cfg.Progress != nil {
			fmt.Fprintf(m.cfg.Progress, "\r%s", msg)
		}
	}
	m.seq++
	results := m.measureAll(ctx, keys, m.seq, m.budget(), progress)
	if m.cfg.Progress != nil && len(keys) > 0 {
		fmt.Fprintln(m.cfg.Progress)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	hashed := m.clock.Now().Sub(start)
	before := m.records
	m.applyBatch(ctx, results, eventlog.ReasonInitial)
	m.log.Info("initial scan done", "targets", len(keys), "records", m.records-before,
		"hash_seconds", hashed.Seconds(), "record_seconds", m.clock.Now().Sub(start).Seconds()-hashed.Seconds())
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
		if why != "periodic" {
			m.rescanNext = why // runs once this one is done
		}
		return
	}
	m.rescanning = true
	keys := m.targets()
	m.log.Info("rescan", "why", why, "targets", len(keys))
	m.seq++
	seq := m.seq
	opts := m.budget()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		rs := m.measureAll(ctx, keys, seq, opts, nil)
		select {
		case m.rescanDone <- rs:
		case <-ctx.Done():
		}
	}()
	// Directories may have appeared that were never watched (overflow), or
	// the watch limit may have been raised.
	m.installWatches()
}
