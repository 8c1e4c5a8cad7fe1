package sqlstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
)

// Open a SQLite store, register an agent, lease it for an attestation and
// store the result.
func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	s, err := sqlstore.Open(ctx, "sqlite:"+filepath.Join(dir, "verifier.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if _, err := s.AddAgent(ctx, fleet.Spec{Name: "web-1", URL: "https://web-1.example:8443"}, now); err != nil {
		fmt.Println(err)
		return
	}
	due, _ := s.Claim(ctx, "replica-a", now, time.Minute, 10)
	for _, a := range due {
		err := s.SaveResult(ctx, fleet.Result{AgentID: a.ID, Version: a.Version, Owner: "replica-a", At: now,
			Status: fleet.Trusted, Reason: "all files approved", NextDue: now.Add(a.Interval)})
		fmt.Println(a.Name, err)
	}
	h, _ := s.History(ctx, "web-1", 0)
	fmt.Println(h[0].From, "→", h[0].To)
	// Output:
	// web-1 <nil>
	// pending → trusted
}
