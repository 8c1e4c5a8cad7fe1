package sqlstore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// backend is a database the suite runs on: dsn hands out a fresh, empty
// database.
type backend struct {
	name string
	dsn  func(t testing.TB) string
}

func sqliteBackend() backend {
	return backend{name: "sqlite", dsn: func(t testing.TB) string {
		return "sqlite:" + filepath.Join(t.TempDir(), "verifier.db")
	}}
}

// backends lists the databases every store test runs on.
func backends(t testing.TB) []backend {
	return append([]backend{sqliteBackend()}, extraBackends(t)...)
}

// eachDB runs f on every backend with a fresh store.
func eachDB(t *testing.T, f func(t *testing.T, s *Store, dsn string)) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			dsn := b.dsn(t)
			f(t, openStore(t, dsn), dsn)
		})
	}
}

func openStore(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("Open(%q) = %v", dsn, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// t0 is the tests' clock.
var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

const testAK = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"

func spec(name string) fleet.Spec {
	return fleet.Spec{Name: name, URL: "http://127.0.0.1:9/", AK: testAK}
}

func mustAdd(t testing.TB, s *Store, name string) *fleet.Agent {
	t.Helper()
	a, err := s.AddAgent(context.Background(), spec(name), t0)
	if err != nil {
		t.Fatalf("AddAgent(%s) = %v", name, err)
	}
	return a
}

func mustAgent(t testing.TB, s *Store, name string) *fleet.Agent {
	t.Helper()
	a, err := s.Agent(context.Background(), name)
	if err != nil {
		t.Fatalf("Agent(%s) = %v", name, err)
	}
	return a
}
