package sqlstore

import "strings"

// dialect holds what differs between SQLite and PostgreSQL. Everything
// else is one SQL text, with $N placeholders (SQLite binds $N to the N-th
// argument).
type dialect struct {
	name string
	// words expands the {{...}} words of the schema and the queries:
	// {{id}} and {{blob}} (see the schema), {{lockrow}} ending a SELECT
	// that reads a row about to be updated in the same transaction (FOR
	// UPDATE), {{skiplocked}} ending the claim's SELECT (FOR UPDATE SKIP
	// LOCKED). The last two are empty on SQLite, whose write transactions
	// are serialized.
	words *strings.Replacer
	// lockMigrations, when set, runs first in the migration transaction.
	lockMigrations string
	// diskFull and unique classify errors.
	diskFull func(error) bool
	unique   func(error) bool
}

func (d dialect) expand(s string) string { return d.words.Replace(s) }
