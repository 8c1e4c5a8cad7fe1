// Package sqlstore keeps the fleet verifier's state ([fleet.Store]) in SQL:
// an embedded SQLite file by default (a pure-Go driver, so the verifier
// builds without cgo), or PostgreSQL for fleets run by several replicas.
//
// # Storage
//
// One schema serves both databases; it is versioned (table schema_version)
// and migrated at [Open], in one transaction, by append-only migrations.
// The SQL is written once for both, with the few differences behind a
// dialect (column types, row locks, error codes). What is stored, and what
// is not, is described in docs/FLEET-STORAGE.md.
//
// # Durability
//
// The store must never let the verifier report what it did not store.
// Every write is one transaction that is committed before the method
// returns. SQLite runs in WAL mode with synchronous=FULL (a committed
// transaction survives a power loss), foreign keys on, and one writer
// connection inside the process, so that concurrent callers wait for each
// other instead of failing with "database is locked"; a busy timeout
// covers another process holding the file.
package sqlstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// DefaultMaxObservations bounds the observations kept per agent (the
// distinct measurements of its current boot).
const DefaultMaxObservations = 100_000

// DefaultTimeout bounds every store operation.
const DefaultTimeout = 30 * time.Second

// ErrDiskFull is returned (wrapped) when the database could not write for
// lack of space: nothing of the operation was stored.
var ErrDiskFull = errors.New("the database's disk is full")

// Options tune a Store. The zero value is the default.
type Options struct {
	// MaxObservations per agent (default [DefaultMaxObservations]): a
	// SaveResult that would keep more fails with [fleet.ErrLimit].
	MaxObservations int
	// Timeout of each operation (default [DefaultTimeout]).
	Timeout time.Duration
	// MaxConns bounds the connections to PostgreSQL, or the reading
	// connections to SQLite (default 8).
	MaxConns int
}

// Store is a [fleet.Store] on SQLite or PostgreSQL.
type Store struct {
	d dialect
	// w runs every write (one connection on SQLite); r runs reads.
	w, r *sql.DB
	o    Options
	// stmts holds the write path's statements prepared on the SQLite
	// writer connection; group batches concurrent writes into one
	// transaction (SQLite only).
	stmts map[string]*sql.Stmt
	group *committer
}

var _ fleet.Store = (*Store)(nil)

// Open opens (creating it when missing) and migrates the store named by
// dsn: a file path or sqlite:PATH for SQLite, postgres://... or
// postgresql://... for PostgreSQL.
func Open(ctx context.Context, dsn string) (*Store, error) {
	return OpenOptions(ctx, dsn, Options{})
}

// OpenOptions is [Open] with options.
func OpenOptions(ctx context.Context, dsn string, o Options) (*Store, error) {
	if o.MaxObservations <= 0 {
		o.MaxObservations = DefaultMaxObservations
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 8
	}
	var (
		s   *Store
		err error
	)
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s, err = openPostgres(ctx, dsn, o)
	default:
		s, err = openSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"), o)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	var err error
	for _, st := range s.stmts {
		err = errors.Join(err, st.Close())
	}
	err = errors.Join(err, s.w.Close())
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// SchemaVersion is the version of the schema this package writes.
func SchemaVersion() int { return len(migrations) }

// migrate brings the database to the latest schema in one transaction
// (under the dialect's migration lock).
func (s *Store) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return s.fail("migrate", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if s.d.lockMigrations != "" {
		if _, err := tx.ExecContext(ctx, s.d.lockMigrations); err != nil {
			return s.fail("migrate: lock", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
	version INTEGER PRIMARY KEY,
	applied BIGINT NOT NULL
)`); err != nil {
		return s.fail("migrate", err)
	}
	var cur int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_version`).Scan(&cur); err != nil {
		return s.fail("migrate", err)
	}
	if cur > len(migrations) {
		return fmt.Errorf("sqlstore: the database's schema is version %d, newer than this rimon knows (%d): run a newer rimon", cur, len(migrations))
	}
	for v := cur + 1; v <= len(migrations); v++ {
		for _, stmt := range splitSQL(s.d.expand(migrations[v-1])) {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return s.fail(fmt.Sprintf("migrate to schema version %d", v), err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version, applied) VALUES ($1, $2)`, v, time.Now().UnixNano()); err != nil {
			return s.fail("migrate", err)
		}
	}
	return s.fail("migrate: commit", tx.Commit())
}

// splitSQL splits a migration into statements (each ends with ";" at the
// end of a line).
func splitSQL(text string) []string {
	var out []string
	for _, st := range strings.Split(text, ";\n") {
		if st = strings.TrimSpace(st); st != "" {
			out = append(out, strings.TrimSuffix(st, ";"))
		}
	}
	return out
}

// fail wraps a database error with the operation, nil for nil. A full disk
// is named ([ErrDiskFull]).
func (s *Store) fail(op string, err error) error {
	if err == nil {
		return nil
	}
	if s.d.diskFull(err) {
		return fmt.Errorf("sqlstore: %s: %w (nothing of it was stored; free space on the database's file system): %w", op, ErrDiskFull, err)
	}
	return fmt.Errorf("sqlstore: %s: %w", op, err)
}

// ctx bounds an operation by the store's timeout.
func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.o.Timeout)
}

// storeError is an error already worded for the caller (a sentinel with
// context): write returns it as it is.
type storeError struct{ error }

func (e storeError) Unwrap() error { return e.error }

// errorf makes a storeError.
func errorf(format string, a ...any) error {
	return storeError{fmt.Errorf("sqlstore: "+format, a...)}
}

// ts is a time as stored: nanoseconds since the epoch, 0 for the zero time.
func ts(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// tm is a stored time.
func tm(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// newMessageID is a Standard Webhooks message id: msg_ and 128 random bits.
func newMessageID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "msg_" + hex.EncodeToString(b[:]), nil
}

// hashKey is the hex SHA-256 of the parts, each length-prefixed (so that
// no two lists of parts share a key).
func hashKey(parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}
