package metrics

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
)

// newStore opens a fresh SQLite store in a file of its own.
func newStore(t *testing.T) fleet.Store {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "verifier.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

var agentSeq int

// addAgents registers agents and brings each to its state with a result.
func addAgents(t *testing.T, st fleet.Store, n map[fleet.Status]int) {
	t.Helper()
	ctx := context.Background()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for s, k := range n {
		for range k {
			agentSeq++
			a, err := st.AddAgent(ctx, fleet.Spec{Name: fmt.Sprint("agent-", agentSeq), URL: "http://127.0.0.1:1",
				PCRs: []int{23}, Banks: []string{"sha256"}, Interval: time.Minute}, now)
			if err != nil {
				t.Fatal(err)
			}
			if s == fleet.Pending {
				continue
			}
			if err := st.SaveResult(ctx, fleet.Result{AgentID: a.ID, Version: a.Version, At: now, Status: s,
				Reason: "test", NextDue: now.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
	}
}
