package attest

import (
	"context"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
)

// Fetch gets evidence for nonce, quoting banks (all the agent's when
// empty), from an agent at base (an http or https URL). It reads the whole
// log into memory: [OpenFetch] streams it.
func Fetch(ctx context.Context, client *http.Client, base string, nonce []byte, banks ...crypto.Hash) (*Evidence, error) {
	return FetchSince(ctx, client, base, nonce, 0, banks...)
}

// FetchSince is Fetch for the records from since on: the caller holds the
// earlier ones.
func FetchSince(ctx context.Context, client *http.Client, base string, nonce []byte, since uint64, banks ...crypto.Hash) (*Evidence, error) {
	s, err := OpenFetch(ctx, client, base, nonce, FetchOptions{Since: since, Banks: banks})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ev := s.Evidence
	if ev.Log, err = io.ReadAll(s.Log); err != nil {
		return nil, fmt.Errorf("%w: evidence log: %v", ErrInvalid, err)
	}
	return ev, nil
}

// FetchOptions configures [OpenFetch].
type FetchOptions struct {
	// Since asks for the records from this one on (the caller holds the
	// earlier ones).
	Since uint64
	// Banks are the banks to quote; all the agent's when empty.
	Banks []crypto.Hash
	// MaxSize bounds the evidence read, header and log (default and at
	// most [MaxEvidence]); past it the log reader fails with [ErrTooLarge].
	MaxSize int64
	// Now is the clock for a Retry-After given as a date (default time.Now).
	Now func() time.Time
}

// ErrTooLarge marks evidence larger than the reader accepts.
var ErrTooLarge = errors.New("evidence larger than the limit")

// FetchError is an agent's answer other than 200 OK.
type FetchError struct {
	// StatusCode and Status are the HTTP status ("429 Too Many Requests").
	StatusCode int
	Status     string
	// Text is the start of the agent's explanation.
	Text string
	// RetryAfter is the agent's Retry-After (seconds or a date), when it
	// sent one that parses; zero otherwise.
	RetryAfter time.Duration
}

// Error describes the refusal.
func (e *FetchError) Error() string {
	return fmt.Sprintf("fetch evidence: %s: %s", e.Status, strings.TrimSpace(e.Text))
}

// Temporary reports whether trying again later may succeed: 429 Too Many
// Requests and 503 Service Unavailable.
func (e *FetchError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode == http.StatusServiceUnavailable
}

// Stream is evidence being read from an agent: its header, read and
// checked for shape (nothing in it is trusted yet), and its log, to be
// streamed to [Verify], which checks the quote before it reads the log.
type Stream struct {
	Evidence *Evidence
	// Log reads the log; past FetchOptions.MaxSize it fails with an error
	// wrapping [ErrTooLarge].
	Log  io.Reader
	body io.Closer
	cr   *capReader
}

// TooLarge reports whether reading went past FetchOptions.MaxSize.
func (s *Stream) TooLarge() bool { return s.cr.over }

// Close ends the response.
func (s *Stream) Close() error { return s.body.Close() }

// OpenFetch asks an agent at base for evidence bound to nonce, and reads
// the header only: the log is left for the caller to stream.
func OpenFetch(ctx context.Context, client *http.Client, base string, nonce []byte, o FetchOptions) (*Stream, error) {
	if o.MaxSize <= 0 || o.MaxSize > MaxEvidence {
		o.MaxSize = MaxEvidence
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	u := base + "/v1/evidence?nonce=" + hex.EncodeToString(nonce)
	if o.Since > 0 {
		u += "&since=" + strconv.FormatUint(o.Since, 10)
	}
	for _, b := range o.Banks {
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
	if rsp.StatusCode != http.StatusOK {
		defer rsp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(rsp.Body, 512))
		return nil, &FetchError{StatusCode: rsp.StatusCode, Status: rsp.Status, Text: string(b),
			RetryAfter: retryAfter(rsp.Header.Get("Retry-After"), o.Now())}
	}
	cr := &capReader{r: rsp.Body, left: o.MaxSize, max: o.MaxSize}
	ev, log, err := OpenEvidence(cr)
	if err != nil {
		rsp.Body.Close()
		if cr.over {
			return nil, fmt.Errorf("%w: the header alone is over %d bytes", ErrTooLarge, o.MaxSize)
		}
		return nil, err
	}
	return &Stream{Evidence: ev, Log: log, body: rsp.Body, cr: cr}, nil
}

// retryAfter parses a Retry-After value: delay-seconds or an HTTP-date
// (RFC 9110, section 10.2.3).
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// capReader reads up to max bytes, then fails with ErrTooLarge if there is more.
type capReader struct {
	r         io.Reader
	left, max int64
	over      bool
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.over {
		return 0, c.err()
	}
	if c.left <= 0 {
		// One more byte says whether the stream really goes on.
		var one [1]byte
		n, err := io.ReadFull(c.r, one[:])
		if n == 0 {
			return 0, err
		}
		c.over = true
		return 0, c.err()
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *capReader) err() error {
	return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, c.max)
}
