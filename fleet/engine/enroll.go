package engine

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/enroll"
	"github.com/rimon-dev/rimon/fleet"
)

// Enrollment: an agent registered with EK CAs or cloud AK roots
// (Spec.Enrolls) has no pinned AK. Its first round asks the agent for its
// identity (GET /v1/identity) and enrolls the AK (package attest/enroll:
// the EK certificate chains to Spec.EKCA and credential activation proves
// the AK is in that TPM, or the AK certificate chains to Spec.AKCA); the
// enrollment is stored with that round's result, and every later round
// checks quotes with the enrolled AK alone. When a quote is not signed by
// it, or the TPM was reset, the agent's identity is compared with the
// enrollment: another AK or EK makes the agent invalid, with what changed,
// until an operator asks for enrollment again (Store.Unenroll). The
// engine never enrolls an agent a second time by itself.

// pullEnrolled is pull for an agent whose AK is enrolled: it enrolls
// first when the agent has no enrollment yet.
func (e *Engine) pullEnrolled(ctx context.Context, a *fleet.Agent) fleet.Result {
	if !a.Enrolls() {
		return e.pull(ctx, a)
	}
	now := e.o.Now()
	var fresh []byte
	var ev fleet.Transition
	if a.Enrollment == nil {
		rec, how, fail := e.enroll(ctx, a, now)
		if fail != nil {
			return *fail
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return e.invalid(a, "enrollment: "+err.Error(), nil, now)
		}
		enrolled := *a
		enrolled.Enrollment = b
		a, fresh = &enrolled, b
		ev = fleet.Transition{Event: fleet.EventEnroll, At: now, Agent: a.Name, Reason: how}
	}
	r := e.pull(ctx, a)
	if fresh != nil {
		r.Enrollment = fresh
		r.Events = append([]fleet.Transition{ev}, r.Events...)
		return r
	}
	if r.Status == fleet.Invalid && strings.HasPrefix(r.Reason, attest.CheckSignature+": ") || rebooted(r) {
		if reason := e.identityChanged(ctx, a); reason != "" {
			changed := e.invalid(a, reason, r.Checks, now)
			if rebooted(r) {
				// The old boot is over all the same.
				changed.Boot, changed.NewBoot, changed.Events = &fleet.Boot{}, true, r.Events
			}
			return changed
		}
	}
	return r
}

func rebooted(r fleet.Result) bool {
	for _, ev := range r.Events {
		if ev.Event == EventReboot {
			return true
		}
	}
	return false
}

// enroll enrolls the agent's AK: the record to store and a sentence for
// the history, or the result of a failed enrollment (invalid, naming the
// step, or unreachable).
func (e *Engine) enroll(ctx context.Context, a *fleet.Agent, now time.Time) (*enroll.Record, string, *fleet.Result) {
	ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	fail := func(r fleet.Result) (*enroll.Record, string, *fleet.Result) { return nil, "", &r }
	o := enroll.Options{Now: e.o.Now}
	for _, ca := range []struct {
		field, pem string
		pool       **enroll.CAPool
	}{{"ek_ca", a.EKCA, &o.EKCAs}, {"ak_ca", a.AKCA, &o.AKCAs}} {
		if ca.pem == "" {
			continue
		}
		certs, err := enroll.ParseCertificates([]byte(ca.pem))
		if err != nil {
			return fail(e.invalid(a, "registration: "+ca.field+": "+err.Error(), nil, now))
		}
		*ca.pool = enroll.NewCAPool(certs...)
	}
	client, err := e.client(a.Spec)
	if err != nil {
		return fail(e.invalid(a, "agent_ca: "+err.Error(), nil, now))
	}
	id, err := agent.FetchIdentity(ctx, client, a.URL)
	if err != nil {
		if unreachable(ctx, err) {
			return fail(e.unreachable(a, "enrollment: "+withoutURL(err), now))
		}
		return fail(e.invalid(a, "enrollment: the agent's identity: "+err.Error(), nil, now))
	}
	// A network failure during activation is the agent's absence, not a
	// refusal: told apart here, since enroll.Enroll words it as a step.
	var lost error
	activate := agent.HTTPActivator(client, a.URL)
	res, err := enroll.Enroll(ctx, id, o, func(ctx context.Context, req *enroll.ActivationRequest) (*enroll.ActivationResponse, error) {
		ans, err := activate(ctx, req)
		if err != nil && unreachable(ctx, err) {
			lost = err
		}
		return ans, err
	})
	if err != nil && lost != nil {
		return fail(e.unreachable(a, "enrollment: credential activation: "+withoutURL(lost), now))
	}
	if err != nil {
		var ce *enroll.CheckError
		if errors.As(err, &ce) {
			return fail(e.invalid(a, "enrollment: "+ce.Error(), nil, now))
		}
		return fail(e.invalid(a, "enrollment: "+err.Error(), nil, now))
	}
	rec := res.Record()
	how := fmt.Sprintf("enrolled through %s: %s", rec.Path, stepsLine(rec.Steps))
	return &rec, how, nil
}

// identityChanged compares the agent's identity now with its enrollment:
// a reason to be invalid when the agent shows another AK or EK, "" when
// it does not (or cannot be asked: the round's own result stands).
func (e *Engine) identityChanged(ctx context.Context, a *fleet.Agent) string {
	var rec enroll.Record
	if err := json.Unmarshal(a.Enrollment, &rec); err != nil {
		return "enrollment: the stored enrollment: " + err.Error() + " (rimon fleet enroll " + a.Name + " enrolls it again)"
	}
	client, err := e.client(a.Spec)
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	id, err := agent.FetchIdentity(ctx, client, a.URL)
	if err != nil {
		return ""
	}
	if err := rec.Check(id); err != nil {
		return "identity: " + err.Error() + "; not enrolled again without an operator (rimon fleet enroll " + a.Name + ")"
	}
	return ""
}

// akCache holds the AKs read from stored enrollments, by the SHA-256 of
// the enrollment: reading one (go-tpm's unmarshalling, the checks) costs
// more than a round's other preparations. Content-addressed, so it is
// never stale; emptied when full.
var akCache = struct {
	sync.Mutex
	m map[[32]byte]*enroll.AK
}{m: map[[32]byte]*enroll.AK{}}

// maxAKCache bounds akCache (an entry is a few hundred bytes).
const maxAKCache = 1 << 16

// enrolledAK is the AK an enrolled agent's quotes are checked with.
func enrolledAK(a *fleet.Agent) (*enroll.AK, error) {
	if a.Enrollment == nil {
		return nil, errors.New("the AK is not enrolled yet (the next poll of the agent enrolls it)")
	}
	sum := sha256.Sum256(a.Enrollment)
	akCache.Lock()
	ak := akCache.m[sum]
	akCache.Unlock()
	if ak != nil {
		return ak, nil
	}
	ak, err := readAK(a.Enrollment)
	if err != nil {
		return nil, err
	}
	akCache.Lock()
	if len(akCache.m) >= maxAKCache {
		clear(akCache.m)
	}
	akCache.m[sum] = ak
	akCache.Unlock()
	return ak, nil
}

// readAK reads and checks the AK of a stored enrollment.
func readAK(enrollment []byte) (*enroll.AK, error) {
	var rec enroll.Record
	if err := json.Unmarshal(enrollment, &rec); err != nil {
		return nil, fmt.Errorf("the stored enrollment: %v", err)
	}
	ak, err := enroll.CheckAK(rec.AKPublic, rec.AKName)
	if err != nil {
		return nil, fmt.Errorf("the stored enrollment: %v", err)
	}
	return ak, nil
}

// stepsLine is the chain of trust in one line.
func stepsLine(steps []enroll.Step) string {
	parts := make([]string, len(steps))
	for i, s := range steps {
		parts[i] = s.Name
	}
	return strings.Join(parts, " → ")
}

// unreachable tells a network failure from an answer.
func unreachable(ctx context.Context, err error) bool {
	var ue *url.Error
	var ne net.Error
	return ctx.Err() != nil || errors.As(err, &ue) || errors.As(err, &ne)
}

// withoutURL is an error's text without the request URL.
func withoutURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " " + ue.Err.Error()
	}
	return err.Error()
}
