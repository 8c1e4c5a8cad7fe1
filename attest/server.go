package attest

import (
	"context"
	"crypto"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

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
	// bursts of twice that; more gets 429 Too Many Requests.
	Rate float64
	// MaxLog bounds the log served (default 256 MiB).
	MaxLog int64
	// Decorate, when set, adds to each evidence document (the Azure blob).
	Decorate func(ctx context.Context, ev *Evidence) error
	// Unrecorded, when set, lists the paths the agent could not record
	// yet; they go into each evidence header.
	Unrecorded func() []Unrecorded
}

// Handler serves GET /v1/evidence?nonce=HEX[&bank=sha256...][&since=N]:
// fresh evidence bound to the caller's nonce, quoting the banks asked for
// (all of the handler's banks by default), with the log from record N on
// when since is given (the caller holds the earlier records). Quotes are taken one at a time and rate-limited, so
// clients cannot starve the measurements that share the TPM.
func Handler(o HandlerOptions) http.Handler {
	if o.Rate <= 0 {
		o.Rate = 5
	}
	if o.MaxLog <= 0 {
		o.MaxLog = 256 << 20
	}
	lim := &limiter{rate: o.Rate, burst: 2 * o.Rate, tokens: 2 * o.Rate, last: time.Now()}
	one := make(chan struct{}, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/evidence", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		nonce, err := hex.DecodeString(q.Get("nonce"))
		if err != nil || len(nonce) < 8 || len(nonce) > 64 {
			http.Error(w, "nonce: want 8 to 64 bytes in hex", http.StatusBadRequest)
			return
		}
		banks := o.Banks
		for k := range q {
			if k != "nonce" && k != "bank" && k != "since" {
				http.Error(w, "unknown parameter "+k+" (want nonce, bank and since)", http.StatusBadRequest)
				return
			}
		}
		var since uint64
		if v := q.Get("since"); v != "" {
			if since, err = strconv.ParseUint(v, 10, 63); err != nil {
				http.Error(w, "since: want a record count", http.StatusBadRequest)
				return
			}
		}
		if names := q["bank"]; len(names) > 0 {
			banks = nil
			for _, n := range names {
				h, err := eventlog.ParseBank(n)
				if err != nil || !slices.Contains(o.Banks, h) || slices.Contains(banks, h) {
					http.Error(w, "bank "+n+": not one this agent extends, or asked twice", http.StatusBadRequest)
					return
				}
				banks = append(banks, h)
			}
			slices.Sort(banks)
		}
		if !lim.allow() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		select {
		case one <- struct{}{}:
			defer func() { <-one }()
		case <-ctx.Done():
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		ev, err := Collect(ctx, o.TPM, o.LogPath, nonce, o.PCRs, banks)
		if err != nil {
			http.Error(w, "quote failed", http.StatusInternalServerError)
			return
		}
		if since > 0 {
			rest, err := SkipRecords(ev.Log, since)
			if err != nil {
				http.Error(w, "since: "+err.Error(), http.StatusBadRequest)
				return
			}
			ev.Log, ev.LogStart = rest, since
		}
		if o.Decorate != nil {
			if err := o.Decorate(ctx, ev); err != nil {
				http.Error(w, "hardware evidence unavailable", http.StatusInternalServerError)
				return
			}
		}
		if int64(len(ev.Log)) > o.MaxLog {
			http.Error(w, "log larger than the limit", http.StatusInsufficientStorage)
			return
		}
		b, err := ev.Marshal()
		if err != nil {
			http.Error(w, "encode failed", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json-seq")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b)
	})
	return mux
}

type limiter struct {
	mu                  sync.Mutex
	rate, burst, tokens float64
	last                time.Time
}

func (l *limiter) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// Fetch gets evidence for nonce, quoting banks (all the agent's when
// empty), from an agent at base (an http or https URL).
func Fetch(ctx context.Context, client *http.Client, base string, nonce []byte, banks ...crypto.Hash) (*Evidence, error) {
	return FetchSince(ctx, client, base, nonce, 0, banks...)
}

// FetchSince is Fetch for the records from since on: the caller holds the
// earlier ones.
func FetchSince(ctx context.Context, client *http.Client, base string, nonce []byte, since uint64, banks ...crypto.Hash) (*Evidence, error) {
	u := base + "/v1/evidence?nonce=" + hex.EncodeToString(nonce)
	if since > 0 {
		u += "&since=" + strconv.FormatUint(since, 10)
	}
	for _, b := range banks {
		u += "&bank=" + eventlog.BankName(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	rsp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch evidence: %w", err)
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(rsp.Body, 512))
		return nil, fmt.Errorf("fetch evidence: %s: %s", rsp.Status, b)
	}
	return ParseEvidence(rsp.Body)
}
