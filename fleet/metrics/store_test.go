package metrics

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/rimon-dev/rimon/fleet"
)

// memStore counts agents (a stand-in until the SQLite store is here).
type memStore struct {
	fleet.Store
	mu     sync.Mutex
	agents map[string]fleet.Status
}

func (m *memStore) CountByStatus(context.Context) (map[fleet.Status]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := map[fleet.Status]int{}
	for _, s := range m.agents {
		c[s]++
	}
	return c, nil
}

func newStore(t *testing.T) fleet.Store {
	return &memStore{agents: map[string]fleet.Status{}}
}

var agentSeq int

func addAgents(t *testing.T, st fleet.Store, n map[fleet.Status]int) {
	m := st.(*memStore)
	m.mu.Lock()
	defer m.mu.Unlock()
	for s, k := range n {
		for range k {
			agentSeq++
			m.agents[fmt.Sprint("a", agentSeq)] = s
		}
	}
}
