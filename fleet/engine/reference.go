package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/policy"
)

// refTTL is how long a reference read from the store is used before it is
// read again (a replica that did not see the replacement catches up).
const refTTL = 5 * time.Second

// refCache holds parsed references by fingerprint, and which fingerprint
// each name had when last read.
type refCache struct {
	mu     sync.Mutex
	parsed map[string]*parsedRef
	byName map[string]refEntry
}

type parsedRef struct {
	ref *policy.Reference
	fp  string // attest.ReferenceFingerprint(ref)
}

type refEntry struct {
	key  string
	read time.Time
}

// get returns the named reference, parsed.
func (c *refCache) get(ctx context.Context, store fleet.Store, name string, now time.Time) (*parsedRef, error) {
	c.mu.Lock()
	if en, ok := c.byName[name]; ok && now.Sub(en.read) < refTTL && now.Sub(en.read) >= 0 {
		p := c.parsed[en.key]
		c.mu.Unlock()
		return p, nil
	}
	c.mu.Unlock()
	r, err := store.Reference(ctx, name)
	if err != nil {
		return nil, err
	}
	key := r.Fingerprint
	if key == "" {
		s := sha256.Sum256(r.Body)
		key = "body:" + hex.EncodeToString(s[:])
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.parsed[key]
	if !ok {
		ref, err := policy.ParseReference(name, bytes.NewReader(r.Body))
		if err != nil {
			return nil, configError{fmt.Errorf("reference %s: %v", name, err)}
		}
		if len(c.parsed) >= 256 {
			clear(c.parsed)
		}
		p = &parsedRef{ref: ref, fp: attest.ReferenceFingerprint(ref)}
		c.parsed[key] = p
	}
	if len(c.byName) >= 4096 {
		clear(c.byName)
	}
	c.byName[name] = refEntry{key: key, read: now}
	return p, nil
}

// forget drops what the cache knows of a name.
func (c *refCache) forget(name string) {
	c.mu.Lock()
	delete(c.byName, name)
	c.mu.Unlock()
}

// ReferenceReplaced re-evaluates every agent that uses the named
// reference from its stored observations ([attest.Reevaluate]), stores
// each one's state with a "reference" event, and asks its next round for
// the whole log (Boot.Refresh), verified against the accepted prefix with
// the new reference. Agents that are not trusted or untrusted keep their
// state (compromised ones are left alone); their next round replays the
// whole log too. It returns the errors it met, joined.
func (e *Engine) ReferenceReplaced(ctx context.Context, name string) error {
	e.refs.forget(name)
	agents, err := e.store.AgentsUsing(ctx, name)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range agents {
		for try := 0; ; try++ {
			err := e.reevaluate(ctx, a)
			if !errors.Is(err, fleet.ErrConflict) || try == 3 {
				if err != nil {
					errs = append(errs, fmt.Errorf("agent %s: %w", a.Name, err))
				}
				break
			}
			if a, err = e.store.Agent(ctx, a.Name); err != nil {
				errs = append(errs, fmt.Errorf("agent %s: %w", a.Name, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// reevaluate re-evaluates one agent after its reference was replaced.
func (e *Engine) reevaluate(ctx context.Context, a *fleet.Agent) error {
	if a.Status == fleet.Compromised || !a.Boot.Known {
		return nil
	}
	now := e.o.Now()
	boot := a.Boot
	boot.Refresh = true
	r := e.keep(a, now)
	r.AgentID, r.Version, r.Boot, r.NextDue = a.ID, a.Version, &boot, a.NextDue
	if a.Status == fleet.Trusted || a.Status == fleet.Untrusted {
		p, err := e.plan(ctx, a)
		if err != nil {
			var ce configError
			if !errors.As(err, &ce) {
				return err
			}
			r.Status, r.Reason = fleet.Invalid, "registration: "+ce.Error()
		} else {
			obs, err := e.store.Observations(ctx, a.ID)
			if err != nil {
				return err
			}
			r.Status, r.Reason, r.Findings, err = reevaluated(obs, p.ref, a.Findings)
			if err != nil {
				return err
			}
		}
		r.Reason = "reference " + a.Reference + " replaced: " + r.Reason
		r.Events = []fleet.Transition{{Event: EventReference, At: now, Agent: a.Name, From: a.Status, To: r.Status, Reason: r.Reason, Findings: r.Findings}}
	}
	t := time.Now()
	err := e.store.SaveResult(ctx, r)
	e.m.DB("save", time.Since(t))
	if err == nil && r.Status != a.Status {
		e.log.Info("agent state", "agent", a.Name, "from", a.Status, "to", r.Status, "reason", r.Reason)
	}
	return err
}

// reevaluated checks stored observations against ref, carrying over the
// findings of the last verdict that do not depend on the reference
// (records after the quote, unrecorded changes).
func reevaluated(obs []fleet.Observation, ref *policy.Reference, lastFindings []byte) (fleet.Status, string, []byte, error) {
	var list []attest.Observation
	var failures []attest.Finding
	for _, o := range obs {
		if o.Kind == kindOpaque {
			failures = append(failures, attest.Finding{Measured: attest.Measured{Index: int(o.Record), Kind: kindOpaque, Path: o.Path, ErrorText: o.Error},
				Problem: "measurements not kept for re-evaluation: the next round replays the whole log"})
			continue
		}
		list = append(list, attest.Observation{Path: o.Path, Kind: o.Kind, Deleted: o.Deleted, SHA256: o.SHA256,
			ManifestDigest: o.ManifestDigest, ConfigDigest: o.ConfigDigest, Cause: o.Cause, Error: o.Error, Record: int(o.Record), Latest: o.Latest})
	}
	re, err := attest.Reevaluate(list, ref)
	if err != nil {
		return "", "", nil, err
	}
	var last []attest.Finding
	if len(lastFindings) > 0 {
		if err := json.Unmarshal(lastFindings, &last); err != nil {
			return "", "", nil, fmt.Errorf("stored findings: %v", err)
		}
	}
	for _, f := range last {
		if f.Kind == attest.KindTrailing || f.Kind == attest.KindUnrecorded {
			failures = append(failures, f)
		}
	}
	total := re.FailureTotal + len(failures)
	failures = append(failures, re.Failures...)
	findings, _ := json.Marshal(append(failures, re.Warnings...))
	if total == 0 {
		return fleet.Trusted, fmt.Sprintf("%d distinct measurements approved", len(list)), findings, nil
	}
	return fleet.Untrusted, fmt.Sprintf("%d finding(s): %s", total, failures[0].String()), findings, nil
}
