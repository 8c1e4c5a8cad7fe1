package loadgen

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/attest/agent"
)

// PushOptions configures [Fleet.Push].
type PushOptions struct {
	// URL is the verifier's base URL.
	URL string
	// Agents are the indexes of the agents that push (default all).
	Agents []int
	// Client makes the requests (default one shared client).
	Client *http.Client
	// Interval, MinBackoff, MaxBackoff and Jitter are as in
	// [agent.PushOptions].
	Interval, MinBackoff, MaxBackoff time.Duration
	Jitter                           float64
	// Report, when set, hears of every agent's rounds.
	Report func(i int, r agent.PushRound)
}

// Push makes the agents push their evidence to a verifier with the agent's
// own push client ([agent.Push]), each under its Name with its Token,
// until ctx ends. A push is recorded as a [Poll] (Push true, Verifier the
// URL, Status 200 when the verifier gave a verdict); an agent with a
// [Fault] other than OK does not push while it lasts.
func (f *Fleet) Push(ctx context.Context, o PushOptions) error {
	idx := o.Agents
	if idx == nil {
		for i := range f.agents {
			idx = append(idx, i)
		}
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: time.Minute,
			Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second}}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(idx))
	for k, i := range idx {
		if i < 0 || i >= len(f.agents) {
			return errors.New("loadgen: push: no such agent")
		}
		a := f.agents[i]
		var start time.Time
		var since uint64
		po := agent.PushOptions{URL: o.URL, Name: a.Name, Token: a.Token, Client: o.Client,
			Interval: o.Interval, MinBackoff: o.MinBackoff, MaxBackoff: o.MaxBackoff, Jitter: o.Jitter,
			Evidence: func(ctx context.Context, nonce []byte, s uint64, pcrs []int, banks []crypto.Hash) ([]byte, error) {
				start, since = f.opts.Now(), s
				if len(pcrs) > 0 && !slices.Equal(pcrs, []int{PCR}) {
					return nil, errors.New("loadgen: the verifier asks for PCRs other than 23")
				}
				if fl := a.Fault(); fl != OK {
					return nil, errors.New("loadgen: agent " + fl.String())
				}
				if s > a.Records() {
					s = 0 // a new boot's log: send it whole
				}
				return a.EvidenceBytes(nonce, s, banks)
			},
			Report: func(r agent.PushRound) {
				if !start.IsZero() {
					p := Poll{Agent: i, Verifier: o.URL, Start: start, End: f.opts.Now(), Since: since,
						Records: a.Records(), Fault: a.Fault(), Push: true}
					if r.Err == nil {
						p.Status = http.StatusOK
					} else if pe := (*agent.PushError)(nil); errors.As(r.Err, &pe) {
						p.Status = pe.StatusCode
					}
					f.pollMu.Lock()
					f.polls = append(f.polls, p)
					f.pollMu.Unlock()
					start = time.Time{}
				}
				if o.Report != nil {
					o.Report(i, r)
				}
			}}
		if err := po.Check(); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = agent.Push(ctx, po)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	return ctx.Err()
}
