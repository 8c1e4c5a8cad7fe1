package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// Delivery states ([fleet.Delivery.State]).
const (
	StatePending   = "pending"
	StateDelivered = "delivered"
	StateFailed    = "failed"
	StateDisabled  = "disabled"
)

// Defaults of [Options].
const (
	DefaultTimeout     = 15 * time.Second
	DefaultConcurrency = 16
	DefaultPerEndpoint = 4
	DefaultMaxAge      = 24 * time.Hour
	DefaultPoll        = time.Second
	DefaultBatch       = 100
	// FirstBackoff is the delay after a first failure; each further
	// failure doubles it, up to MaxBackoff.
	FirstBackoff = 5 * time.Second
	MaxBackoff   = 2 * time.Hour
)

// Options configure a [Sender]. The zero value of every field but Store
// and Secrets is a working default.
type Options struct {
	// Store holds the outbox.
	Store fleet.Store
	// Secrets maps each endpoint URL to its signing key ([ParseSecret]).
	// A delivery to an endpoint without a key is never sent unsigned: the
	// attempt fails with an error saying so.
	Secrets map[string][]byte
	// Client sends the requests; nil means a client that follows no
	// redirects (a 3xx is a failure, as the specification advises).
	// Its own Timeout, if any, applies on top of Timeout.
	Client *http.Client
	// Timeout bounds one request, response included (default 15 s).
	Timeout time.Duration
	// Concurrency bounds the requests in flight in all (default 16);
	// PerEndpoint bounds them per endpoint (default 4), so that an
	// endpoint that hangs holds at most PerEndpoint of them.
	Concurrency int
	PerEndpoint int
	// MaxAge is how long after its creation a delivery is still retried
	// (default 24 h); the first failed attempt at or after it gives up.
	MaxAge time.Duration
	// Poll is how often the outbox is read when nothing else wakes the
	// sender (default 1 s); [Sender.Notify] wakes it at once.
	Poll time.Duration
	// Batch is how many due deliveries one read of the outbox takes
	// (default 100).
	Batch int
	// Now is the clock (default time.Now); delivery times, backoff and
	// the webhook-timestamp header use it.
	Now func() time.Time
	// Jitter returns a number in [0, 1) (default math/rand/v2.Float64).
	Jitter func() float64
	// Metrics counts attempts and times the store's outbox operations
	// (default none).
	Metrics fleet.Metrics
	// Logger reports store errors (default: discarded). Endpoint URLs
	// are logged without their query and user info.
	Logger *slog.Logger
}

// DeliveryClaimer is what a store offers to share its outbox among
// several senders (sqlstore does): see sqlstore.Store.ClaimDeliveries.
type DeliveryClaimer interface {
	// ClaimDeliveries returns up to limit pending deliveries due at now,
	// their next attempt moved to now+hold in the same transaction.
	ClaimDeliveries(ctx context.Context, now time.Time, hold time.Duration, limit int) ([]*fleet.Delivery, error)
}

// Sender delivers the outbox: see [Sender.Run].
type Sender struct {
	o     Options
	lease time.Duration
	qcap  int

	notify chan struct{}
	freed  chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	gen      uint64
	eps      map[string]*endpoint
	held     map[string]*item
	finished map[string]uint64
	inflight int
}

// endpoint is what the sender knows of one receiver (in memory only).
type endpoint struct {
	url       string
	queue     []*item
	inflight  int
	failures  int       // consecutive endpoint-level failures
	downUntil time.Time // no request before this (backoff, Retry-After)
	lastErr   string
	disabled  bool
	// pace is the observed duration of a request (a moving average);
	// horizon is when the last delivery deferred for a full line is due.
	pace    time.Duration
	horizon time.Time
	// began holds the start of each request in flight (real time).
	began map[*item]time.Time
}

// initialPace is the guess of a request's duration before one is seen.
const initialPace = 20 * time.Millisecond

// item is a claimed delivery: d is what will be written, orig the row as
// read (to give back on shutdown), claimed when it was claimed.
type item struct {
	d       fleet.Delivery
	orig    fleet.Delivery
	claimed time.Time
}

// NewSender checks the options and returns a sender.
func NewSender(o Options) (*Sender, error) {
	if o.Store == nil {
		return nil, errors.New("webhook: Options.Store is nil")
	}
	for u, k := range o.Secrets {
		if len(k) == 0 {
			return nil, fmt.Errorf("webhook: endpoint %s has an empty secret", redact(u))
		}
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.PerEndpoint <= 0 {
		o.PerEndpoint = DefaultPerEndpoint
	}
	if o.PerEndpoint > o.Concurrency {
		o.PerEndpoint = o.Concurrency
	}
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Batch <= 0 {
		o.Batch = DefaultBatch
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	if o.Metrics == nil {
		o.Metrics = fleet.NopMetrics{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Sender{
		o:        o,
		qcap:     4 * o.PerEndpoint,
		notify:   make(chan struct{}, 1),
		freed:    make(chan struct{}, 1),
		eps:      map[string]*endpoint{},
		held:     map[string]*item{},
		finished: map[string]uint64{},
	}
	// A claimed delivery waits at most qcap/PerEndpoint requests of its
	// endpoint before its own: the lease covers that and its own request
	// with room to spare, so that no claim expires while held.
	s.lease = time.Duration(s.qcap/o.PerEndpoint+2) * o.Timeout
	return s, nil
}

// Notify wakes the sender to read the outbox now (after new deliveries
// were queued). It never blocks.
func (s *Sender) Notify() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Run delivers the outbox until ctx ends, then gives back what it had
// claimed but not sent and returns nil.
//
// Each round reads the due deliveries (oldest first) and claims each by
// moving its next attempt past a lease, so that the next read moves on to
// others while it waits for its turn in its endpoint's line (4 x
// PerEndpoint long). A delivery that finds the line full stays due; but
// when a whole read finds nothing it can move, the deliveries waiting for
// full lines are deferred to when their lines should have room, at each
// endpoint's observed pace, so that the next read gets past that backlog
// to other endpoints.
// Requests run in their own goroutines, at most PerEndpoint per endpoint
// and Concurrency in all, each bounded by Timeout, so that neither a
// receiver that is down or slow nor another's backlog holds back the
// rest, and the store is only ever held for one short write. A process
// that dies with claims held loses nothing: the claims lapse after the
// lease ((4 + 2) x Timeout) and the deliveries are sent again.
//
// The outcome of every attempt is stored ([fleet.Store.UpdateDelivery]):
//   - 2xx: delivered (and only then);
//   - 410 Gone: the endpoint is disabled ([fleet.Store.DisableEndpoint])
//     and its deliveries marked disabled;
//   - 429 or 503 with Retry-After (seconds or an HTTP date): the next
//     attempt, and the endpoint's next request, waits that long;
//   - anything else (network error, timeout, 3xx, 4xx, 5xx): exponential
//     backoff from [FirstBackoff] doubling to [MaxBackoff], with jitter
//     (between half and all of the step), until the first failure at
//     least MaxAge after the delivery's creation, which marks it failed.
//
// A network error, a timeout, 408, 429, 502, 503 and 504 also hold back
// the endpoint's other deliveries until that attempt's next time, without
// counting attempts for them. Every attempt of a delivery carries the same
// webhook-id and is signed anew with the attempt's time.
//
// Several senders may share one database (replicas) when the store is a
// [DeliveryClaimer] (sqlstore is): each delivery is claimed by one of them
// in the database for the lease, and one whose sender died is due again
// when the lease ends (at least once, never lost). With a store that is
// not, run one Sender per database: two would send the same deliveries.
func (s *Sender) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait := s.pass(ctx)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			s.wg.Wait()
			s.giveBack()
			return nil
		case <-s.notify:
		case <-s.freed:
		case <-timer.C:
		}
	}
}

// pass reads the outbox once, claims what can go, starts requests, and
// says how long to wait before the next pass.
func (s *Sender) pass(ctx context.Context) time.Duration {
	if ctx.Err() != nil {
		return s.o.Poll
	}
	s.mu.Lock()
	s.gen++
	gen := s.gen
	for id, g := range s.finished {
		if g < gen {
			delete(s.finished, id)
		}
	}
	s.mu.Unlock()

	now := s.o.Now()
	t := time.Now()
	var rows []*fleet.Delivery
	var err error
	dc, claimed := s.o.Store.(DeliveryClaimer)
	if claimed {
		rows, err = dc.ClaimDeliveries(ctx, now, s.lease, s.o.Batch)
		s.o.Metrics.DB("claim_deliveries", time.Since(t))
		for _, d := range rows {
			d.Next = now // as it was: due (what a give-back restores)
		}
	} else {
		rows, err = s.o.Store.DueDeliveries(ctx, now, s.o.Batch)
		s.o.Metrics.DB("due_deliveries", time.Since(t))
	}
	if err != nil {
		if ctx.Err() == nil {
			s.o.Logger.Warn("webhook outbox unreadable", "err", err)
		}
		return s.o.Poll
	}
	wrote := 0
	var full []*item // rows whose endpoint's line is full, left as they are
	for i, d := range rows {
		if ctx.Err() != nil {
			if claimed {
				// Stopping: the claims not taken up are given back.
				for _, d := range rows[i:] {
					s.mu.Lock()
					mine := s.held[d.ID] != nil
					s.mu.Unlock()
					if !mine {
						s.store(ctx, d)
					}
				}
			}
			break
		}
		s.mu.Lock()
		// Held: ours already (its claim lapsed; it is still in line).
		// Finished during this pass: the row read may predate its outcome.
		if s.held[d.ID] != nil || s.finished[d.ID] >= gen {
			s.mu.Unlock()
			continue
		}
		ep := s.endpoint(d.Endpoint)
		it := &item{d: *d, orig: *d, claimed: now}
		var claim bool
		switch {
		case ep.disabled:
			it.d.State = StateDisabled
			it.d.LastError = "the endpoint answered 410 Gone to another delivery"
		case now.Before(ep.downUntil) && now.Sub(d.Created) < s.o.MaxAge:
			it.d.Next = ep.downUntil.Add(time.Duration(s.o.Jitter() * float64(time.Second)))
			it.d.LastError = "not attempted: the endpoint failed another delivery: " + ep.lastErr
		case len(ep.queue)+ep.inflight < s.qcap:
			it.d.Next = now.Add(s.lease)
			claim = true
			s.held[d.ID] = it
			if claimed {
				// Claimed in the database already: into the line.
				ep.queue = append(ep.queue, it)
				s.mu.Unlock()
				wrote++
				continue
			}
		default:
			// The line is full: leave the row due for now; it is read
			// again when a request ends.
			full = append(full, it)
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		if s.write(ctx, it, claim) {
			wrote++
		}
	}
	if len(rows) == s.o.Batch && wrote == 0 && ctx.Err() == nil {
		// Nothing in a full batch could move: the next read would return
		// the same rows. Defer the waiting ones, to when their lines
		// should have room, so that the next read gets past them.
		for _, it := range full {
			s.mu.Lock()
			it.d.Next = s.later(s.endpoint(it.d.Endpoint), now)
			s.mu.Unlock()
			if claimed {
				// Written even if a shutdown began meanwhile: left
				// unwritten, the row would stay claimed for a whole lease.
				d := it.d
				s.store(ctx, &d)
				wrote++
				continue
			}
			if s.write(ctx, it, false) {
				wrote++
			}
		}
	} else if claimed {
		// Claimed but not taken: due again at once for whichever sender
		// has room.
		for _, it := range full {
			d := it.orig
			s.store(ctx, &d)
		}
	}
	s.start(ctx)
	if len(rows) == s.o.Batch && wrote > 0 {
		return 0
	}
	return s.o.Poll
}

// write stores a decision of pass; a claimed delivery then joins its
// endpoint's line and may start at once.
func (s *Sender) write(ctx context.Context, it *item, claim bool) bool {
	d := it.d
	t := time.Now()
	err := s.o.Store.UpdateDelivery(ctx, &d)
	s.o.Metrics.DB("update_delivery", time.Since(t))
	if err != nil {
		if ctx.Err() == nil {
			s.o.Logger.Warn("webhook delivery not updated", "id", d.ID, "err", err)
		}
		if claim {
			s.mu.Lock()
			delete(s.held, d.ID)
			s.mu.Unlock()
		}
		return false
	}
	if claim {
		s.mu.Lock()
		ep := s.endpoint(d.Endpoint)
		ep.queue = append(ep.queue, it)
		s.mu.Unlock()
		s.start(ctx)
	}
	return true
}

// endpoint returns the state of url; s.mu is held.
func (s *Sender) endpoint(url string) *endpoint {
	ep := s.eps[url]
	if ep == nil {
		ep = &endpoint{url: url, pace: initialPace, began: map[*item]time.Time{}}
		s.eps[url] = ep
	}
	return ep
}

// later is when a delivery that found its endpoint's line full comes back:
// after the line and the deliveries deferred before it, at the endpoint's
// observed pace, so that a backlog is spread over time and read again
// about when it can be sent, instead of every pass. s.mu is held.
func (s *Sender) later(ep *endpoint, now time.Time) time.Time {
	// A request still running is at least as slow as its age: an
	// endpoint that hangs is known as slow before its first timeout.
	pace := ep.pace
	for _, b := range ep.began {
		pace = max(pace, time.Since(b))
	}
	per := max(pace/time.Duration(s.o.PerEndpoint), time.Millisecond)
	start := now.Add(time.Duration(len(ep.queue)+ep.inflight) * per)
	if ep.horizon.Before(start) {
		ep.horizon = start
	}
	ep.horizon = ep.horizon.Add(per)
	return ep.horizon
}

// start begins the requests the limits allow.
func (s *Sender) start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ep := range s.eps {
		for len(ep.queue) > 0 && ep.inflight < s.o.PerEndpoint && s.inflight < s.o.Concurrency {
			it := ep.queue[0]
			ep.queue[0] = nil
			ep.queue = ep.queue[1:]
			ep.inflight++
			s.inflight++
			s.wg.Add(1)
			go s.deliver(ctx, ep, it)
		}
	}
}

// deliver makes one attempt of a claimed delivery and stores its outcome.
func (s *Sender) deliver(ctx context.Context, ep *endpoint, it *item) {
	defer func() {
		s.mu.Lock()
		ep.inflight--
		s.inflight--
		delete(s.held, it.d.ID)
		s.finished[it.d.ID] = s.gen
		s.mu.Unlock()
		s.wg.Done()
		select {
		case s.freed <- struct{}{}:
		default:
		}
	}()
	d := &it.d
	now := s.o.Now()

	s.mu.Lock()
	disabled, downUntil, lastErr := ep.disabled, ep.downUntil, ep.lastErr
	s.mu.Unlock()
	switch {
	case disabled:
		d.State = StateDisabled
		d.LastError = "the endpoint answered 410 Gone to another delivery"
		s.store(ctx, d)
		return
	case now.Before(downUntil) && now.Sub(d.Created) < s.o.MaxAge:
		// Another delivery failed while this one waited: wait with it.
		d.Next = downUntil.Add(time.Duration(s.o.Jitter() * float64(time.Second)))
		d.LastError = "not attempted: the endpoint failed another delivery: " + lastErr
		s.store(ctx, d)
		return
	}

	began := time.Now() // the pace is real time, whatever the clock says
	s.mu.Lock()
	ep.began[it] = began
	s.mu.Unlock()
	status, retryAfter, hasRetryAfter, err := s.send(ctx, d, now)
	took := time.Since(began)
	s.mu.Lock()
	delete(ep.began, it)
	s.mu.Unlock()
	if err != nil && ctx.Err() != nil {
		// Shutting down: the attempt did not finish; give the claim back.
		s.restore(ctx, it)
		return
	}
	now = s.o.Now()
	s.mu.Lock()
	ep.pace = (4*ep.pace + took) / 5
	s.mu.Unlock()
	d.Attempts++
	d.LastStatus = status
	ok := err == nil && status >= 200 && status <= 299
	s.o.Metrics.Delivery(ok)
	switch {
	case ok:
		d.State = StateDelivered
		d.LastError = ""
		d.Next = now
		s.mu.Lock()
		ep.failures, ep.downUntil, ep.lastErr = 0, time.Time{}, ""
		s.mu.Unlock()
	case err == nil && status == http.StatusGone:
		d.State = StateDisabled
		d.LastError = "410 Gone: the endpoint is disabled"
		d.Next = now
		s.mu.Lock()
		ep.disabled = true
		s.mu.Unlock()
		// Loud: no alert reaches this endpoint until the verifier starts
		// again with it (anything on the path can answer 410).
		s.o.Logger.Error("webhook endpoint answered 410 Gone: disabled, no more deliveries to it until the verifier is restarted with it",
			"endpoint", redact(d.Endpoint), "delivery", d.ID)
		if derr := s.o.Store.DisableEndpoint(context.WithoutCancel(ctx), d.Endpoint); derr != nil {
			s.o.Logger.Warn("webhook endpoint not disabled", "endpoint", redact(d.Endpoint), "err", derr)
		}
	default:
		if err != nil {
			d.LastError = err.Error()
		} else {
			d.LastError = fmt.Sprintf("HTTP %d %s", status, http.StatusText(status))
		}
		endpointWide := err != nil || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests ||
			status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
		s.mu.Lock()
		n := d.Attempts
		if endpointWide {
			ep.failures++
			n = max(n, ep.failures)
		}
		s.mu.Unlock()
		switch {
		case now.Sub(d.Created) >= s.o.MaxAge:
			d.State = StateFailed
			d.Next = now
		case hasRetryAfter:
			d.Next = now.Add(min(retryAfter, s.o.MaxAge))
		default:
			d.Next = now.Add(s.backoff(n))
		}
		if endpointWide {
			s.mu.Lock()
			if d.State == StatePending && d.Next.After(ep.downUntil) {
				ep.downUntil = d.Next
			}
			ep.lastErr = d.LastError
			s.mu.Unlock()
		}
	}
	s.store(ctx, d)
}

// send makes the request: the status, the Retry-After delay of a 429 or
// 503 (hasRetryAfter false when absent or unreadable), or an error.
func (s *Sender) send(ctx context.Context, d *fleet.Delivery, now time.Time) (status int, retryAfter time.Duration, hasRetryAfter bool, err error) {
	secret := s.o.Secrets[d.Endpoint]
	if len(secret) == 0 {
		return 0, 0, false, errors.New("no signing secret is configured for this endpoint: not sent unsigned")
	}
	rctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, d.Endpoint, bytes.NewReader(d.Payload))
	if err != nil {
		return 0, 0, false, fmt.Errorf("bad endpoint URL: %v", unwrapURL(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "rimon-webhook/1")
	req.Header.Set(HeaderID, d.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, Sign(secret, d.ID, now, d.Payload))
	resp, err := s.o.Client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return 0, 0, false, fmt.Errorf("no answer within %s", s.o.Timeout)
		}
		return 0, 0, false, unwrapURL(err)
	}
	// Drain a little so that the connection can be reused; the body
	// itself means nothing.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		retryAfter, hasRetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), s.o.Now())
	}
	return resp.StatusCode, retryAfter, hasRetryAfter, nil
}

// ParseRetryAfter reads a Retry-After value (RFC 9110, 10.2.3): a count of
// seconds or an HTTP date, as a delay from now (never negative). ok is
// false when v is empty or neither.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// backoff is the jittered delay after the n-th failure (n >= 1).
func (s *Sender) backoff(n int) time.Duration {
	step := Backoff(n)
	return step/2 + time.Duration(s.o.Jitter()*float64(step/2))
}

// Backoff is the un-jittered delay after the n-th consecutive failure:
// [FirstBackoff] doubled n-1 times, at most [MaxBackoff]. A sender waits
// between half of it and all of it.
func Backoff(n int) time.Duration {
	d := FirstBackoff
	for i := 1; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// store writes an outcome, even when ctx has just ended (an answer that
// arrived must not be lost to a shutdown).
func (s *Sender) store(ctx context.Context, d *fleet.Delivery) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	t := time.Now()
	err := s.o.Store.UpdateDelivery(wctx, d)
	s.o.Metrics.DB("update_delivery", time.Since(t))
	if err != nil {
		// The claim stays: the delivery is sent again when it lapses.
		s.o.Logger.Warn("webhook delivery outcome not stored", "id", d.ID, "state", d.State, "err", err)
	}
}

// restore gives a claimed delivery back as it was read, if the claim is
// still ours (within its lease).
func (s *Sender) restore(ctx context.Context, it *item) {
	if s.o.Now().Sub(it.claimed) >= s.lease {
		return
	}
	d := it.orig
	s.store(ctx, &d)
}

// giveBack restores the deliveries claimed but never started.
func (s *Sender) giveBack() {
	s.mu.Lock()
	var items []*item
	for _, ep := range s.eps {
		items = append(items, ep.queue...)
		ep.queue = nil
	}
	for _, it := range items {
		delete(s.held, it.d.ID)
	}
	s.mu.Unlock()
	for _, it := range items {
		s.restore(context.Background(), it)
	}
}

// unwrapURL drops the URL from a client error (it may carry a token in its
// path or query; the endpoint is stored beside the error anyway).
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redact shows an endpoint without user info, path and query, which may
// hold credentials.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Scheme + "://" + p.Host
}
