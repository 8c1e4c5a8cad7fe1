package sqlstore

import (
	"os"
	"testing"

	"github.com/rimon-dev/rimon/fleet/sqlstore/sqltest"
)

func TestMain(m *testing.M) { os.Exit(sqltest.Main(m)) }

// extraBackends lists the databases besides SQLite: PostgreSQL, on a
// private cluster.
func extraBackends(t testing.TB) []backend {
	return []backend{{name: "postgres", dsn: sqltest.Postgres}}
}
