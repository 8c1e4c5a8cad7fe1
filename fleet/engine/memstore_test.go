package engine

import (
	"context"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// memStore is a pure-Go fleet.Store for the engine's logic tests: the
// contract of fleet.Store kept in maps (the SQL store is tested on its
// own and with the engine where it is available).
type memStore struct {
	mu     sync.Mutex
	next   int64
	agents map[string]*fleet.Agent
	refs   map[string]*fleet.Reference
	obs    map[int64][]fleet.Observation
	hist   map[string][]fleet.Transition
	saves  int
}

func newMemStore() *memStore {
	return &memStore{agents: map[string]*fleet.Agent{}, refs: map[string]*fleet.Reference{},
		obs: map[int64][]fleet.Observation{}, hist: map[string][]fleet.Transition{}}
}

var _ fleet.Store = (*memStore)(nil)

func clone(a *fleet.Agent) *fleet.Agent {
	c := *a
	c.Boot.State = slices.Clone(a.Boot.State)
	return &c
}

func (s *memStore) AddAgent(_ context.Context, sp fleet.Spec, now time.Time) (*fleet.Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.agents[sp.Name]; ok {
		return nil, fleet.ErrExists
	}
	s.next++
	a := &fleet.Agent{Spec: sp, ID: s.next, Status: fleet.Pending, Reason: "registered", Since: now, NextDue: now, Version: 1}
	s.agents[sp.Name] = a
	s.hist[sp.Name] = append(s.hist[sp.Name], fleet.Transition{Agent: sp.Name, At: now, Event: "enroll", To: fleet.Pending})
	return clone(a), nil
}

func (s *memStore) UpdateSpec(_ context.Context, name string, sp fleet.Spec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[name]
	if !ok {
		return fleet.ErrNotFound
	}
	a.Spec = sp
	a.Version++
	return nil
}

func (s *memStore) RemoveAgent(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.agents[name]; !ok {
		return fleet.ErrNotFound
	}
	delete(s.agents, name)
	return nil
}

func (s *memStore) Agent(_ context.Context, name string) (*fleet.Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[name]
	if !ok {
		return nil, fleet.ErrNotFound
	}
	return clone(a), nil
}

func (s *memStore) ListAgents(_ context.Context, f fleet.Filter) ([]*fleet.Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*fleet.Agent
	for _, a := range s.agents {
		if (f.Status == "" || a.Status == f.Status) && strings.Contains(a.Name, f.Name) {
			out = append(out, clone(a))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *memStore) CountByStatus(context.Context) (map[fleet.Status]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[fleet.Status]int{}
	for _, a := range s.agents {
		m[a.Status]++
	}
	return m, nil
}

func (s *memStore) PutReference(_ context.Context, r fleet.Reference, replace bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.refs[r.Name]
	if ok && !replace {
		return fleet.ErrExists
	}
	if !ok && replace {
		return fleet.ErrNotFound
	}
	c := r
	s.refs[r.Name] = &c
	return nil
}

func (s *memStore) Reference(_ context.Context, name string) (*fleet.Reference, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refs[name]
	if !ok {
		return nil, fleet.ErrNotFound
	}
	c := *r
	return &c, nil
}

func (s *memStore) ListReferences(context.Context) ([]*fleet.Reference, error) { return nil, nil }

func (s *memStore) AgentsUsing(_ context.Context, ref string) ([]*fleet.Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*fleet.Agent
	for _, a := range s.agents {
		if a.Reference == ref {
			out = append(out, clone(a))
		}
	}
	return out, nil
}

func (s *memStore) Claim(_ context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]*fleet.Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*fleet.Agent
	for _, a := range s.agents {
		if a.Status != fleet.Compromised && !a.NextDue.After(now) && (a.LeaseOwner == "" || !a.LeaseUntil.After(now)) {
			due = append(due, a)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].NextDue.Before(due[j].NextDue) })
	if len(due) > limit {
		due = due[:limit]
	}
	var out []*fleet.Agent
	for _, a := range due {
		a.LeaseOwner, a.LeaseUntil = owner, now.Add(lease)
		a.Version++
		out = append(out, clone(a))
	}
	return out, nil
}

func (s *memStore) Release(_ context.Context, id int64, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.agents {
		if a.ID == id && a.LeaseOwner == owner {
			a.LeaseOwner, a.LeaseUntil = "", time.Time{}
			a.Version++
		}
	}
	return nil
}

func (s *memStore) SaveResult(_ context.Context, r fleet.Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var a *fleet.Agent
	for _, x := range s.agents {
		if x.ID == r.AgentID {
			a = x
		}
	}
	if a == nil {
		return fleet.ErrNotFound
	}
	if a.Version != r.Version || r.Owner != "" && a.LeaseOwner != r.Owner {
		return fleet.ErrConflict
	}
	s.saves++
	if r.Status != a.Status {
		s.hist[a.Name] = append(s.hist[a.Name], fleet.Transition{Agent: a.Name, At: r.At, Event: "state", From: a.Status, To: r.Status, Reason: r.Reason, Findings: r.Findings})
		a.Since = r.At
	}
	for _, ev := range r.Events {
		s.hist[a.Name] = append(s.hist[a.Name], ev)
	}
	a.Status, a.Reason, a.Findings, a.Checks = r.Status, r.Reason, r.Findings, r.Checks
	a.LastPoll, a.NextDue, a.Failures = r.At, r.NextDue, r.Failures
	if r.Boot != nil {
		a.Boot = *r.Boot
	}
	if r.NewBoot {
		delete(s.obs, a.ID)
	}
	for _, o := range r.Observations {
		list := s.obs[a.ID]
		found := false
		for i := range list {
			p := &list[i]
			if o.Latest && p.Path == o.Path {
				p.Latest = false
			}
			if p.Path == o.Path && p.Kind == o.Kind && p.Deleted == o.Deleted && p.SHA256 == o.SHA256 &&
				p.ManifestDigest == o.ManifestDigest && p.ConfigDigest == o.ConfigDigest {
				*p, found = o, true
			}
		}
		if !found {
			list = append(list, o)
		}
		s.obs[a.ID] = list
	}
	a.LeaseOwner, a.LeaseUntil = "", time.Time{}
	a.Version++
	return nil
}

func (s *memStore) Observations(_ context.Context, id int64) ([]fleet.Observation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.obs[id]), nil
}

func (s *memStore) Clear(_ context.Context, name, reason string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.agents[name]
	if !ok {
		return fleet.ErrNotFound
	}
	s.hist[name] = append(s.hist[name], fleet.Transition{Agent: name, At: now, Event: "clear", From: a.Status, To: fleet.Pending, Reason: reason})
	a.Status, a.Reason, a.Since, a.NextDue, a.Boot, a.Failures = fleet.Pending, reason, now, now, fleet.Boot{}, 0
	delete(s.obs, a.ID)
	a.Version++
	return nil
}

func (s *memStore) History(_ context.Context, name string, limit int) ([]fleet.Transition, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := slices.Clone(s.hist[name])
	slices.Reverse(h)
	if limit > 0 && len(h) > limit {
		h = h[:limit]
	}
	return h, nil
}

func (s *memStore) SetEndpoints(context.Context, []string) error          { return nil }
func (s *memStore) DisableEndpoint(context.Context, string) error         { return nil }
func (s *memStore) UpdateDelivery(context.Context, *fleet.Delivery) error { return nil }
func (s *memStore) DueDeliveries(context.Context, time.Time, int) ([]*fleet.Delivery, error) {
	return nil, nil
}
func (s *memStore) Deliveries(context.Context, string, int) ([]*fleet.Delivery, error) {
	return nil, nil
}
func (s *memStore) Close() error { return nil }
