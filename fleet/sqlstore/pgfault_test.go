package sqlstore

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/sqlstore/sqltest"
)

// stallProxy forwards TCP connections to a server on loopback; while
// stalled it forwards nothing (a network that drops every packet), and
// drop closes every connection.
type stallProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	stalled bool
	resume  chan struct{}
	conns   []net.Conn
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target, resume: make(chan struct{})}
	t.Cleanup(func() { ln.Close(); p.drop() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	return p
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			wait := p.resume
			stalled := p.stalled
			p.mu.Unlock()
			if stalled {
				<-wait
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	p.stalled = true
	p.mu.Unlock()
}

func (p *stallProxy) unstall() {
	p.mu.Lock()
	p.stalled = false
	close(p.resume)
	p.resume = make(chan struct{})
	p.mu.Unlock()
}

func (p *stallProxy) drop() {
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

// TestPostgresStall: with the network to PostgreSQL stalled, every call
// ends with an error after the store's timeout instead of hanging, and
// nothing is stored; when the network comes back, the store carries on.
func TestPostgresStall(t *testing.T) {
	dsn := sqltest.Postgres(t)
	cfgHost := dsn[len("postgres://postgres@"):]
	target := cfgHost[:indexByte(cfgHost, '/')]
	p := newStallProxy(t, target)
	proxied := "postgres://postgres@" + p.ln.Addr().String() + cfgHost[indexByte(cfgHost, '/'):]
	s, err := OpenOptions(bg, proxied, Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := mustAdd(t, s, "a")

	p.stall()
	res := make(chan error, 1)
	go func() {
		res <- s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0, Status: fleet.Trusted})
	}()
	select {
	case err := <-res:
		if err == nil || !errors.Is(err, context.DeadlineExceeded) && !isNetErr(err) {
			t.Errorf("SaveResult through a stalled network = %v, want a timeout", err)
		}
		t.Logf("stalled: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("SaveResult through a stalled network hung")
	}
	p.drop()
	p.unstall()
	// The next calls reconnect; the failed result was not stored.
	deadline := time.Now().Add(time.Minute)
	for {
		got, err := s.Agent(bg, "a")
		if err == nil {
			if got.Status != fleet.Pending || got.Version != a.Version {
				t.Errorf("after the stall: %s v%d, want pending v%d", got.Status, got.Version, a.Version)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store did not recover: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0, Status: fleet.Trusted}); err != nil {
		t.Errorf("SaveResult after the stall = %v", err)
	}
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// TestPostgresRestart: PostgreSQL restarted (immediate shutdown, as a
// crash) under a store: calls fail while it is down, then succeed without
// reopening the store; a call that failed stored nothing.
func TestPostgresRestart(t *testing.T) {
	c, err := sqltest.Start(bg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop() })
	dsn, err := c.CreateDatabase(bg, "restart")
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dsn)
	a := mustAdd(t, s, "a")
	a = save(t, s, a, fleet.Untrusted)
	if err := c.Restart(bg, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	var failures int
	for {
		cur := mustAgentEventually(t, s, "a", deadline)
		err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: cur.Version, At: t0.Add(time.Hour), Status: fleet.Trusted})
		if err == nil {
			break
		}
		failures++
		if got := mustAgentEventually(t, s, "a", deadline); got.Status != fleet.Untrusted {
			t.Fatalf("a failed SaveResult (%v) stored %s", err, got.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write succeeded after the restart: %v", err)
		}
	}
	if got := mustAgent(t, s, "a"); got.Status != fleet.Trusted {
		t.Errorf("after the restart: %s, want trusted", got.Status)
	}
	t.Logf("%d failed writes after the restart", failures)
}

func mustAgentEventually(t *testing.T, s *Store, name string, deadline time.Time) *fleet.Agent {
	t.Helper()
	for {
		a, err := s.Agent(bg, name)
		if err == nil {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("Agent(%s) after the restart: %v", name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
