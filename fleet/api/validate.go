package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/enroll"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/fleet"
)

// MaxInterval is the longest interval accepted.
const MaxInterval = 24 * time.Hour

// fieldError is bad input in one field of a request.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.field + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

func badField(field, format string, a ...any) error {
	return &fieldError{field: field, err: fmt.Errorf(format, a...)}
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	uuidRE = regexp.MustCompile(`^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$`)
)

// checkName checks an agent's or a reference's name.
func checkName(field, name string) error {
	if !nameRE.MatchString(name) || name == "." || name == ".." {
		return badField(field, "%q: want 1 to 128 characters of A-Z a-z 0-9 . _ - (not . or ..)", name)
	}
	return nil
}

// specFrom validates a request and makes the spec to store, with the
// defaults filled in. references looks a reference up by name.
func specFrom(ctx context.Context, in AgentSpec, references func(context.Context, string) (*fleet.Reference, error)) (fleet.Spec, error) {
	s := fleet.Spec{Name: in.Name, URL: in.URL, AgentCA: in.AgentCA, AK: in.AK, Azure: in.Azure, VMID: in.VMID,
		Reference: in.Reference, Interval: time.Duration(in.Interval), Push: in.Push, EKCA: in.EKCA, AKCA: in.AKCA}
	if err := checkName("name", s.Name); err != nil {
		return s, err
	}
	// Where the evidence comes from.
	if s.Push {
		if s.URL != "" {
			return s, badField("url", "an agent that pushes has no URL (leave out url, or push)")
		}
		if s.AgentCA != "" {
			return s, badField("agent_ca", "an agent that pushes is not connected to: no agent CA")
		}
	} else {
		if s.URL == "" {
			return s, badField("url", "required (the agent's evidence endpoint, https://HOST:PORT), unless the agent pushes (push: true)")
		}
		u, err := url.Parse(s.URL)
		switch {
		case err != nil:
			return s, badField("url", "%v", err)
		case u.Scheme != "http" && u.Scheme != "https":
			return s, badField("url", "%q: want an http or https URL", s.URL)
		case u.Host == "":
			return s, badField("url", "%q: no host", s.URL)
		case u.User != nil:
			return s, badField("url", "user information in the URL is not supported")
		case u.RawQuery != "" || u.Fragment != "":
			return s, badField("url", "%q: want the agent's base URL, without query or fragment", s.URL)
		}
		if s.AgentCA != "" {
			if u.Scheme != "https" {
				return s, badField("agent_ca", "a CA to pin goes with an https URL")
			}
			if err := checkCerts([]byte(s.AgentCA)); err != nil {
				return s, badField("agent_ca", "%v", err)
			}
		}
	}
	// How the AK is trusted.
	switch {
	case s.Enrolls() && (s.AK != "" || s.Azure):
		return s, badField("ek_ca", "ek_ca and ak_ca enroll the AK: give them without a pinned AK or azure")
	case s.Enrolls() && s.Push:
		return s, badField("ek_ca", "enrollment asks the agent for its identity, which an agent that pushes is not asked: give its URL")
	case s.Enrolls():
		for _, f := range []struct{ field, pem string }{{"ek_ca", s.EKCA}, {"ak_ca", s.AKCA}} {
			if f.pem == "" {
				continue
			}
			if err := checkCAs([]byte(f.pem)); err != nil {
				return s, badField(f.field, "%v", err)
			}
		}
	case s.Azure && s.AK != "":
		return s, badField("ak", "give either a pinned AK or azure, not both")
	case !s.Azure && s.AK == "":
		return s, badField("ak", "required: the agent's attestation key (PEM), or azure: true, or the CAs to enroll it with (ek_ca, ak_ca)")
	case s.AK != "":
		if _, err := attest.ParsePublicKey([]byte(s.AK)); err != nil {
			return s, badField("ak", "%v", err)
		}
	}
	if s.VMID != "" {
		if !s.Azure {
			return s, badField("vm_id", "goes with azure: true")
		}
		if !uuidRE.MatchString(s.VMID) {
			return s, badField("vm_id", "%q: want a vmUniqueId (a GUID such as 01234567-89ab-cdef-0123-456789abcdef)", s.VMID)
		}
	}
	if s.Reference != "" {
		if err := checkName("reference", s.Reference); err != nil {
			return s, err
		}
		if _, err := references(ctx, s.Reference); errors.Is(err, fleet.ErrNotFound) {
			return s, badField("reference", "no reference named %q (add it first: rimon fleet reference add %s FILE, or POST /v1/references)", s.Reference, s.Reference)
		} else if err != nil {
			return s, err
		}
	}
	// What is quoted.
	s.PCRs = slices.Clone(in.PCRs)
	if len(s.PCRs) == 0 {
		s.PCRs = []int{23}
	}
	for _, p := range s.PCRs {
		if p < 0 || p > 23 {
			return s, badField("pcrs", "%d: want PCR indexes from 0 to 23", p)
		}
	}
	slices.Sort(s.PCRs)
	if len(slices.Compact(slices.Clone(s.PCRs))) != len(s.PCRs) {
		return s, badField("pcrs", "%v: a PCR named twice", in.PCRs)
	}
	s.Banks = slices.Clone(in.Banks)
	if len(s.Banks) == 0 {
		s.Banks = []string{"sha256"}
	}
	strong := false
	for _, b := range s.Banks {
		if _, err := eventlog.ParseBank(b); err != nil {
			return s, badField("banks", "%v", err)
		}
		strong = strong || b != "sha1"
	}
	slices.Sort(s.Banks)
	if len(slices.Compact(slices.Clone(s.Banks))) != len(s.Banks) {
		return s, badField("banks", "%v: a bank named twice", in.Banks)
	}
	if !strong {
		return s, badField("banks", "sha1 alone is not accepted: add a stronger bank such as sha256")
	}
	// How often.
	if s.Interval == 0 {
		s.Interval = fleet.DefaultInterval
	}
	if s.Interval < fleet.MinInterval || s.Interval > MaxInterval {
		return s, badField("interval", "%v: want %v to %v (a duration such as \"60s\")", s.Interval, fleet.MinInterval, MaxInterval)
	}
	return s, nil
}

// checkCerts checks that b holds PEM certificates and nothing else.
func checkCerts(b []byte) error {
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is a %s, want CERTIFICATE", n+1, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %v", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate")
	}
	return nil
}

// checkCAs checks that b holds PEM CA certificates and nothing else.
func checkCAs(b []byte) error {
	if err := checkCerts(b); err != nil {
		return err
	}
	for i := 1; ; i++ {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return nil
		}
		c, _ := x509.ParseCertificate(blk.Bytes) // checked by checkCerts
		if c.BasicConstraintsValid && !c.IsCA {
			return fmt.Errorf("certificate %d (%s) is not a CA certificate", i, c.Subject)
		}
	}
}

// enrollmentView shows a stored enrollment (an enroll.Record).
func enrollmentView(a *fleet.Agent) *Enrollment {
	if a.Enrollment == nil {
		return nil
	}
	var rec enroll.Record
	if err := json.Unmarshal(a.Enrollment, &rec); err != nil {
		return &Enrollment{Path: "(unreadable: " + err.Error() + ")", Time: a.EnrolledAt}
	}
	v := &Enrollment{Path: rec.Path, Time: a.EnrolledAt, AKName: rec.AKName, EKIndex: rec.EKIndex}
	der := rec.EKCertificate
	if der == nil {
		der = rec.AKCertificate
	}
	if der != nil {
		v.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	for _, st := range rec.Steps {
		v.Steps = append(v.Steps, EnrollmentStep{Name: st.Name, Detail: st.Detail})
	}
	return v
}

// view is how the API shows a stored agent; full adds what lists leave out.
func view(a *fleet.Agent, full bool) Agent {
	v := Agent{
		AgentSpec: AgentSpec{Name: a.Name, URL: a.URL, Azure: a.Azure, VMID: a.VMID, Reference: a.Reference,
			PCRs: a.PCRs, Banks: a.Banks, Interval: Duration(a.Interval), Push: a.Push},
		State: a.Status, Reason: a.Reason, Since: a.Since, LastPoll: a.LastPoll, NextDue: a.NextDue, Failures: a.Failures,
	}
	if full {
		v.AK, v.AgentCA, v.EKCA, v.AKCA = a.AK, a.AgentCA, a.EKCA, a.AKCA
		v.Enrollment = enrollmentView(a)
		v.Findings, v.Checks = rawJSON(a.Findings), rawJSON(a.Checks)
		if a.Boot.Known {
			v.Boot = &Boot{ResetCount: a.Boot.ResetCount, RestartCount: a.Boot.RestartCount, Records: stateRecords(a.Boot.State)}
		}
	}
	return v
}

// rawJSON passes stored JSON on, or nothing when it is empty or not JSON.
func rawJSON(b []byte) []byte {
	if len(b) == 0 || string(b) == "null" || !jsonValid(b) {
		return nil
	}
	return b
}

func event(t fleet.Transition) Event {
	return Event{ID: t.ID, Agent: t.Agent, Time: t.At, Event: t.Event, OldState: t.From, NewState: t.To,
		Reason: t.Reason, Findings: rawJSON(t.Findings)}
}
