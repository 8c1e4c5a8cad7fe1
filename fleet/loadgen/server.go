package loadgen

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
)

// Handler serves every agent's evidence endpoint under its prefix:
// GET /agents/N/v1/evidence?nonce=HEX[&since=N][&bank=NAME...], answered
// as rimon watch --listen answers (400 for a query that does not parse, a
// bank the agent does not extend, or since past the log's end), unless the
// agent has a [Fault].
func (f *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /agents/{n}/v1/evidence", f.serveEvidence)
	return mux
}

// BaseURL is agent i's base URL on a server at base (http://HOST:PORT).
func BaseURL(base string, i int) string { return base + "/agents/" + strconv.Itoa(i) }

func (f *Fleet) serveEvidence(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || i < 0 || i >= len(f.agents) || strconv.Itoa(i) != r.PathValue("n") {
		http.Error(w, "no such agent", http.StatusNotFound)
		return
	}
	a := f.agents[i]
	p := Poll{Agent: i, Verifier: r.Header.Get(VerifierHeader), Start: f.opts.Now(), Fault: a.Fault()}
	end := f.begin(i, p.Verifier)
	ended := false
	finish := func() {
		if !ended {
			ended = true
			p.End = f.opts.Now()
			p.Records = a.Records()
			end(p)
		}
	}
	defer finish()
	switch p.Fault {
	case Down:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				// The request ends before the connection does: a client's
				// retry on a new connection is not an overlap.
				finish()
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0) // a reset, as from a host that went away
				}
				c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case Slow:
		t := time.NewTimer(f.opts.SlowDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			p.Status = 0
			return
		}
	case Garbage:
		p.Status = http.StatusOK
		w.Header().Set("Content-Type", "application/json-seq")
		w.Write([]byte("\x1e{\"version\":1,\"nonce\":\"not hex\",\"quote\":{\"attest\":\"@@@\"}}\n\x00\xff garbage \x1e[1,2,3\n"))
		return
	case Huge:
		p.Status = http.StatusOK
		f.serveHuge(w, r, a)
		return
	}
	q, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		p.Status = http.StatusBadRequest
		http.Error(w, err.Error(), p.Status)
		return
	}
	p.Since = q.since
	b, err := a.EvidenceBytes(q.nonce, q.since, q.banks)
	if err != nil {
		p.Status = http.StatusBadRequest
		http.Error(w, err.Error(), p.Status)
		return
	}
	p.Status = http.StatusOK
	w.Header().Set("Content-Type", "application/json-seq")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// serveHuge writes a valid header and then HugeSize bytes that are no
// record (no line feed, no record separator), until they are written or
// the client goes away.
func (f *Fleet) serveHuge(w http.ResponseWriter, r *http.Request, a *Agent) {
	q, err := parseQuery(r.URL.RawQuery)
	if err != nil {
		q = query{nonce: make([]byte, 32)}
	}
	ev, err := a.Evidence(q.nonce, min(q.since, a.Records()), q.banks)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ev.Log = nil
	h, err := ev.Marshal()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json-seq")
	w.Write(h)
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	for left := f.opts.HugeSize - int64(len(h)); left > 0 && r.Context().Err() == nil; left -= int64(len(chunk)) {
		if _, err := w.Write(chunk[:min(int64(len(chunk)), left)]); err != nil {
			return
		}
	}
}

type query struct {
	nonce []byte
	since uint64
	banks []crypto.Hash
}

// parseQuery reads the query as the agent does (attest/agent's handler).
func parseQuery(raw string) (query, error) {
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
	if q.nonce, err = hex.DecodeString(vals.Get("nonce")); err != nil || len(q.nonce) < 8 || len(q.nonce) > 64 {
		return query{}, fmt.Errorf("nonce: want 8 to 64 bytes in hex")
	}
	if v := vals.Get("since"); v != "" {
		if q.since, err = strconv.ParseUint(v, 10, 63); err != nil {
			return query{}, fmt.Errorf("since: want a record count")
		}
	}
	for _, n := range vals["bank"] {
		h, err := eventlog.ParseBank(n)
		if err != nil || slices.Contains(q.banks, h) {
			return query{}, fmt.Errorf("bank %s: not one this agent extends, or asked twice", n)
		}
		q.banks = append(q.banks, h)
	}
	return q, nil
}

// Server is a fleet served over HTTP on a loopback port.
type Server struct {
	// URL is the server's base (http://127.0.0.1:PORT); agent i's base
	// URL is [BaseURL](URL, i).
	URL string
	srv *http.Server
	ln  net.Listener
}

// Serve serves the fleet's agents on addr ("127.0.0.1:0" for a free
// loopback port) until Close.
func (f *Fleet) Serve(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + ln.Addr().String(), ln: ln,
		srv: &http.Server{Handler: f.Handler(), ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

// AgentURL is agent i's base URL.
func (s *Server) AgentURL(i int) string { return BaseURL(s.URL, i) }

// Close stops the server and its connections.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	return s.srv.Close()
}
