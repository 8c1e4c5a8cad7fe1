package agent

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/tpm"
)

// HandlerOptions configures [Handler].
type HandlerOptions struct {
	TPM     *tpm.TPM
	LogPath string
	PCRs    []int
	Banks   []crypto.Hash
	// Rate is how many quotes a second the handler takes (default 5), with
	// bursts of twice that. Requests beyond it wait their turn, clients
	// served in rotation (see [Handler]).
	Rate float64
	// PerClient is how many requests one client may have waiting or in
	// progress at once (default 2); more gets 429 Too Many Requests.
	PerClient int
	// MaxClients bounds the clients waiting at once (default 1024); more
	// gets 503 Service Unavailable.
	MaxClients int
	// MaxWait is how long a request waits for its turn (default 30s)
	// before it gets 503 with Retry-After.
	MaxWait time.Duration
	// MaxLog bounds the log served (default 256 MiB).
	MaxLog int64
	// Decorate, when set, adds to each evidence document (the Azure blob).
	Decorate func(ctx context.Context, ev *attest.Evidence) error
	// Unrecorded, when set, lists the paths the agent could not record
	// yet; they go into each evidence header.
	Unrecorded func() []attest.Unrecorded
}

// maxWriters bounds the responses written at once, and so the copies of
// the log held in memory.
const maxWriters = 4

// Handler serves GET /v1/evidence?nonce=HEX[&bank=sha256...][&since=N]:
// fresh evidence bound to the caller's nonce, quoting the banks asked for
// (all of the handler's banks by default), with the log from record N on
// when since is given (the caller holds the earlier records).
//
// # Bounded work, fair turns
//
// Quotes are taken one at a time at [HandlerOptions.Rate], so clients
// cannot starve the measurements that share the TPM. A request beyond the
// rate waits, and waiting clients (keyed by [ClientKey]: an IPv4 address or
// an IPv6 /64) are served in rotation, one request each per turn: a client
// that floods the endpoint gets one turn in every round like any other, so
// a verifier's request is served after at most one request of each other
// waiting client. A client has at most [HandlerOptions.PerClient] requests
// waiting or in progress (429 beyond that, with Retry-After), a request
// waits at most [HandlerOptions.MaxWait] (then 503, with Retry-After), and
// at most [HandlerOptions.MaxClients] clients wait at once. The limits are
// per address: a client with many addresses (a local user picking from
// 127.0.0.0/8, say) gets a turn for each of them, and slows everyone else's
// turn down in proportion, never to zero.
//
// HEAD checks the query and answers with the headers of a GET, without a
// quote and without using up a turn. A query that does not parse, or names
// nonce or since twice, gets 400.
//
// The handler bounds its work, not connections: serve it through
// [LimitListener] with the timeouts of an [http.Server], as rimon watch
// does. Each response's write deadline grows with its size (10 s plus one
// second for every 256 KiB).
func Handler(o HandlerOptions) http.Handler {
	if o.Rate <= 0 {
		o.Rate = 5
	}
	if o.PerClient <= 0 {
		o.PerClient = 2
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 1024
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 30 * time.Second
	}
	if o.MaxLog <= 0 {
		o.MaxLog = 256 << 20
	}
	turns := newGate(o.Rate, 2*o.Rate, o.PerClient, o.MaxClients)
	one := make(chan struct{}, 1)
	writers := make(chan struct{}, maxWriters)
	mux := http.NewServeMux()
	registerIdentity(mux, o, turns, one) // GET /v1/identity, POST /v1/activate (identity.go)
	mux.HandleFunc("HEAD /v1/evidence", func(w http.ResponseWriter, r *http.Request) {
		if _, err := parseQuery(r.URL.RawQuery, o.Banks); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json-seq")
		w.Header().Set("Cache-Control", "no-store")
	})
	mux.HandleFunc("GET /v1/evidence", func(w http.ResponseWriter, r *http.Request) {
		q, err := parseQuery(r.URL.RawQuery, o.Banks)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		wait, cancel := context.WithTimeout(r.Context(), o.MaxWait)
		defer cancel()
		release, status := turns.enter(wait, ClientKey(r.RemoteAddr))
		switch status {
		case http.StatusTooManyRequests:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests from this client at once", status)
			return
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", "2")
			http.Error(w, "busy: try again later", status)
			return
		}
		defer release()
		select {
		case writers <- struct{}{}:
			defer func() { <-writers }()
		case <-wait.Done():
			w.Header().Set("Retry-After", "2")
			http.Error(w, "busy: try again later", http.StatusServiceUnavailable)
			return
		}
		b, status, msg := evidenceFor(wait, r.Context(), o, one, q)
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "2")
		}
		if status != http.StatusOK {
			http.Error(w, msg, status)
			return
		}
		// A slow reader holds a writer slot and its connection, never the TPM.
		rc := http.NewResponseController(w)
		rc.SetWriteDeadline(time.Now().Add(10*time.Second + time.Duration(len(b)/(256<<10))*time.Second))
		w.Header().Set("Content-Type", "application/json-seq")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b)
	})
	return mux
}

// evidenceFor takes the quote (one at a time, waiting as long as wait
// lasts) and encodes the evidence.
func evidenceFor(wait, ctx context.Context, o HandlerOptions, one chan struct{}, q query) ([]byte, int, string) {
	select {
	case one <- struct{}{}:
	case <-wait.Done():
		return nil, http.StatusServiceUnavailable, "busy: try again later"
	}
	return encodeEvidence(ctx, o, q.nonce, q.since, q.banks, func() { <-one })
}

// encodeEvidence collects and encodes evidence for nonce, quoting banks,
// with the log from record since on: what GET /v1/evidence answers, and
// what a push posts. It returns the status and message for a failure.
// quoted, when set, is called once the quote is taken.
func encodeEvidence(ctx context.Context, o HandlerOptions, nonce []byte, since uint64, banks []crypto.Hash, quoted func()) ([]byte, int, string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ev, err := Collect(ctx, o.TPM, o.LogPath, nonce, o.PCRs, banks)
	if quoted != nil {
		quoted()
	}
	if err != nil {
		return nil, http.StatusInternalServerError, "quote failed"
	}
	if o.Unrecorded != nil {
		ev.Unrecorded = o.Unrecorded()
	}
	if since > 0 {
		rest, err := attest.SkipRecords(ev.Log, since)
		if err != nil {
			return nil, http.StatusBadRequest, "since: " + err.Error()
		}
		ev.Log, ev.LogStart = rest, since
	}
	if o.Decorate != nil {
		if err := o.Decorate(ctx, ev); err != nil {
			return nil, http.StatusInternalServerError, "hardware evidence unavailable"
		}
	}
	if o.MaxLog <= 0 {
		o.MaxLog = 256 << 20
	}
	if int64(len(ev.Log)) > o.MaxLog {
		return nil, http.StatusInsufficientStorage, "log larger than the limit"
	}
	b, err := ev.Marshal()
	if err != nil {
		return nil, http.StatusInternalServerError, "encode failed"
	}
	return b, http.StatusOK, ""
}

// query is a parsed request for evidence.
type query struct {
	nonce []byte
	banks []crypto.Hash
	since uint64
}

// parseQuery checks a request's query string: nonce once, since at most
// once, bank any number of times (each one the agent extends, none twice).
func parseQuery(raw string, all []crypto.Hash) (query, error) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return query{}, fmt.Errorf("query string: %v", err)
	}
	for k, v := range vals {
		switch k {
		case "nonce", "since":
			if len(v) > 1 {
				return query{}, fmt.Errorf("parameter %s given %d times (want it once)", k, len(v))
			}
		case "bank":
		default:
			return query{}, fmt.Errorf("unknown parameter %q (want nonce, bank and since)", k)
		}
	}
	var q query
	q.nonce, err = hex.DecodeString(vals.Get("nonce"))
	if err != nil || len(q.nonce) < 8 || len(q.nonce) > 64 {
		return query{}, errors.New("nonce: want 8 to 64 bytes in hex")
	}
	if v := vals.Get("since"); v != "" {
		if q.since, err = strconv.ParseUint(v, 10, 63); err != nil {
			return query{}, errors.New("since: want a record count")
		}
	}
	q.banks = all
	if names := vals["bank"]; len(names) > 0 {
		q.banks = nil
		for _, n := range names {
			h, err := eventlog.ParseBank(n)
			if err != nil || !slices.Contains(all, h) || slices.Contains(q.banks, h) {
				return query{}, fmt.Errorf("bank %s: not one this agent extends, or asked twice", n)
			}
			q.banks = append(q.banks, h)
		}
		slices.Sort(q.banks)
	}
	return q, nil
}

// ClientKey names the client behind a remote address ("host:port") for
// the per-client limits: the IPv4 address, or the /64 of an IPv6 address
// (one site's hosts share it). An address that does not parse is its own key.
func ClientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// gate hands out quote turns: a token bucket for the rate, and a rotation
// of the clients that wait for a token, one request each per turn.
type gate struct {
	mu           sync.Mutex
	rate, burst  float64
	tokens       float64
	last         time.Time
	perClient    int
	maxClients   int
	clients      map[string]*gateClient
	ring         []*gateClient // clients with waiting requests, in turn order
	timer        *time.Timer
	timerPending bool
}

type gateClient struct {
	key     string
	pending int             // requests waiting or in progress
	waiters []chan struct{} // closed when the request's turn comes
	inRing  bool
}

func newGate(rate, burst float64, perClient, maxClients int) *gate {
	return &gate{rate: rate, burst: burst, tokens: burst, last: time.Now(), perClient: perClient,
		maxClients: maxClients, clients: map[string]*gateClient{}}
}

func (g *gate) refill() {
	now := time.Now()
	g.tokens = min(g.burst, g.tokens+now.Sub(g.last).Seconds()*g.rate)
	g.last = now
}

// enter waits for the client's turn. It returns a release function and
// 200, or 429 (the client has too many requests at once) or 503 (too many
// clients, or ctx ended before the turn came).
func (g *gate) enter(ctx context.Context, key string) (release func(), status int) {
	g.mu.Lock()
	c := g.clients[key]
	if c == nil {
		if len(g.clients) >= g.maxClients {
			g.mu.Unlock()
			return nil, http.StatusServiceUnavailable
		}
		c = &gateClient{key: key}
		g.clients[key] = c
	}
	if c.pending >= g.perClient {
		g.mu.Unlock()
		return nil, http.StatusTooManyRequests
	}
	c.pending++
	release = func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.done(c)
	}
	g.refill()
	if len(g.ring) == 0 && g.tokens >= 1 {
		g.tokens--
		g.mu.Unlock()
		return release, http.StatusOK
	}
	ch := make(chan struct{})
	c.waiters = append(c.waiters, ch)
	if !c.inRing {
		c.inRing = true
		g.ring = append(g.ring, c)
	}
	g.schedule()
	g.mu.Unlock()
	select {
	case <-ch:
		return release, http.StatusOK
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if i := slices.Index(c.waiters, ch); i >= 0 {
		c.waiters = slices.Delete(c.waiters, i, i+1)
		if len(c.waiters) == 0 && c.inRing {
			c.inRing = false
			g.ring = slices.DeleteFunc(g.ring, func(x *gateClient) bool { return x == c })
		}
	}
	// Its turn may have come just now: the token is spent either way.
	g.done(c)
	return nil, http.StatusServiceUnavailable
}

// done ends one of c's requests; g.mu is held.
func (g *gate) done(c *gateClient) {
	c.pending--
	if c.pending == 0 && len(c.waiters) == 0 && g.clients[c.key] == c {
		delete(g.clients, c.key)
	}
}

// schedule arranges for dispatch when the next token is due; g.mu is held.
func (g *gate) schedule() {
	if g.timerPending || len(g.ring) == 0 {
		return
	}
	wait := time.Duration((1 - g.tokens) / g.rate * float64(time.Second))
	g.timerPending = true
	if g.timer == nil {
		g.timer = time.AfterFunc(max(wait, 0), g.dispatch)
	} else {
		g.timer.Reset(max(wait, 0))
	}
}

// dispatch gives the tokens there are to waiting clients in rotation.
func (g *gate) dispatch() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.timerPending = false
	g.refill()
	for g.tokens >= 1 && len(g.ring) > 0 {
		c := g.ring[0]
		g.ring = g.ring[1:]
		close(c.waiters[0])
		c.waiters = c.waiters[1:]
		g.tokens--
		if len(c.waiters) > 0 {
			g.ring = append(g.ring, c)
		} else {
			c.inRing = false
		}
	}
	g.schedule()
}

// LimitListener accepts at most max connections at once (Accept waits
// for one to close), and at most perClient from one client ([ClientKey]):
// a client's connection beyond that is closed at once. It bounds the file
// descriptors an HTTP server spends on its clients, idle ones included,
// so that the rest of the process (measuring files) never runs out.
func LimitListener(ln net.Listener, max, perClient int) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, max), perClient: perClient,
		open: map[string]int{}, closed: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	slots     chan struct{}
	perClient int
	mu        sync.Mutex
	open      map[string]int
	closeOnce sync.Once
	closed    chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err
		}
		key := ClientKey(c.RemoteAddr().String())
		l.mu.Lock()
		if l.open[key] >= l.perClient {
			l.mu.Unlock()
			c.Close()
			<-l.slots
			continue
		}
		l.open[key]++
		l.mu.Unlock()
		return &limitConn{Conn: c, release: func() {
			l.mu.Lock()
			if l.open[key]--; l.open[key] == 0 {
				delete(l.open, key)
			}
			l.mu.Unlock()
			<-l.slots
		}}, nil
	}
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
