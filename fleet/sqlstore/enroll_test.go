package sqlstore

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
)

// An enrolled agent's CA bundles and enrollment are stored with a
// result, kept across rounds, and forgotten by Unenroll only.
func TestEnrollment(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store, _ string) {
		sp := fleet.Spec{Name: "e-1", URL: "http://127.0.0.1:9/", EKCA: "EK CA PEM", AKCA: "AK CA PEM"}
		a, err := s.AddAgent(bg, sp, t0)
		if err != nil {
			t.Fatal(err)
		}
		if a.EKCA != sp.EKCA || a.AKCA != sp.AKCA || a.Enrollment != nil {
			t.Fatalf("added: ek_ca %q ak_ca %q enrollment %q", a.EKCA, a.AKCA, a.Enrollment)
		}
		rec := []byte(`{"path":"ek-activation"}`)
		if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0.Add(1), Status: fleet.Trusted, Enrollment: rec,
			NextDue: t0.Add(2)}); err != nil {
			t.Fatal(err)
		}
		a = mustAgent(t, s, "e-1")
		if string(a.Enrollment) != string(rec) || !a.EnrolledAt.Equal(t0.Add(1)) {
			t.Fatalf("after enrollment: %q at %v", a.Enrollment, a.EnrolledAt)
		}
		// A later round without an enrollment keeps it.
		if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0.Add(3), Status: fleet.Invalid, Reason: "identity"}); err != nil {
			t.Fatal(err)
		}
		if a = mustAgent(t, s, "e-1"); string(a.Enrollment) != string(rec) {
			t.Fatalf("after a round: enrollment %q", a.Enrollment)
		}
		// A result over an older version stores no enrollment either.
		if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version - 1, At: t0.Add(4), Status: fleet.Trusted,
			Enrollment: []byte(`{"path":"other"}`)}); !errors.Is(err, fleet.ErrConflict) {
			t.Fatalf("stale result: %v, want ErrConflict", err)
		}
		// A registration changed but for its CAs keeps the enrollment.
		sp.Interval = 2 * time.Minute
		if err := s.UpdateSpec(bg, "e-1", sp); err != nil {
			t.Fatal(err)
		}
		if a = mustAgent(t, s, "e-1"); string(a.Enrollment) != string(rec) {
			t.Fatalf("after an update of the interval: enrollment %q", a.Enrollment)
		}
		if err := s.Unenroll(bg, "e-1", "enroll again by admin", t0.Add(5)); err != nil {
			t.Fatal(err)
		}
		a = mustAgent(t, s, "e-1")
		if a.Enrollment != nil || !a.EnrolledAt.IsZero() || a.Status != fleet.Pending || a.Boot.Known || !a.NextDue.Equal(t0.Add(5)) {
			t.Fatalf("after Unenroll: %+v", a)
		}
		if a.EKCA != sp.EKCA {
			t.Errorf("Unenroll changed the spec: ek_ca %q", a.EKCA)
		}
		h, err := s.History(bg, "e-1", 1)
		if err != nil || len(h) != 1 || h[0].Event != fleet.EventEnroll || h[0].From != fleet.Invalid || h[0].To != fleet.Pending {
			t.Fatalf("history: %+v, %v", h, err)
		}
		// Other CAs: the enrollment they did not make is forgotten.
		if err := s.SaveResult(bg, fleet.Result{AgentID: a.ID, Version: a.Version, At: t0.Add(6), Status: fleet.Trusted, Enrollment: rec}); err != nil {
			t.Fatal(err)
		}
		sp.EKCA = "another EK CA PEM"
		if err := s.UpdateSpec(bg, "e-1", sp); err != nil {
			t.Fatal(err)
		}
		if a = mustAgent(t, s, "e-1"); a.Enrollment != nil || !a.EnrolledAt.IsZero() || a.EKCA != sp.EKCA {
			t.Fatalf("after an update of the EK CAs: enrollment %q at %v", a.Enrollment, a.EnrolledAt)
		}
		if err := s.Unenroll(bg, "nobody", "", t0); !errors.Is(err, fleet.ErrNotFound) {
			t.Errorf("Unenroll(nobody) = %v", err)
		}
		if _, err := s.AddAgent(bg, fleet.Spec{Name: "e-2", URL: "http://127.0.0.1:9/", EKCA: "x", AK: testAK}, t0); !errors.Is(err, fleet.ErrInvalid) {
			t.Errorf("ek_ca with a pinned AK: %v", err)
		}
	})
}

// A database made before enrollment is migrated with its agents: pinned
// AKs, no CAs, no enrollment.
func TestEnrollmentMigration(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			// The database as it was before the enrollment migration.
			dsn := b.dsn(t)
			old, err := Open(bg, dsn)
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{`DELETE FROM schema_version WHERE version = ` + fmt.Sprint(SchemaVersion()),
				`ALTER TABLE agents DROP COLUMN ek_ca`, `ALTER TABLE agents DROP COLUMN ak_ca`,
				`ALTER TABLE agents DROP COLUMN enrollment`, `ALTER TABLE agents DROP COLUMN enrolled`,
				`INSERT INTO agents (name, url, ak, pcrs, banks, interval_ns, status, since, next_due, created)
VALUES ('before', 'http://127.0.0.1:9/', '` + testAK + `', '[23]', '["sha256"]', 60000000000, 'trusted', 1, 1, 1)`} {
				if _, err := old.w.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			old.Close()
			s := openStore(t, dsn)
			a := mustAgent(t, s, "before")
			if a.AK != testAK || a.Status != fleet.Trusted || a.Enrolls() || a.Enrollment != nil || !a.EnrolledAt.IsZero() {
				t.Errorf("migrated agent: %+v", a)
			}
		})
	}
}
