package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/loadgen"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/fleet/sqlstore/sqltest"
)

// TestReplicasFailover: three rimon verifier processes on one PostgreSQL
// share a few hundred simulated agents (the load generator) and a real
// agent (rimon watch on the simulator). One replica is SIGKILLed, then
// another, a file changes on the real agent meanwhile, then both come
// back; PostgreSQL is restarted under load; the third replica's
// connection to the database (through a TCP proxy on loopback) stalls and
// is dropped. Throughout: no agent is ever asked by two replicas at once,
// every agent keeps being polled (no gap longer than two lease periods
// plus one interval), each agent's transitions are stored once and each
// has its webhook delivered, the real agent's change reaches untrusted
// with a signed webhook, and every replica is alive at the end.
func TestReplicasFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, three verifiers, a real agent and 200 simulated agents")
	}
	const (
		agents   = 200
		interval = 3 * time.Second
		lease    = 5 * time.Second
		maxGap   = 2*lease + interval + interval/10 // the interval is jittered by ±10%
	)
	ctx := context.Background()
	pg, err := sqltest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Stop() })
	dsn, err := pg.CreateDatabase(ctx, "rimon_replicas")
	if err != nil {
		t.Fatal(err)
	}
	proxy := startTCPProxy(t, fmt.Sprintf("127.0.0.1:%d", pg.Port))
	// The stalled replica's open transaction is ended by the server after
	// 2 s (rimon's default is sqlstore.IdleInTransactionTimeout), within
	// a lease: its locks do not keep the others off its agents.
	u, _ := url.Parse(dsn)
	u.Host = proxy.addr
	q := u.Query()
	q.Set("idle_in_transaction_session_timeout", "2000")
	u.RawQuery = q.Encode()
	proxied := u.String()

	dir := t.TempDir()
	secretKey := []byte("a 24-byte signing secret")
	secretFile := writeFile(t, filepath.Join(dir, "hook.secret"), "whsec_"+base64.StdEncoding.EncodeToString(secretKey)+"\n")
	hooks := &hookReceiver{secret: secretKey, ids: map[string]int{}}
	hookSrv := httptest.NewServer(hooks)
	defer hookSrv.Close()

	lg, err := loadgen.New(loadgen.Options{Agents: agents, PerRound: 2, GrowOnPoll: true})
	if err != nil {
		t.Fatal(err)
	}
	lgSrv, err := lg.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lgSrv.Close()

	st, err := sqlstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.PutReference(ctx, fleet.Reference{Name: "fleet", Body: lg.Reference()}, false); err != nil {
		t.Fatal(err)
	}
	for i := range agents {
		if _, err := st.AddAgent(ctx, fleet.Spec{Name: fmt.Sprintf("lg-%03d", i), URL: lgSrv.AgentURL(i), AK: lg.Agent(i).AKPEM(),
			Reference: "fleet", PCRs: []int{23}, Banks: []string{"sha256"}, Interval: interval}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}

	realDir := filepath.Join(dir, "real")
	app := writeFile(t, filepath.Join(realDir, "app", "server"), "#!/bin/sh\necho real\n")
	real := startSimAgent(t, realDir, "settings:\n  debounce: 50ms\nmeasure:\n  - dir: "+filepath.Join(realDir, "app")+"\n")

	gen := 0
	start := func(owner, db string) *verifierProc {
		gen++
		return startVerifier(t, filepath.Join(dir, fmt.Sprintf("%s-%d", owner, gen)), "--db", db, "--owner", owner,
			"--timeout", "2s", "--lease", lease.String(), "--concurrency", "32",
			"--webhook", hookSrv.URL+"/hook", "--webhook-secret-file", secretFile)
	}
	r1, r2, r3 := start("r1", dsn), start("r2", dsn), start("r3", proxied)
	r1.mustFleet("reference", "add", "real", real.reference())
	r1.mustFleet("add", "real", "--agent", real.url, "--ak", real.ak, "--reference", "real", "--interval", "1s")

	waitUntil(t, "every agent trusted", func() bool {
		c, err := st.CountByStatus(ctx)
		return err == nil && c[fleet.Trusted] == agents+1
	})
	lg.ResetPolls()
	began := time.Now()

	// everyPolledSince: every simulated agent answered a poll that began
	// at or after t (the replicas that are left took over).
	everyPolledSince := func(what string, since time.Time, by ...string) {
		t.Helper()
		waitUntil(t, what, func() bool {
			seen := map[int]bool{}
			for _, p := range lg.Polls() {
				if !p.Start.Before(since) && p.Status == http.StatusOK {
					seen[p.Agent] = true
				}
			}
			return len(seen) == agents
		})
		for _, name := range by {
			waitUntil(t, name+" polling", func() bool {
				for _, p := range lg.Polls() {
					if p.Verifier == name && !p.Start.Before(since) {
						return true
					}
				}
				return false
			})
		}
	}

	// Two replicas SIGKILLed, one after the other.
	kill := func(v *verifierProc) time.Time {
		v.cmd.Process.Kill()
		<-v.done
		return time.Now()
	}
	everyPolledSince("the agents taken over from r1", kill(r1).Add(lease))
	if err := os.WriteFile(app, []byte("#!/bin/sh\necho changed\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	everyPolledSince("the agents taken over from r2", kill(r2).Add(lease))
	waitUntil(t, "the real agent untrusted", func() bool {
		a, err := st.Agent(ctx, "real")
		return err == nil && a.Status == fleet.Untrusted
	})
	waitUntil(t, "the webhook of the real agent's change", func() bool { _, ok := hooks.find("real", fleet.Untrusted); return ok })

	// Both come back and take their share again.
	back := time.Now()
	r1, r2 = start("r1", dsn), start("r2", dsn)
	everyPolledSince("the replicas back at work", back, "r1", "r2", "r3")

	// PostgreSQL restarted under load: the replicas reconnect.
	if err := pg.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	everyPolledSince("polls after PostgreSQL's restart", time.Now(), "r1", "r2", "r3")

	// r3's database connection stalls, then is cut: its agents are taken
	// over when their leases end, and r3 recovers instead of hanging.
	proxy.stall(true)
	stalled := time.Now()
	everyPolledSince("the agents taken over from the stalled r3", stalled.Add(lease))
	proxy.dropAll()
	proxy.stall(false)
	recovered := time.Now()
	everyPolledSince("r3 after its connection was cut", recovered, "r3")
	resp, err := http.Get(r3.url + "/healthz")
	if err != nil {
		t.Fatalf("r3 hung: %v", err)
	}
	resp.Body.Close()
	ended := time.Now()

	// Never two replicas on one agent at once.
	if ov := lg.Overlaps(); len(ov) > 0 {
		t.Errorf("%d requests reached an agent while another was in progress; first: %+v", len(ov), ov[0])
	}
	// No agent left unpolled for longer than two leases and an interval.
	byAgent := map[int][]time.Time{}
	for _, p := range lg.Polls() {
		byAgent[p.Agent] = append(byAgent[p.Agent], p.Start)
	}
	worst, worstAgent := time.Duration(0), -1
	for i := range agents {
		starts := append([]time.Time{began}, byAgent[i]...)
		sort.Slice(starts, func(a, b int) bool { return starts[a].Before(starts[b]) })
		starts = append(starts, ended)
		for k := 1; k < len(starts); k++ {
			if g := starts[k].Sub(starts[k-1]); g > worst {
				worst, worstAgent = g, i
			}
		}
	}
	t.Logf("%d polls in %v; the longest gap %v (agent %d); bound %v", len(lg.Polls()), ended.Sub(began).Round(time.Second), worst.Round(time.Millisecond), worstAgent, maxGap)
	if worst > maxGap {
		t.Errorf("agent lg-%03d went %v without a poll, more than two leases and an interval (%v)", worstAgent, worst, maxGap)
	}

	// Every transition stored once, each with its webhook delivered.
	transitions := 0
	for i := range agents + 1 {
		name := fmt.Sprintf("lg-%03d", i)
		want := []fleet.Status{fleet.Trusted}
		if i == agents {
			name, want = "real", []fleet.Status{fleet.Trusted, fleet.Untrusted}
		}
		h, err := st.History(ctx, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []fleet.Status
		for k := len(h) - 1; k >= 0; k-- {
			if h[k].Event == "state" {
				got = append(got, h[k].To)
			}
		}
		transitions += len(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s's transitions %v, want %v (none lost, none twice)", name, got, want)
		}
	}
	waitUntil(t, "every webhook delivered", func() bool {
		ds, err := st.Deliveries(ctx, "", 0)
		if err != nil || len(ds) != transitions {
			return false
		}
		hooks.mu.Lock()
		defer hooks.mu.Unlock()
		for _, d := range ds {
			if d.State != "delivered" || hooks.ids[d.ID] == 0 {
				return false
			}
		}
		return true
	})
	hooks.mu.Lock()
	again := 0
	for _, n := range hooks.ids {
		again += n - 1
	}
	if len(hooks.bad) > 0 {
		t.Errorf("webhook requests with a bad signature or body: %v", hooks.bad)
	}
	hooks.mu.Unlock()
	t.Logf("%d transitions, %d webhooks, %d sent again (at least once)", transitions, transitions, again)

	for _, v := range []*verifierProc{r1, r2, r3} {
		select {
		case err := <-v.done:
			t.Errorf("a replica stopped: %v\n%s", err, tail(v.stderr.String(), 3000))
		default:
		}
	}
}

// waitUntil polls cond with a generous deadline.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tcpProxy forwards loopback connections to a target; it can stall them
// (bytes held, nothing forwarded) and drop them all.
type tcpProxy struct {
	addr string
	mu   sync.Mutex
	cond *sync.Cond
	hold bool
	open map[net.Conn]bool
}

func startTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: ln.Addr().String(), open: map[net.Conn]bool{}}
	p.cond = sync.NewCond(&p.mu)
	t.Cleanup(func() { ln.Close(); p.stall(false); p.dropAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, target)
		}
	}()
	return p
}

func (p *tcpProxy) serve(c net.Conn, target string) {
	s, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.open[c], p.open[s] = true, true
	p.mu.Unlock()
	go p.pipe(s, c)
	p.pipe(c, s)
}

// pipe copies from src to dst, holding the bytes while stalled.
func (p *tcpProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.hold && p.open[src] {
				p.cond.Wait()
			}
			alive := p.open[src]
			p.mu.Unlock()
			if !alive {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *tcpProxy) stall(on bool) {
	p.mu.Lock()
	p.hold = on
	p.mu.Unlock()
	p.cond.Broadcast()
}

// dropAll closes every connection through the proxy.
func (p *tcpProxy) dropAll() {
	p.mu.Lock()
	for c := range p.open {
		c.Close()
		delete(p.open, c)
	}
	p.mu.Unlock()
	p.cond.Broadcast()
}
