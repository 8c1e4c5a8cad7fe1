package engine

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/policy"
)

// Events of the history this package writes (besides changes of state).
const (
	EventReboot    = "reboot"
	EventReference = "reference"
)

// kindOpaque marks a stored observation that stands for measurements the
// engine could not keep one by one (past the bound, or a path that is not
// UTF-8): re-evaluation from the observations fails while one is there.
const kindOpaque = "opaque"

// plan is what a round of an agent needs besides the evidence.
type plan struct {
	ak    crypto.PublicKey
	ref   *policy.Reference
	refFP string // attest.ReferenceFingerprint(ref)
	pcrs  []int
	banks []crypto.Hash
	// state is the saved state of the accepted prefix (nil: none), since
	// the record to ask from.
	state *verifier.State
	since uint64
}

// configError is a problem with the agent's registration or the stored
// state, not with its evidence.
type configError struct{ err error }

func (c configError) Error() string { return c.err.Error() }

// plan reads the agent's registration and saved state.
func (e *Engine) plan(ctx context.Context, a *fleet.Agent) (*plan, error) {
	p := &plan{pcrs: a.PCRs, banks: []crypto.Hash{crypto.SHA256}}
	if len(p.pcrs) == 0 {
		p.pcrs = []int{23}
	}
	if len(a.Banks) > 0 {
		p.banks = nil
		for _, b := range a.Banks {
			h, err := eventlog.ParseBank(b)
			if err != nil {
				return nil, configError{fmt.Errorf("banks: %v", err)}
			}
			p.banks = append(p.banks, h)
		}
	}
	switch {
	case a.Enrolls():
		ak, err := enrolledAK(a)
		if err != nil {
			return nil, configError{err}
		}
		p.ak = ak.Key
	case a.AK != "":
		k, err := attest.ParsePublicKey([]byte(a.AK))
		if err != nil {
			return nil, configError{fmt.Errorf("ak: %v", err)}
		}
		p.ak = k
	case !a.Azure:
		return nil, configError{errors.New("no AK pinned, and the AK is not vouched for by Azure")}
	}
	if a.Reference != "" {
		ref, err := e.refs.get(ctx, e.store, a.Reference, e.o.Now())
		if err != nil {
			if errors.Is(err, fleet.ErrNotFound) {
				return nil, configError{fmt.Errorf("reference %s: not found", a.Reference)}
			}
			return nil, err
		}
		p.ref, p.refFP = ref.ref, ref.fp
	}
	if a.VMID != "" {
		if p.ref == nil {
			return nil, configError{errors.New("vm_id is pinned through a reference's azure section: name a reference")}
		}
		pinned := *p.ref
		pinned.SNP.VMUniqueID = a.VMID
		p.ref, p.refFP = &pinned, attest.ReferenceFingerprint(&pinned)
	}
	if a.Boot.Known && a.Boot.State != nil {
		st, err := verifier.ParseState(a.Boot.State)
		if err != nil {
			return nil, configError{fmt.Errorf("the stored replay state: %v (clear the agent to start again)", err)}
		}
		p.state, p.since = st, st.Records()
		if a.Boot.Refresh || st.Ref.Reference != p.refFP || !sameBanks(st.Log.Banks(), p.banks) {
			// The whole log, verified against the accepted prefix.
			p.since = 0
		}
	}
	return p, nil
}

func sameBanks(a, b []crypto.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[crypto.Hash]bool{}
	for _, h := range a {
		seen[h] = true
	}
	for _, h := range b {
		if !seen[h] {
			return false
		}
	}
	return true
}

// newNonce draws a fresh 32-byte nonce.
func newNonce() []byte {
	n := make([]byte, 32)
	rand.Read(n)
	return n
}

// round attests one agent.
func (e *Engine) round(ctx context.Context, j job) {
	a := j.a
	now := e.o.Now()
	if !a.NextDue.IsZero() {
		e.m.Lag(max(0, now.Sub(a.NextDue)))
	}
	if a.Status == fleet.Compromised {
		if j.owner != "" {
			e.store.Release(ctx, a.ID, j.owner)
		}
		return
	}
	start := time.Now()
	var r fleet.Result
	if a.Push {
		r = e.pushDeadline(a, now)
	} else {
		r = e.pullEnrolled(ctx, a)
	}
	if ctx.Err() != nil {
		// Stopping: a round cut short says nothing about the agent.
		if j.owner != "" {
			e.store.Release(context.WithoutCancel(ctx), a.ID, j.owner)
		}
		return
	}
	r.Owner = j.owner
	e.save(ctx, a, r, start)
}

// save stores a round's result.
func (e *Engine) save(ctx context.Context, a *fleet.Agent, r fleet.Result, start time.Time) error {
	r.AgentID, r.Version = a.ID, a.Version
	t := time.Now()
	err := e.store.SaveResult(context.WithoutCancel(ctx), r)
	if errors.Is(err, fleet.ErrLimit) && len(r.Observations) > 0 {
		// More distinct measurements than the store keeps: keep none but
		// a mark, which fails a re-evaluation (the next whole replay
		// decides).
		r.NewBoot = true
		r.Observations = []fleet.Observation{{Kind: kindOpaque, Path: "(measurements past the bound)", Record: r.Observations[len(r.Observations)-1].Record,
			Error: "more distinct measurements than the store keeps per agent (not kept for re-evaluation)"}}
		err = e.store.SaveResult(context.WithoutCancel(ctx), r)
	}
	e.m.DB("save", time.Since(t))
	if err != nil {
		e.m.Attestation("error", time.Since(start))
		if errors.Is(err, fleet.ErrConflict) {
			e.log.Debug("result not stored: the agent changed meanwhile", "agent", a.Name)
		} else {
			e.log.Error("store result", "agent", a.Name, "err", err)
		}
		if r.Owner != "" {
			e.store.Release(context.WithoutCancel(ctx), a.ID, r.Owner)
		}
		return err
	}
	e.m.Attestation(r.Status, time.Since(start))
	for _, ev := range r.Events {
		e.log.Info("agent event", "agent", a.Name, "event", ev.Event, "reason", ev.Reason)
	}
	if r.Status != a.Status {
		e.log.Info("agent state", "agent", a.Name, "from", a.Status, "to", r.Status, "reason", r.Reason)
	}
	return nil
}

// pull fetches and verifies evidence from a polled agent.
func (e *Engine) pull(ctx context.Context, a *fleet.Agent) fleet.Result {
	ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	now := e.o.Now()
	p, err := e.plan(ctx, a)
	if err != nil {
		return e.setupFailure(a, err, now)
	}
	client, err := e.client(a.Spec)
	if err != nil {
		return e.invalid(a, "agent_ca: "+err.Error(), nil, now)
	}
	state, since := p.state, p.since
	var events []fleet.Transition
	for range 3 {
		nonce := newNonce()
		s, err := attest.OpenFetch(ctx, client, a.URL, nonce, attest.FetchOptions{Since: since, Banks: p.banks, MaxSize: e.o.MaxEvidence, Now: e.o.Now})
		if err != nil {
			var fe *attest.FetchError
			if errors.As(err, &fe) && fe.StatusCode == http.StatusBadRequest && since > 0 && strings.HasPrefix(fe.Text, "since") {
				// The agent's log is shorter than the accepted prefix: ask
				// for all of it; the quote says whether this is a reboot.
				since = 0
				continue
			}
			return e.fetchFailure(ctx, a, err, now)
		}
		c := e.check(ctx, a, p, state, since, nonce, s.Evidence, s.Log, s.TooLarge, now)
		s.Close()
		if c.retry {
			// A reboot: the new boot's log from record 0, no state.
			state, since = nil, 0
			events = append(events, c.result.Events...)
			continue
		}
		if len(events) > 0 && c.result.Boot == nil {
			// The TPM signed another boot, whose evidence failed: the
			// old boot is over all the same.
			c.result.Boot, c.result.NewBoot = &fleet.Boot{}, true
			c.result.Events = append(events[:1], c.result.Events...)
		}
		return c.result
	}
	r := e.invalid(a, "the agent's evidence kept changing boots or refusing the records asked for", nil, now)
	r.Events = events
	return r
}

// checked is the outcome of one piece of evidence.
type checked struct {
	result fleet.Result
	// retry: the quote is of another boot than the state's: ask again
	// from record 0 without the state (result.Events holds the reboot).
	retry bool
}

// check verifies one piece of evidence (polled or pushed) and decides the
// agent's state. state and since are what the evidence was asked with.
func (e *Engine) check(ctx context.Context, a *fleet.Agent, p *plan, state *verifier.State, since uint64, nonce []byte,
	ev *attest.Evidence, log io.Reader, tooLarge func() bool, now time.Time) checked {
	switch {
	case ev.LogStart == 0:
		// The whole log instead of the records asked for: verified
		// against the accepted prefix all the same.
		since = 0
	case ev.LogStart != since:
		return checked{result: e.invalid(a, fmt.Sprintf("the evidence starts at record %d, record %d was asked for", ev.LogStart, since), nil, now)}
	}
	wr := &watchReader{r: log}
	o := verifier.Options{AK: p.ak, Nonce: nonce, PCRs: p.pcrs, Banks: p.banks, Reference: p.ref, ReferenceFingerprint: p.refFP, State: state,
		SaveState: true, Observe: true, AzureRoots: e.o.AzureRoots, Now: e.o.Now()}
	res, err := verifier.Verify(ctx, verifier.Evidence{Header: ev, Log: wr}, o)
	// Drain what the verifier left unread (records past a broken one), so
	// that a body over the limit is known as such.
	if wr.err == nil && err == nil {
		io.Copy(io.Discard, wr)
	}
	switch {
	case tooLarge != nil && tooLarge():
		return checked{result: e.invalid(a, fmt.Sprintf("evidence larger than the limit of %d bytes", e.maxEvidence()), nil, now)}
	case errors.Is(wr.err, attest.ErrTooLarge):
		return checked{result: e.invalid(a, "evidence: "+wr.err.Error(), nil, now)}
	case wr.err != nil:
		return checked{result: e.unreachable(a, "reading the evidence: "+wr.err.Error(), now)}
	case ctx.Err() != nil:
		return checked{result: e.unreachable(a, fmt.Sprintf("no answer within %v", e.o.Timeout), now)}
	}
	var clk *verifier.Clock
	if res != nil {
		clk = res.Clock
	}
	known := a.Boot.Known && clk != nil
	reboot := known && clk.ResetCount != a.Boot.ResetCount
	if reboot && state != nil {
		return checked{retry: true, result: fleet.Result{Events: []fleet.Transition{{Event: EventReboot, At: now, Agent: a.Name, From: a.Status, To: a.Status,
			Reason: "the TPM was reset (the quote's resetCount changed): a new boot, whose log is verified from record 0"}}}}
	}
	checks, _ := json.Marshal(resultChecks(res))
	if err != nil {
		var ce *verifier.CheckError
		switch {
		case errors.Is(err, attest.ErrPriorUnusable):
			return checked{result: e.invalid(a, err.Error()+" (clear the agent to accept a new history)", checks, now)}
		case errors.As(err, &ce) && state != nil && (ce.Check == attest.CheckContinuity || ce.Check == attest.CheckLog) && unreadable(err):
			// A log that does not read (garbage, a flipped byte on the
			// way) proves nothing of a rewrite: invalid, not the sticky
			// compromised. The accepted prefix is kept: the next log that
			// reads must still extend it.
			return checked{result: e.invalid(a, named(ce.Check, ce)+" (the log does not read)", checks, now)}
		case errors.As(err, &ce) && state != nil && (ce.Check == attest.CheckContinuity || ce.Check == attest.CheckLog):
			return checked{result: e.compromised(a, named(attest.CheckContinuity, ce), checks, now)}
		case errors.As(err, &ce):
			return checked{result: e.invalid(a, named(ce.Check, ce), checks, now)}
		}
		return checked{result: e.invalid(a, err.Error(), checks, now)}
	}
	if known && !reboot && clk.Clock < a.Boot.Clock {
		return checked{result: e.compromised(a, fmt.Sprintf("the TPM clock ran backwards within a boot (%d ms, %d ms before)", clk.Clock, a.Boot.Clock), checks, now)}
	}
	v := res.Verdict
	r := fleet.Result{At: now, Checks: checks, NextDue: now.Add(jitter(interval(a))), NewBoot: since == 0}
	stateJSON, err := res.State.MarshalJSON()
	if err != nil || clk == nil {
		return checked{result: e.invalid(a, "no state to continue from after this evidence", checks, now)}
	}
	r.Boot = &fleet.Boot{Known: true, ResetCount: clk.ResetCount, RestartCount: clk.RestartCount, Clock: clk.Clock, State: stateJSON}
	if reboot {
		r.Events = []fleet.Transition{{Event: EventReboot, At: now, Agent: a.Name, From: a.Status,
			Reason: "the TPM was reset (the quote's resetCount changed): a new boot, whose log was verified from record 0"}}
	}
	findings := append(append([]attest.Finding{}, v.Failures...), v.Warnings...)
	r.Findings, _ = json.Marshal(findings)
	if v.Trusted {
		r.Status, r.Reason = fleet.Trusted, fmt.Sprintf("%s verified, %s approved", plural(v.Covered, "record"), plural(v.Measured, "measurement"))
		if p.ref == nil {
			r.Reason = fmt.Sprintf("%s verified; no reference: the content is not checked (authenticity only)", plural(v.Covered, "record"))
		}
		if v.WarningTotal > 0 {
			r.Reason += fmt.Sprintf(", %d warning(s)", v.WarningTotal)
		}
	} else {
		r.Status = fleet.Untrusted
		r.Reason = fmt.Sprintf("%d finding(s)", v.FailureTotal)
		if len(v.Failures) > 0 {
			r.Reason += ": " + v.Failures[0].String()
		}
	}
	r.Observations = observations(v)
	if n := v.Covered - int(since); n > 0 {
		e.m.Records(n)
	}
	for i := range r.Events {
		r.Events[i].To = r.Status
	}
	return checked{result: r}
}

// named is a failed check's message, starting with the check's name.
func named(check string, ce *verifier.CheckError) string {
	msg := ce.Error()
	if strings.HasPrefix(msg, check+": ") {
		return msg
	}
	return check + ": " + msg
}

// plural writes "1 record", "2 records".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// unreadable reports whether a failed check rests on a log that did not
// read (a record that does not parse, a digest that is not its content's,
// a torn end) rather than on records that read and diverge.
func unreadable(err error) bool {
	var re *eventlog.RecordError
	var pe *eventlog.ReplayError
	return errors.As(err, &re) || errors.As(err, &pe) || errors.Is(err, eventlog.ErrTorn)
}

// resultChecks is res.Checks, or none.
func resultChecks(res *verifier.Result) []verifier.Check {
	if res == nil {
		return nil
	}
	return res.Checks
}

// observations turns the verdict's observations into the store's.
func observations(v *attest.Result) []fleet.Observation {
	out := make([]fleet.Observation, 0, len(v.Observations))
	for _, o := range v.Observations {
		fo := fleet.Observation{Path: o.Path, Kind: o.Kind, Deleted: o.Deleted, SHA256: o.SHA256, ManifestDigest: o.ManifestDigest,
			ConfigDigest: o.ConfigDigest, Cause: o.Cause, Error: o.Error, Record: uint64(o.Record), Latest: o.Latest}
		if o.Kind == attest.KindContainer {
			// The store keeps no launch or image digests: a container start
			// fails a re-evaluation until the next whole replay.
			fo.Kind, fo.Path, fo.Error = kindOpaque, o.Container.Name, "container start "+o.Container.Name+" (not kept for re-evaluation)"
		}
		if o.PathEscaped != "" {
			// The store keeps UTF-8 paths: this one is not followed, and
			// fails a re-evaluation until the next whole replay.
			fo.Kind, fo.Path, fo.Error = kindOpaque, o.PathEscaped, "unmeasured path_escaped "+o.PathEscaped+" (not kept for re-evaluation)"
		}
		out = append(out, fo)
	}
	if v.ObservationsOver > 0 {
		out = append(out, fleet.Observation{Kind: kindOpaque, Path: "(measurements past the bound)", Record: uint64(max(v.Covered-1, 0)),
			Error: fmt.Sprintf("%d measurements past the %d kept per round (not kept for re-evaluation)", v.ObservationsOver, attest.MaxObservations)})
	}
	return out
}

func (e *Engine) maxEvidence() int64 {
	if e.o.MaxEvidence <= 0 || e.o.MaxEvidence > attest.MaxEvidence {
		return attest.MaxEvidence
	}
	return e.o.MaxEvidence
}

// watchReader remembers the first read error other than io.EOF: a log
// cut short by the network is not a torn log.
type watchReader struct {
	r   io.Reader
	err error
}

func (w *watchReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF && w.err == nil {
		w.err = err
	}
	return n, err
}

// The results of rounds that produced no verdict.

func (e *Engine) keep(a *fleet.Agent, now time.Time) fleet.Result {
	return fleet.Result{At: now, Status: a.Status, Reason: a.Reason, Findings: a.Findings, Checks: a.Checks, Failures: a.Failures}
}

func (e *Engine) invalid(a *fleet.Agent, reason string, checks []byte, now time.Time) fleet.Result {
	return fleet.Result{At: now, Status: fleet.Invalid, Reason: reason, Checks: checks, NextDue: now.Add(jitter(interval(a)))}
}

func (e *Engine) compromised(a *fleet.Agent, reason string, checks []byte, now time.Time) fleet.Result {
	return fleet.Result{At: now, Status: fleet.Compromised, Reason: reason, Checks: checks, NextDue: now.Add(jitter(interval(a)))}
}

func (e *Engine) unreachable(a *fleet.Agent, reason string, now time.Time) fleet.Result {
	n := a.Failures + 1
	return fleet.Result{At: now, Status: fleet.Unreachable, Reason: reason, Failures: n, NextDue: now.Add(e.backoff(a, n))}
}

// setupFailure is a round that could not start: the registration or the
// stored state is unusable (invalid), or the store failed (tried again
// at the next interval, state kept).
func (e *Engine) setupFailure(a *fleet.Agent, err error, now time.Time) fleet.Result {
	var ce configError
	if errors.As(err, &ce) {
		return e.invalid(a, "registration: "+ce.Error(), nil, now)
	}
	r := e.keep(a, now)
	r.NextDue = now.Add(jitter(interval(a)))
	e.log.Error("prepare a round", "agent", a.Name, "err", err)
	return r
}

// fetchFailure classifies an agent that did not answer with evidence.
func (e *Engine) fetchFailure(ctx context.Context, a *fleet.Agent, err error, now time.Time) fleet.Result {
	var fe *attest.FetchError
	switch {
	case errors.As(err, &fe):
		if fe.StatusCode >= 500 || fe.Temporary() {
			return e.unreachable(a, "the agent answered "+fe.Status+": "+strings.TrimSpace(fe.Text), now)
		}
		return e.invalid(a, "the agent refused: "+fe.Status+": "+strings.TrimSpace(fe.Text), nil, now)
	case errors.Is(err, attest.ErrTooLarge):
		return e.invalid(a, "evidence: "+err.Error(), nil, now)
	case ctx.Err() != nil:
		return e.unreachable(a, fmt.Sprintf("no answer within %v", e.o.Timeout), now)
	case errors.Is(err, attest.ErrInvalid):
		return e.invalid(a, err.Error(), nil, now)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		// Without the URL, which holds the nonce.
		return e.unreachable(a, "fetch evidence: "+ue.Err.Error(), now)
	}
	return e.unreachable(a, err.Error(), now)
}
