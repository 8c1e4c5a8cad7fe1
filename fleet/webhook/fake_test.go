package webhook

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// memStore is a pure-Go fake of the outbox part of fleet.Store, for the
// sender's logic; the tests that matter run on the SQLite store too.
type memStore struct {
	fleet.Store // nil: the methods the sender never calls panic

	mu         sync.Mutex
	agents     map[string]*fleet.Agent
	endpoints  map[string]bool // url -> enabled
	deliveries map[string]*fleet.Delivery
	order      []string
	updates    int
}

func newMemStore() *memStore {
	return &memStore{agents: map[string]*fleet.Agent{}, endpoints: map[string]bool{}, deliveries: map[string]*fleet.Delivery{}}
}

func (m *memStore) AddAgent(_ context.Context, s fleet.Spec, now time.Time) (*fleet.Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := &fleet.Agent{Spec: s, ID: int64(len(m.agents) + 1), Status: fleet.Pending, Since: now}
	m.agents[s.Name] = a
	c := *a
	return &c, nil
}

func (m *memStore) SaveResult(_ context.Context, r fleet.Result) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range m.agents {
		if a.ID != r.AgentID {
			continue
		}
		if a.Status != r.Status {
			body, _ := json.Marshal(fleet.Payload{Type: fleet.EventStateChanged, Timestamp: r.At, Data: fleet.PayloadData{
				Agent: a.Name, OldState: a.Status, NewState: r.Status, Reason: r.Reason, Findings: r.Findings, Time: r.At}})
			for _, u := range slices.Sorted(mapKeys(m.endpoints)) {
				if !m.endpoints[u] {
					continue
				}
				var b [12]byte
				_, _ = rand.Read(b[:])
				d := &fleet.Delivery{ID: "msg_" + hex.EncodeToString(b[:]), Endpoint: u, Payload: body,
					Created: r.At, Next: r.At, State: StatePending}
				m.deliveries[d.ID] = d
				m.order = append(m.order, d.ID)
			}
		}
		a.Status, a.Reason = r.Status, r.Reason
		return nil
	}
	return fleet.ErrNotFound
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (m *memStore) CountByStatus(context.Context) (map[fleet.Status]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := map[fleet.Status]int{}
	for _, a := range m.agents {
		c[a.Status]++
	}
	return c, nil
}

func (m *memStore) SetEndpoints(_ context.Context, urls []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range urls {
		if _, ok := m.endpoints[u]; !ok {
			m.endpoints[u] = true
		}
	}
	return nil
}

func (m *memStore) DisableEndpoint(_ context.Context, url string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.endpoints[url] = false
	return nil
}

func (m *memStore) DueDeliveries(_ context.Context, now time.Time, limit int) ([]*fleet.Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*fleet.Delivery
	for _, id := range m.order {
		d := m.deliveries[id]
		if d.State == StatePending && !d.Next.After(now) {
			c := *d
			out = append(out, &c)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

func (m *memStore) UpdateDelivery(_ context.Context, d *fleet.Delivery) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.deliveries[d.ID]
	if old == nil {
		return fleet.ErrNotFound
	}
	c := *d
	c.Payload, c.Created, c.Endpoint = old.Payload, old.Created, old.Endpoint
	m.deliveries[d.ID] = &c
	m.updates++
	return nil
}

func (m *memStore) Deliveries(_ context.Context, endpoint string, limit int) ([]*fleet.Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*fleet.Delivery
	for i := len(m.order) - 1; i >= 0; i-- {
		d := m.deliveries[m.order[i]]
		if endpoint == "" || d.Endpoint == endpoint {
			c := *d
			out = append(out, &c)
			if len(out) == limit {
				break
			}
		}
	}
	return out, nil
}

func (m *memStore) Close() error { return nil }

func (m *memStore) Agent(_ context.Context, name string) (*fleet.Agent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.agents[name]
	if a == nil {
		return nil, fleet.ErrNotFound
	}
	c := *a
	return &c, nil
}
