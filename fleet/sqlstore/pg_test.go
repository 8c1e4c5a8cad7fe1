package sqlstore

import "testing"

// extraBackends lists the databases besides SQLite.
func extraBackends(t *testing.T) []backend { return nil }
