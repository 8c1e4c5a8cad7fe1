package agent_test

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/verifier"
)

// loopbackClient makes requests from the loopback address src, so that the
// server sees it as its own client.
func loopbackClient(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// serve runs h as rimon watch --listen does: through LimitListener, with
// the server's timeouts.
func serve(t *testing.T, h http.Handler, maxConns, perClient int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 5 * time.Second}
	go s.Serve(agent.LimitListener(ln, maxConns, perClient))
	t.Cleanup(func() { s.Close() })
	return "http://" + ln.Addr().String()
}

// TestFloodVerifierGetsThrough: 50 clients on 10 addresses ask for evidence
// as fast as they can (ignoring 429) while a verifier on another address
// asks 6 times, one request each, no retries. Each of the verifier's
// requests waits its turn and is served; before clients were served in
// rotation, about 1 request in 60 got through.
func TestFloodVerifierGetsThrough(t *testing.T) {
	m := newMachine(t)
	m.measure("/usr/bin/app", "v1")
	url := serve(t, agent.Handler(agent.HandlerOptions{TPM: m.tpm, LogPath: m.log, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256}}), 64, 8)

	ctx, stopFlood := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var flood, flood200 atomic.Int64
	for i := 0; i < 50; i++ {
		client := loopbackClient(fmt.Sprintf("127.0.0.%d", 10+i%10))
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := []byte(fmt.Sprintf("flood-%02d-nonce", i))
			for j := 0; j < 20000 && ctx.Err() == nil; j++ { // bounded, and stops with the verifier
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/evidence?nonce="+hex.EncodeToString(n), nil)
				rsp, err := client.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, rsp.Body)
				rsp.Body.Close()
				flood.Add(1)
				if rsp.StatusCode == http.StatusOK {
					flood200.Add(1)
				}
			}
		}()
	}
	defer func() {
		stopFlood()
		wg.Wait()
	}()
	// Let the flood fill the queue before the verifier asks.
	for flood.Load() < 200 {
		if ctx.Err() != nil {
			t.Fatal("flood stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}

	verifier := loopbackClient("127.0.0.2")
	const tries = 6
	got := 0
	var errs []string
	for i := 0; i < tries; i++ {
		nonce := []byte(fmt.Sprintf("verifier-try-%d", i))
		ev, err := attest.Fetch(context.Background(), verifier, url, nonce)
		if err == nil {
			_, err = verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}})
		}
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		got++
	}
	stopFlood()
	wg.Wait()
	t.Logf("verifier: %d of %d; flood: %d requests, %d served", got, tries, flood.Load(), flood200.Load())
	if got < tries/2 {
		t.Errorf("under a flood of 50 clients the verifier got %d of %d requests through, want at least %d:\n%s", got, tries, tries/2, strings.Join(errs, "\n"))
	}
}

// TestHeadTakesNoQuote: HEAD answers with a GET's headers, takes no quote
// and leaves the rate limit alone; a bad query is still refused.
func TestHeadTakesNoQuote(t *testing.T) {
	m := newMachine(t)
	m.measure("/usr/bin/app", "v1")
	srv := httptest.NewServer(agent.Handler(agent.HandlerOptions{TPM: m.tpm, LogPath: m.log, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256}, Rate: 1}))
	defer srv.Close()
	u := srv.URL + "/v1/evidence?nonce=" + hex.EncodeToString(nonce)
	for i := 0; i < 20; i++ {
		rsp, err := srv.Client().Head(u)
		if err != nil {
			t.Fatal(err)
		}
		rsp.Body.Close()
		if rsp.StatusCode != http.StatusOK || rsp.Header.Get("Content-Type") != "application/json-seq" {
			t.Fatalf("HEAD %d = %s, Content-Type %q; want 200, application/json-seq", i, rsp.Status, rsp.Header.Get("Content-Type"))
		}
	}
	if rsp, err := srv.Client().Head(srv.URL + "/v1/evidence?nonce=zz"); err != nil || rsp.StatusCode != http.StatusBadRequest {
		t.Errorf("HEAD with a bad nonce = %v, %v; want 400", rsp.Status, err)
	}
	// The bucket (1 a second, bursts of 2) is untouched: two GETs are served at once.
	for i := 0; i < 2; i++ {
		if _, err := attest.Fetch(context.Background(), srv.Client(), srv.URL, nonce); err != nil {
			t.Fatalf("GET %d after 20 HEADs: %v", i, err)
		}
	}
}

// TestMalformedQueries: a query that url.ParseQuery refuses, or that names
// nonce or since twice, is refused with 400 rather than read leniently.
func TestMalformedQueries(t *testing.T) {
	m := newMachine(t)
	srv := httptest.NewServer(agent.Handler(agent.HandlerOptions{TPM: m.tpm, LogPath: m.log, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256}, Rate: 1000}))
	defer srv.Close()
	n := hex.EncodeToString(nonce)
	for _, tc := range []struct{ name, query, want string }{
		{"bad_escape", "nonce=" + n + "&x%zz=1", "query string"},
		{"semicolon", "nonce=" + n + ";since=1", "query string"},
		{"nonce_twice", "nonce=" + n + "&nonce=" + strings.Repeat("ab", 16), "nonce given 2 times"},
		{"since_twice", "nonce=" + n + "&since=0&since=5", "since given 2 times"},
		{"unknown", "nonce=" + n + "&verbose=1", `unknown parameter "verbose"`},
		{"bank_twice", "nonce=" + n + "&bank=sha256&bank=sha256", "asked twice"},
		{"short_nonce", "nonce=00", "nonce: want 8 to 64 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rsp, err := srv.Client().Get(srv.URL + "/v1/evidence?" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(io.LimitReader(rsp.Body, 200))
			rsp.Body.Close()
			if rsp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), tc.want) {
				t.Errorf("GET ?%s = %s %q; want 400 naming %q", tc.query, rsp.Status, b, tc.want)
			}
		})
	}
	if _, err := attest.Fetch(context.Background(), srv.Client(), srv.URL, nonce); err != nil {
		t.Errorf("a well-formed request after the bad ones: %v", err)
	}
}

// TestUnrecordedHeader: the agent's unrecorded paths reach the header.
func TestUnrecordedHeader(t *testing.T) {
	m := newMachine(t)
	m.measure("/usr/bin/app", "v1")
	want := []attest.Unrecorded{{Path: "/usr/bin/evil%FF", Cause: "name_not_utf8", Since: "2026-11-28T13:00:00Z", Tries: 3}}
	srv := httptest.NewServer(agent.Handler(agent.HandlerOptions{TPM: m.tpm, LogPath: m.log, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256},
		Unrecorded: func() []attest.Unrecorded { return want }}))
	defer srv.Close()
	ev, err := attest.Fetch(context.Background(), srv.Client(), srv.URL, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, ev.Unrecorded); d != "" {
		t.Errorf("evidence header's unrecorded (-want +got):\n%s", d)
	}
	if _, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}}); err != nil {
		t.Errorf("evidence with unrecorded paths does not verify: %v", err)
	}
	// The quote binds the list: removed or edited on the way, the
	// evidence fails the nonce check (it would otherwise be trusted).
	for name, edit := range map[string]func(){
		"removed": func() { ev.Unrecorded = nil },
		"edited": func() {
			ev.Unrecorded = []attest.Unrecorded{{Path: "/usr/bin/other", Cause: "unstable", Since: want[0].Since, Tries: 3}}
		},
	} {
		edit()
		_, err := verify(ev, attest.Options{QuoteOptions: attest.QuoteOptions{AK: m.ak, Nonce: nonce}})
		var ce *verifier.CheckError
		if !errors.As(err, &ce) || ce.Check != attest.CheckNonce {
			t.Errorf("unrecorded list %s on the way: %v, want the nonce check to fail", name, err)
		}
	}
}

// TestWaitBoundedAndForgotten: a request that waits past MaxWait for its
// turn gets 503 with Retry-After, and leaves no trace: the client's next
// requests are not refused as "too many at once".
func TestWaitBoundedAndForgotten(t *testing.T) {
	m := newMachine(t)
	// At this rate the bucket never holds a whole token: every request waits.
	srv := httptest.NewServer(agent.Handler(agent.HandlerOptions{TPM: m.tpm, LogPath: m.log, PCRs: []int{23}, Banks: []crypto.Hash{crypto.SHA256},
		Rate: 0.001, PerClient: 1, MaxWait: 20 * time.Millisecond}))
	defer srv.Close()
	for i := 0; i < 3; i++ {
		rsp, err := srv.Client().Get(srv.URL + "/v1/evidence?nonce=" + hex.EncodeToString(nonce))
		if err != nil {
			t.Fatal(err)
		}
		rsp.Body.Close()
		if rsp.StatusCode != http.StatusServiceUnavailable || rsp.Header.Get("Retry-After") == "" {
			t.Errorf("request %d = %s, Retry-After %q; want 503 with Retry-After", i, rsp.Status, rsp.Header.Get("Retry-After"))
		}
	}
}

// TestLimitListener: a client's connections beyond its share are closed at
// once; beyond the total, Accept waits for one to close.
func TestLimitListener(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := agent.LimitListener(inner, 3, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a1, _ := dial("127.0.0.1"), dial("127.0.0.1")
	s1, s2 := <-accepted, <-accepted
	// A third from 127.0.0.1 is closed by the listener: the read sees EOF.
	third := dial("127.0.0.1")
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := third.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("third connection from one client: read %d, %v; want EOF (closed by the listener)", n, err)
	}
	other := dial("127.0.0.3")
	s3 := <-accepted
	if got := s3.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.3" {
		t.Errorf("accepted a connection from %s, want 127.0.0.3", got)
	}
	// The total is reached: the next waits until one closes.
	dial("127.0.0.4")
	select {
	case c := <-accepted:
		t.Fatalf("accepted %v beyond the total of 3", c.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
	s1.Close()
	if c := <-accepted; c.RemoteAddr().(*net.TCPAddr).IP.String() != "127.0.0.4" {
		t.Errorf("after a close, accepted %v; want the waiting 127.0.0.4", c.RemoteAddr())
	}
	_, _, _ = a1, s2, other
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:80":          "192.0.2.1",
		"127.0.0.2:5000":        "127.0.0.2",
		"[::ffff:192.0.2.1]:80": "192.0.2.1",
		"[2001:db8::1]:80":      "2001:db8::/64",
		"[2001:db8::2:1]:443":   "2001:db8::/64",
		"[2001:db8:0:1::1]:443": "2001:db8:0:1::/64",
		"[fe80::1%eth0]:80":     "fe80::/64",
		"[::1]:80":              "::/64",
		"@":                     "@",
	} {
		if got := agent.ClientKey(in); got != want {
			t.Errorf("ClientKey(%q) = %q, want %q", in, got, want)
		}
	}
}
