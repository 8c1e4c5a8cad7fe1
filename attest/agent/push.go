package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
)

// Challenge is a verifier's answer to POST /v1/push/{name}/challenge:
// what the next evidence must be bound to and hold.
type Challenge struct {
	// Nonce is the fresh nonce, in hex (single use, valid until Expires).
	Nonce string `json:"nonce"`
	// Since is the first record the verifier does not hold.
	Since uint64 `json:"since"`
	// Banks and PCRs to quote.
	Banks   []string  `json:"banks"`
	PCRs    []int     `json:"pcrs"`
	Expires time.Time `json:"expires"`
}

// PushReply is a verifier's answer to POST /v1/push/{name}/evidence.
type PushReply struct {
	State  string `json:"state"`
	Reason string `json:"reason"`
	// NextInSeconds is when to push next: 0 is at once (a new boot's
	// whole log is wanted, say); nil when the verifier names no time.
	NextInSeconds *float64 `json:"next_in_seconds"`
}

// PushError is a verifier's answer other than 200 OK.
type PushError struct {
	// Step is "challenge" or "evidence".
	Step string
	// StatusCode and Status are the HTTP status.
	StatusCode int
	Status     string
	// Message is the verifier's {"error":...}, or the start of its body.
	Message string
	// RetryAfter is the verifier's Retry-After in seconds, when given.
	RetryAfter time.Duration
}

// Error describes the refusal.
func (e *PushError) Error() string {
	return fmt.Sprintf("push %s: %s: %s", e.Step, e.Status, e.Message)
}

// PushOptions configures [Push] and [PushOnce].
type PushOptions struct {
	// URL is the verifier's base URL (http or https), Name the agent's
	// registered name.
	URL  string
	Name string
	// Token is the agent's push token, sent as "Authorization: Bearer";
	// it appears in no error and no report.
	Token string
	// Client makes the requests (default: a client with a one-minute
	// timeout). Redirects are never followed, so the token goes nowhere
	// but URL.
	Client *http.Client
	// Evidence collects the evidence a challenge asks for: bound to
	// nonce, quoting pcrs in banks, with the log from record since on,
	// encoded as GET /v1/evidence returns it. [HandlerOptions.Evidence]
	// does it for a TPM and a log.
	Evidence func(ctx context.Context, nonce []byte, since uint64, pcrs []int, banks []crypto.Hash) ([]byte, error)
	// Interval is the wait when the verifier's reply names none
	// (default one minute). A verifier's next_in_seconds is kept within
	// one day, and a second zero in a row waits MinBackoff, so that a
	// verifier cannot make the agent push in a tight loop.
	Interval time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed round
	// (defaults one second and five minutes); it doubles with each
	// failure in a row.
	MinBackoff, MaxBackoff time.Duration
	// Jitter is the fraction by which each wait varies at random, so that
	// agents started together do not push together (default 0.1; at most 1).
	Jitter float64
	// Report, when set, hears of each round's outcome and the wait before
	// the next (for the daemon's log).
	Report func(PushRound)
}

// PushRound is one round's outcome, for [PushOptions.Report].
type PushRound struct {
	// Reply is the verifier's verdict (nil when the round failed).
	Reply *PushReply
	// Records is the number of records sent, Since the first one's number.
	Since, Records uint64
	// Err is why the round failed (nil when it did not).
	Err error
	// Failures counts failed rounds in a row (0 after a success).
	Failures int
	// Wait is how long until the next round.
	Wait time.Duration
}

// Check reports whether the options are usable: a URL, a name that is
// one path segment, a token, an evidence source.
func (o PushOptions) Check() error { return o.defaults() }

func (o *PushOptions) defaults() error {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("push: verifier URL %q: want http:// or https://HOST[:PORT][/PATH]", o.URL)
	}
	o.URL = strings.TrimSuffix(o.URL, "/")
	if o.Name == "" || url.PathEscape(o.Name) != o.Name {
		return fmt.Errorf("push: agent name %q: want letters, digits, '.', '_' and '-'", o.Name)
	}
	if o.Token == "" {
		return errors.New("push: no token")
	}
	if o.Evidence == nil {
		return errors.New("push: no evidence source")
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: time.Minute}
	}
	c := *o.Client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	o.Client = &c
	if o.Interval <= 0 {
		o.Interval = time.Minute
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(o.MinBackoff, 5*time.Minute)
	}
	if o.Jitter <= 0 {
		o.Jitter = 0.1
	}
	o.Jitter = min(o.Jitter, 1)
	return nil
}

// Push attests to a verifier until ctx ends, as rimon watch --push does:
// each round asks for a challenge, collects evidence for it, posts it, and
// waits as long as the verifier says (with jitter); after a failure it
// waits longer each time (exponential backoff within MinBackoff and
// MaxBackoff, or the verifier's Retry-After). It returns ctx's error, or
// an error at once when the options are unusable.
func Push(ctx context.Context, o PushOptions) error {
	if err := o.defaults(); err != nil {
		return err
	}
	failures, zeros := 0, 0
	for {
		rd := pushOnce(ctx, o)
		if ctx.Err() != nil {
			if rd.Err == nil && o.Report != nil {
				o.Report(rd) // the verifier has the round: say so
			}
			return ctx.Err()
		}
		if rd.Err != nil {
			failures++
			rd.Wait = o.backoff(failures, rd.Err)
		} else {
			failures = 0
			rd.Wait = o.jitter(o.next(rd.Reply))
			if rd.Wait == 0 {
				if zeros++; zeros > 1 {
					rd.Wait = o.MinBackoff
				}
			} else {
				zeros = 0
			}
		}
		rd.Failures = failures
		if o.Report != nil {
			o.Report(rd)
		}
		t := time.NewTimer(rd.Wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// PushOnce makes one round: challenge, evidence, reply.
func PushOnce(ctx context.Context, o PushOptions) (*PushReply, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	rd := pushOnce(ctx, o)
	return rd.Reply, rd.Err
}

// next is how long the verifier asked the agent to wait.
func (o *PushOptions) next(r *PushReply) time.Duration {
	if r == nil || r.NextInSeconds == nil || *r.NextInSeconds != *r.NextInSeconds {
		return o.Interval
	}
	s := min(max(*r.NextInSeconds, 0), 86400)
	return time.Duration(s * float64(time.Second))
}

// backoff is the wait after the n-th failure in a row.
func (o *PushOptions) backoff(n int, err error) time.Duration {
	var pe *PushError
	if errors.As(err, &pe) && pe.RetryAfter > 0 {
		return min(max(pe.RetryAfter, o.MinBackoff), o.MaxBackoff)
	}
	d := o.MinBackoff
	for i := 1; i < n && d < o.MaxBackoff; i++ {
		d *= 2
	}
	return o.jitter(min(d, o.MaxBackoff))
}

// jitter varies d by up to ±Jitter of it.
func (o *PushOptions) jitter(d time.Duration) time.Duration {
	var b [8]byte
	rand.Read(b[:])
	f := (float64(binary.BigEndian.Uint64(b[:])>>11)/(1<<53)*2 - 1) * o.Jitter
	return max(time.Duration(float64(d)*(1+f)), 0)
}

func pushOnce(ctx context.Context, o PushOptions) PushRound {
	var c Challenge
	if err := o.post(ctx, "challenge", nil, &c); err != nil {
		return PushRound{Err: err}
	}
	nonce, err := hex.DecodeString(c.Nonce)
	if err != nil || len(nonce) < 8 || len(nonce) > 64 {
		return PushRound{Err: fmt.Errorf("push challenge: nonce %q: want 8 to 64 bytes in hex", c.Nonce)}
	}
	var banks []crypto.Hash
	for _, n := range c.Banks {
		h, err := eventlog.ParseBank(n)
		if err != nil || slices.Contains(banks, h) {
			return PushRound{Err: fmt.Errorf("push challenge: bank %q: unknown or named twice", n)}
		}
		banks = append(banks, h)
	}
	slices.Sort(banks)
	b, err := o.Evidence(ctx, nonce, c.Since, c.PCRs, banks)
	if err != nil {
		return PushRound{Err: fmt.Errorf("push: collect evidence: %w", err)}
	}
	rd := PushRound{Since: c.Since, Records: uint64(bytes.Count(b, []byte{0x1e})) - 1}
	var r PushReply
	if err := o.post(ctx, "evidence", b, &r); err != nil {
		rd.Err = err
		return rd
	}
	if r.State == "" {
		rd.Err = errors.New("push evidence: the verifier's reply names no state")
		return rd
	}
	rd.Reply = &r
	return rd
}

// maxReply bounds a verifier's reply.
const maxReply = 64 << 10

// post sends one request of the protocol and decodes its JSON reply.
func (o *PushOptions) post(ctx context.Context, step string, body []byte, out any) error {
	u := o.URL + "/v1/push/" + url.PathEscape(o.Name) + "/" + step
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("push %s: %w", step, err)
	}
	req.Header.Set("Authorization", "Bearer "+o.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json-seq")
	}
	req.Header.Set("Accept", "application/json")
	rsp, err := o.Client.Do(req)
	if err != nil {
		return fmt.Errorf("push %s: %w", step, err)
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(rsp.Body, maxReply+1))
	if err != nil {
		return fmt.Errorf("push %s: reading the reply: %w", step, err)
	}
	if rsp.StatusCode != http.StatusOK {
		pe := &PushError{Step: step, StatusCode: rsp.StatusCode, Status: rsp.Status}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			pe.Message = e.Error
		} else {
			pe.Message = strings.TrimSpace(string(b[:min(len(b), 200)]))
		}
		if n, err := strconv.ParseUint(rsp.Header.Get("Retry-After"), 10, 32); err == nil {
			pe.RetryAfter = time.Duration(n) * time.Second
		}
		return pe
	}
	if len(b) > maxReply {
		return fmt.Errorf("push %s: the reply is over %d bytes", step, maxReply)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("push %s: the reply is not the expected JSON: %v", step, err)
	}
	return nil
}

// Evidence collects evidence for a push challenge exactly as GET
// /v1/evidence would answer it (quote, values and log under the log's
// lock, the unrecorded paths, the Azure blob), for [PushOptions.Evidence].
// The challenge's PCRs must be the handler's. When the log holds fewer
// records than since (a new boot's log, shorter than the one the verifier
// holds), the whole log is sent (log_start 0): the quote's resetCount
// tells the verifier whether the machine rebooted.
func (o HandlerOptions) Evidence(ctx context.Context, nonce []byte, since uint64, pcrs []int, banks []crypto.Hash) ([]byte, error) {
	want := slices.Clone(o.PCRs)
	got := slices.Clone(pcrs)
	slices.Sort(want)
	slices.Sort(got)
	if len(got) > 0 && !slices.Equal(want, got) {
		return nil, fmt.Errorf("the verifier asks for PCRs %v, this agent extends %v", pcrs, o.PCRs)
	}
	for _, b := range banks {
		if !slices.Contains(o.Banks, b) {
			return nil, fmt.Errorf("the verifier asks for bank %s, which this agent does not extend", eventlog.BankName(b))
		}
	}
	if len(banks) == 0 {
		banks = o.Banks
	}
	b, status, msg := encodeEvidence(ctx, o, nonce, since, banks, nil)
	if status == http.StatusBadRequest && since > 0 {
		b, status, msg = encodeEvidence(ctx, o, nonce, 0, banks, nil)
	}
	if status != http.StatusOK {
		return nil, errors.New(msg)
	}
	return b, nil
}
