package sqlstore

import (
	"context"
	"errors"

	_ "github.com/jackc/pgx/v5/stdlib" // the PostgreSQL driver
)

// openPostgres opens a PostgreSQL store.
func openPostgres(ctx context.Context, dsn string, o Options) (*Store, error) {
	return nil, errors.New("sqlstore: PostgreSQL is not supported yet")
}
