package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The SQLite dialect.
var sqliteDialect = dialect{
	name: "sqlite",
	words: strings.NewReplacer(
		"{{id}}", "INTEGER PRIMARY KEY AUTOINCREMENT",
		"{{blob}}", "BLOB",
		"{{lockrow}}", "",
		"{{skiplocked}}", "",
	),
	diskFull: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_FULL
	},
	unique: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && (e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
	},
}

// busyTimeoutMS is how long a connection waits for another process's lock.
const busyTimeoutMS = 10000

// openSQLite opens the file at path: one writer connection (transactions
// begin IMMEDIATE: the write lock is taken at BEGIN, so a transaction never
// fails midway for another writer) and a pool of read-only connections.
func openSQLite(ctx context.Context, path string, o Options) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("sqlstore: no database path (give a path or sqlite:PATH)")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlstore: database path %q: '?' and '#' are not allowed in the path", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if fi, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("sqlstore: database directory: %w", err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("sqlstore: database directory %s is not a directory", dir)
		}
	}
	common := url.Values{}
	common.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeoutMS))
	common.Add("_pragma", "foreign_keys(1)")
	common.Add("_pragma", "synchronous(FULL)")

	wq := url.Values{}
	for k, v := range common {
		wq[k] = append([]string(nil), v...)
	}
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Set("_txlock", "immediate")
	w, err := sql.Open("sqlite", path+"?"+wq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{d: sqliteDialect, w: w, r: w, o: o}
	if err := s.checkSQLite(ctx, path); err != nil {
		w.Close()
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		w.Close()
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.group = &committer{s: s}
	rq := common
	rq.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(o.MaxConns)
	r.SetMaxIdleConns(o.MaxConns)
	s.r = r
	return s, nil
}

// checkSQLite makes sure the writer connection runs with the settings the
// store relies on.
func (s *Store) checkSQLite(ctx context.Context, path string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var mode string
	if err := s.w.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("sqlstore: open %s: journal mode is %q, not WAL (is the file on a file system without shared memory?)", path, mode)
	}
	var sync, fk int
	if err := s.w.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	if err := s.w.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
		return fmt.Errorf("sqlstore: open %s: %w", path, err)
	}
	if sync != 2 || fk != 1 {
		return fmt.Errorf("sqlstore: open %s: synchronous=%d foreign_keys=%d, want 2 and 1", path, sync, fk)
	}
	return nil
}
