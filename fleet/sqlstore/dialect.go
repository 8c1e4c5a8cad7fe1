package sqlstore

import "strings"

// dialect holds what differs between SQLite and PostgreSQL. Everything
// else is one SQL text, with $N placeholders (SQLite binds $N to the N-th
// argument).
type dialect struct {
	name string
	// words expands the schema's {{...}} words.
	words *strings.Replacer
	// lockRow is appended to a SELECT that reads a row about to be
	// updated in the same transaction (FOR UPDATE); skipLocked to the
	// claim's SELECT (FOR UPDATE SKIP LOCKED). Empty on SQLite, whose
	// write transactions are serialized.
	lockRow, skipLocked string
	// lockMigrations, when set, runs first in the migration transaction.
	lockMigrations string
	// diskFull and unique classify errors.
	diskFull func(error) bool
	unique   func(error) bool
}

func (d dialect) expand(s string) string { return d.words.Replace(s) }
