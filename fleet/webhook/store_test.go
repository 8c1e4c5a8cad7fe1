package webhook

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
)

// newStore opens a fresh SQLite store in a file of its own.
func newStore(t testing.TB) fleet.Store {
	t.Helper()
	return openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "verifier.db"))
}

func openStore(t testing.TB, dsn string) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
