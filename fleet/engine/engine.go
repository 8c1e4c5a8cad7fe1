package engine

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-sev-guest/verify/trust"
	"github.com/rimon-dev/rimon/fleet"
)

// Options configure an [Engine]. The zero value of each field is a safe
// default.
type Options struct {
	// Owner names this replica: it leases agents under this name, and
	// sends it to agents as the Rimon-Verifier header. Default "rimon".
	Owner string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Concurrency bounds the rounds in progress at once (default 64).
	Concurrency int
	// Lease is how long a claimed agent stays this replica's (default
	// twice Timeout plus 30 seconds).
	Lease time.Duration
	// Client returns the HTTP client to ask an agent with. Default: one
	// client per CA, which for an https URL trusts only Spec.AgentCA
	// (the system roots when empty), and plain HTTP for an http URL.
	Client func(s fleet.Spec) (*http.Client, error)
	// MaxEvidence bounds one answer, header and log (default and at most
	// attest.MaxEvidence); past it the agent is invalid.
	MaxEvidence int64
	// Timeout bounds one round, fetch and verification (default 30 s).
	Timeout time.Duration
	// ClaimEvery is the scheduler's tick (default 250 ms): how late a due
	// agent may be noticed.
	ClaimEvery time.Duration
	// MaxBackoff caps the wait between rounds of an unreachable agent
	// (default 10 minutes, or the interval when longer).
	MaxBackoff time.Duration
	// PushGrace is how long past its interval a push agent may stay
	// silent before it is unreachable (default 30 s).
	PushGrace time.Duration
	// Metrics receives the measurements (default: discarded).
	Metrics fleet.Metrics
	// Logger receives the engine's log (default: discarded).
	Logger *slog.Logger
	// AzureRoots replaces AMD's roots for Azure evidence (tests only; see
	// verifier.TestRoots).
	AzureRoots map[string][]*trust.AMDRootCerts
}

// Engine attests the agents of a store. Its methods are safe for
// concurrent use.
type Engine struct {
	store fleet.Store
	o     Options
	log   *slog.Logger
	m     fleet.Metrics

	wakeMu sync.Mutex
	woken  map[string]bool
	wakeC  chan struct{}
	doneC  chan struct{}

	flightMu sync.Mutex
	inflight map[int64]bool
	busy     atomic.Int64

	clientMu sync.Mutex
	clients  map[string]*http.Client

	refs   refCache
	nonces nonceBook

	pushMu  sync.Mutex
	pushing map[int64]bool // agents whose push is being verified
}

var _ fleet.Engine = (*Engine)(nil)

// New returns an engine over store; [Engine.Run] starts it.
func New(store fleet.Store, o Options) *Engine {
	if o.Owner == "" {
		o.Owner = "rimon"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Lease <= 0 {
		o.Lease = 2*o.Timeout + 30*time.Second
	}
	if o.ClaimEvery <= 0 {
		o.ClaimEvery = 250 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Minute
	}
	if o.PushGrace <= 0 {
		o.PushGrace = 30 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = fleet.NopMetrics{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var db NonceStore
	if ns, ok := store.(NonceStore); ok {
		db = ns
	}
	return &Engine{store: store, o: o, log: o.Logger, m: o.Metrics,
		woken: map[string]bool{}, wakeC: make(chan struct{}, 1), doneC: make(chan struct{}, 1),
		inflight: map[int64]bool{}, clients: map[string]*http.Client{},
		refs: refCache{parsed: map[string]*parsedRef{}, byName: map[string]refEntry{}}, nonces: nonceBook{db: db, m: map[string]pushNonce{}}}
}

// Wake asks for the named agent to be attested soon, even before it is
// due (after it was added, changed or cleared). A compromised agent, or
// one that pushes, is not.
func (e *Engine) Wake(name string) {
	e.wakeMu.Lock()
	if len(e.woken) < 10000 {
		e.woken[name] = true
	}
	e.wakeMu.Unlock()
	select {
	case e.wakeC <- struct{}{}:
	default:
	}
}

type job struct {
	a     *fleet.Agent
	owner string // "" for a round that holds no lease (Wake)
}

// Run attests agents until ctx ends; it returns ctx's error after the
// rounds in progress have ended.
func (e *Engine) Run(ctx context.Context) error {
	jobs := make(chan job, e.o.Concurrency)
	var wg sync.WaitGroup
	for range e.o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				e.round(ctx, j)
				e.flightMu.Lock()
				delete(e.inflight, j.a.ID)
				e.flightMu.Unlock()
				if e.busy.Add(-1) <= int64(e.o.Concurrency/2) {
					select {
					case e.doneC <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	tick := time.NewTicker(e.o.ClaimEvery)
	defer tick.Stop()
	for {
		e.claim(ctx, jobs)
		e.wakeUp(ctx, jobs)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-e.wakeC:
		case <-e.doneC:
		}
	}
}

// claim takes as many due agents as there are free workers, repeatedly
// while batches come back full.
func (e *Engine) claim(ctx context.Context, jobs chan<- job) {
	for ctx.Err() == nil {
		free := e.o.Concurrency - int(e.busy.Load())
		if free <= 0 {
			return
		}
		start := time.Now()
		agents, err := e.store.Claim(ctx, e.o.Owner, e.o.Now(), e.o.Lease, free)
		e.m.DB("claim", time.Since(start))
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("claim due agents", "err", err)
			}
			return
		}
		for _, a := range agents {
			if !e.start(a, e.o.Owner, jobs) {
				// Already in progress here (a Wake): give the lease back.
				e.store.Release(ctx, a.ID, e.o.Owner)
			}
		}
		if len(agents) < free {
			return
		}
	}
}

// start hands an agent to a worker unless it is in progress already.
func (e *Engine) start(a *fleet.Agent, owner string, jobs chan<- job) bool {
	e.flightMu.Lock()
	if e.inflight[a.ID] {
		e.flightMu.Unlock()
		return false
	}
	e.inflight[a.ID] = true
	e.flightMu.Unlock()
	e.busy.Add(1)
	jobs <- job{a: a, owner: owner}
	return true
}

// AgentClaimer is what a store offers to lease one agent out of turn
// (sqlstore does): see sqlstore.Store.ClaimAgent. It returns nil, nil when
// the agent is leased or compromised.
type AgentClaimer interface {
	ClaimAgent(ctx context.Context, name, owner string, now time.Time, lease time.Duration) (*fleet.Agent, error)
}

// wakeUp starts the woken agents that are not due (those that were are
// claimed already). With a store that is an [AgentClaimer] each is leased
// first, like any round; with another, it runs without a lease and the
// store's version check keeps its result from overwriting a newer one.
func (e *Engine) wakeUp(ctx context.Context, jobs chan<- job) {
	e.wakeMu.Lock()
	names := e.woken
	e.woken = map[string]bool{}
	e.wakeMu.Unlock()
	now := e.o.Now()
	for name := range names {
		if e.o.Concurrency-int(e.busy.Load()) <= 0 {
			e.Wake(name) // next time
			continue
		}
		a, err := e.store.Agent(ctx, name)
		if err != nil {
			if !errors.Is(err, fleet.ErrNotFound) && ctx.Err() == nil {
				e.log.Warn("woken agent", "agent", name, "err", err)
			}
			continue
		}
		if a.Push || a.Status == fleet.Compromised || (a.LeaseOwner != "" && a.LeaseOwner != e.o.Owner && a.LeaseUntil.After(now)) {
			continue
		}
		if ac, ok := e.store.(AgentClaimer); ok {
			// Leased like any round, so that no other replica polls it
			// meanwhile.
			e.flightMu.Lock()
			busy := e.inflight[a.ID]
			e.flightMu.Unlock()
			if busy {
				continue
			}
			a, err = ac.ClaimAgent(ctx, name, e.o.Owner, now, e.o.Lease)
			if err != nil || a == nil {
				if err != nil && !errors.Is(err, fleet.ErrNotFound) && ctx.Err() == nil {
					e.log.Warn("claim woken agent", "agent", name, "err", err)
				}
				continue
			}
			if !e.start(a, e.o.Owner, jobs) {
				e.store.Release(ctx, a.ID, e.o.Owner)
			}
			continue
		}
		e.start(a, "", jobs)
	}
}

// jitter spreads an interval by ±10%.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

// interval is the agent's interval, defaulted.
func interval(a *fleet.Agent) time.Duration {
	if a.Interval < fleet.MinInterval {
		if a.Interval <= 0 {
			return fleet.DefaultInterval
		}
		return fleet.MinInterval
	}
	return a.Interval
}

// backoff is the wait after the n-th unreachable round in a row.
func (e *Engine) backoff(a *fleet.Agent, n int) time.Duration {
	iv := interval(a)
	limit := max(e.o.MaxBackoff, iv)
	d := iv
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return jitter(min(d, limit))
}

// client returns the HTTP client for an agent.
func (e *Engine) client(s fleet.Spec) (*http.Client, error) {
	if e.o.Client != nil {
		c, err := e.o.Client(s)
		if err != nil {
			return nil, err
		}
		rt := c.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
		cc := *c
		cc.Transport = ownerHeader{rt, e.o.Owner}
		return &cc, nil
	}
	e.clientMu.Lock()
	defer e.clientMu.Unlock()
	if c, ok := e.clients[s.AgentCA]; ok {
		return c, nil
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConns: 1024, MaxIdleConnsPerHost: e.o.Concurrency, IdleConnTimeout: 2 * time.Minute,
		TLSHandshakeTimeout: 10 * time.Second, TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	if s.AgentCA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(s.AgentCA)) {
			return nil, errors.New("agent_ca: no PEM certificate")
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	c := &http.Client{Transport: ownerHeader{tr, e.o.Owner},
		CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("the agent redirected: not followed") }}
	if len(e.clients) < 1024 {
		e.clients[s.AgentCA] = c
	}
	return c, nil
}

// ownerHeader adds Rimon-Verifier: OWNER to every request.
type ownerHeader struct {
	rt    http.RoundTripper
	owner string
}

func (o ownerHeader) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Rimon-Verifier", o.owner)
	return o.rt.RoundTrip(r)
}
