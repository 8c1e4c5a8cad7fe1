// Package metrics reports the fleet verifier's work to Prometheus
// (client_golang): it implements [fleet.Metrics] and counts the agents
// by state from the store when scraped.
//
// # Metrics
//
// All names carry one rimon_ prefix, durations are in seconds and
// counters end in _total. No metric has a label per agent: the label
// values are the six states, an outcome, or a store operation, so the
// number of series does not grow with the fleet.
//
//	rimon_attestations_total{result}          attestations by outcome: a state, or "error" (nothing stored)
//	rimon_attestation_duration_seconds        histogram of one attestation's duration (fetch, verify, store)
//	rimon_schedule_lag_seconds                histogram of how late attestations start after their due time
//	rimon_records_verified_total              log records verified
//	rimon_webhook_deliveries_total{result}    webhook delivery attempts: "success" (2xx) or "failure"
//	rimon_db_operation_duration_seconds{op}   histogram of store operations' durations
//	rimon_agents{state}                       agents per state, counted by the store at scrape time
//
// rimon_agents is read from [fleet.Store.CountByStatus] on every scrape,
// within a timeout ([DefaultScrapeTimeout]); when the store cannot answer,
// the scrape fails (promhttp answers 500) rather than showing numbers that
// are no longer true.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rimon-dev/rimon/fleet"
)

// DefaultScrapeTimeout bounds the store's count of agents per state
// during a scrape.
const DefaultScrapeTimeout = 5 * time.Second

// ResultError is the attestation outcome when nothing could be stored.
const ResultError = "error"

// Delivery results.
const (
	DeliverySuccess = "success"
	DeliveryFailure = "failure"
)

// Metrics implements [fleet.Metrics] on Prometheus collectors. Its methods
// are safe for concurrent use.
type Metrics struct {
	attestations *prometheus.CounterVec
	duration     prometheus.Histogram
	lag          prometheus.Histogram
	records      prometheus.Counter
	deliveries   *prometheus.CounterVec
	db           *prometheus.HistogramVec
	agents       *agentsCollector
}

var _ fleet.Metrics = (*Metrics)(nil)

// New is [Register] for wiring code: it panics, as
// prometheus.MustRegister does, when reg refuses the collectors, which
// happens only when reg already holds different collectors under the same
// names.
func New(reg prometheus.Registerer, store fleet.Store) *Metrics {
	m, err := Register(reg, store)
	if err != nil {
		panic(err)
	}
	return m
}

// Register creates the collectors and registers them with reg (nil: none
// is registered, the counts are kept all the same). A collector reg
// already holds from an earlier Register (same name and labels) is reused,
// so that two parts of one process can report to one registry.
func Register(reg prometheus.Registerer, store fleet.Store) (*Metrics, error) {
	m := &Metrics{
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rimon_attestations_total",
			Help: "Attestations of agents by outcome: the resulting state, or error when nothing could be stored.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rimon_attestation_duration_seconds",
			Help:    "Duration of one attestation: fetching or receiving the evidence, verifying and storing it.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rimon_schedule_lag_seconds",
			Help:    "How late attestations started after their due time.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300},
		}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rimon_records_verified_total",
			Help: "Log records verified.",
		}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rimon_webhook_deliveries_total",
			Help: "Webhook delivery attempts by result: success (a 2xx answer) or failure.",
		}, []string{"result"}),
		db: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rimon_db_operation_duration_seconds",
			Help:    "Duration of store operations by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
		}, []string{"op"}),
	}
	m.agents = &agentsCollector{
		store: store,
		desc: prometheus.NewDesc("rimon_agents",
			"Registered agents by state, counted by the store at scrape time.", []string{"state"}, nil),
		db: m.db,
	}
	m.agents.timeout.Store(int64(DefaultScrapeTimeout))
	// Every series exists from the start, at zero: a rate over a
	// result that has not happened yet is 0, not absent.
	for _, s := range fleet.Statuses {
		m.attestations.WithLabelValues(string(s))
	}
	m.attestations.WithLabelValues(ResultError)
	m.deliveries.WithLabelValues(DeliverySuccess)
	m.deliveries.WithLabelValues(DeliveryFailure)

	if reg == nil {
		return m, nil
	}
	var errs []error
	register := func(c prometheus.Collector, use func(prometheus.Collector)) {
		err := reg.Register(c)
		var are prometheus.AlreadyRegisteredError
		switch {
		case err == nil:
		case errors.As(err, &are):
			use(are.ExistingCollector)
		default:
			errs = append(errs, err)
		}
	}
	register(m.attestations, func(c prometheus.Collector) { m.attestations = c.(*prometheus.CounterVec) })
	register(m.duration, func(c prometheus.Collector) { m.duration = c.(prometheus.Histogram) })
	register(m.lag, func(c prometheus.Collector) { m.lag = c.(prometheus.Histogram) })
	register(m.records, func(c prometheus.Collector) { m.records = c.(prometheus.Counter) })
	register(m.deliveries, func(c prometheus.Collector) { m.deliveries = c.(*prometheus.CounterVec) })
	register(m.db, func(c prometheus.Collector) { m.db = c.(*prometheus.HistogramVec) })
	register(m.agents, func(c prometheus.Collector) { m.agents = c.(*agentsCollector) })
	if len(errs) > 0 {
		return nil, fmt.Errorf("metrics: registering the rimon_ collectors: %w", errors.Join(errs...))
	}
	return m, nil
}

// SetScrapeTimeout changes how long a scrape waits for the store's count
// of agents per state (d <= 0: [DefaultScrapeTimeout]).
func (m *Metrics) SetScrapeTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultScrapeTimeout
	}
	m.agents.timeout.Store(int64(d))
}

// Attestation counts one attestation by outcome (a state; anything that
// is not one of the six counts as "error") and observes its duration.
func (m *Metrics) Attestation(outcome fleet.Status, d time.Duration) {
	result := ResultError
	if outcome.Valid() {
		result = string(outcome)
	}
	m.attestations.WithLabelValues(result).Inc()
	m.duration.Observe(seconds(d))
}

// Lag observes how late an attestation started (an early start is 0).
func (m *Metrics) Lag(d time.Duration) { m.lag.Observe(seconds(d)) }

// Records counts n records verified.
func (m *Metrics) Records(n int) {
	if n > 0 {
		m.records.Add(float64(n))
	}
}

// Delivery counts one webhook delivery attempt.
func (m *Metrics) Delivery(ok bool) {
	if ok {
		m.deliveries.WithLabelValues(DeliverySuccess).Inc()
	} else {
		m.deliveries.WithLabelValues(DeliveryFailure).Inc()
	}
}

// DB observes one store operation's duration.
func (m *Metrics) DB(op string, d time.Duration) {
	m.db.WithLabelValues(op).Observe(seconds(d))
}

func seconds(d time.Duration) float64 { return max(d, 0).Seconds() }

// agentsCollector counts agents per state from the store at scrape time.
type agentsCollector struct {
	store   fleet.Store
	desc    *prometheus.Desc
	db      *prometheus.HistogramVec
	timeout atomic.Int64 // time.Duration
}

func (c *agentsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *agentsCollector) Collect(ch chan<- prometheus.Metric) {
	if c.store == nil {
		ch <- prometheus.NewInvalidMetric(c.desc, errors.New("rimon_agents: no store"))
		return
	}
	timeout := time.Duration(c.timeout.Load())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	type answer struct {
		counts map[fleet.Status]int
		err    error
	}
	// The store is asked in its own goroutine, so that the timeout holds
	// even for a store that does not watch ctx.
	done := make(chan answer, 1)
	start := time.Now()
	go func() {
		counts, err := c.store.CountByStatus(ctx)
		c.db.WithLabelValues("count_by_status").Observe(time.Since(start).Seconds())
		done <- answer{counts, err}
	}()
	var a answer
	select {
	case a = <-done:
	case <-ctx.Done():
		a.err = ctx.Err()
	}
	if a.err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, fmt.Errorf("rimon_agents: counting agents by state (timeout %s): %w", timeout, a.err))
		return
	}
	for _, s := range fleet.Statuses {
		m, err := prometheus.NewConstMetric(c.desc, prometheus.GaugeValue, float64(a.counts[s]), string(s))
		if err != nil {
			m = prometheus.NewInvalidMetric(c.desc, err)
		}
		ch <- m
	}
}
