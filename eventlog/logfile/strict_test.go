package logfile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
)

// TestReconcileRecNumRules: Reconcile enforces eventlog's recnum rules
// (eventlog's TestRecNumRules): recnum is the record's position in the log,
// counting every record (systemd's included) from 0, and every rimon record
// has one.
func TestReconcileRecNumRules(t *testing.T) {
	sd := sdRecord(11, "enter-initrd", "phase", allBanks)
	r := func(n uint64) eventlog.Record { return mkRecord(t, n, "/bin/x") }
	noNum := r(0)
	noNum.HasRecNum = false
	sdNum := sd
	sdNum.HasRecNum, sdNum.RecNum = true, 1
	for _, tc := range []struct {
		name string
		recs []eventlog.Record
		bad  int // index of the refused record, -1 for none
	}{
		{"rimon_only", []eventlog.Record{r(0), r(1), r(2)}, -1},
		{"after_systemd", []eventlog.Record{sd, r(1), sd, r(3)}, -1},
		{"systemd_with_its_position", []eventlog.Record{r(0), sdNum}, -1},
		{"rimon_without_recnum", []eventlog.Record{r(0), noNum}, 1},
		{"first_rimon_is_1", []eventlog.Record{r(1), r(2)}, 0},
		{"zero_after_systemd", []eventlog.Record{sd, sd, r(0)}, 2},
		{"counting_rimon_only", []eventlog.Record{sd, sd, r(0), r(1)}, 2},
		{"systemd_with_wrong_number", []eventlog.Record{sdNum}, 0},
		{"gap", []eventlog.Record{r(0), r(2)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := eventlog.ReadAll(bytes.NewReader(marshalAll(t, tc.recs...)))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Reconcile(context.Background(), recs, newFake(), ReconcileOptions{Banks: allBanks, Rebuild: true})
			var re *eventlog.ReplayError
			switch {
			case tc.bad < 0 && err != nil:
				t.Errorf("Reconcile = %v, want success", err)
			case tc.bad >= 0 && (!errors.As(err, &re) || re.Index != tc.bad || !errors.Is(err, eventlog.ErrSequence)):
				t.Errorf("Reconcile = %v, want ErrSequence at record %d", err, tc.bad)
			}
		})
	}
}

// TestWriterNumbersAfterSystemdRecords: rimon appending to a log that
// starts with systemd's records numbers its record by its position.
func TestWriterNumbersAfterSystemdRecords(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/m.log"
	sd := sdRecord(11, "enter-initrd", "phase", allBanks)
	fake := newFake()
	for _, r := range []eventlog.Record{sd, sd} {
		if err := extendRecord(context.Background(), fake, &r, allBanks); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, marshalAll(t, sd, sd), 0o600); err != nil {
		t.Fatal(err)
	}
	w, _, err := OpenWriter(context.Background(), path, fake, WriterOptions{Banks: allBanks, PCR: 23})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rec, err := w.Append(context.Background(), 23, eventlog.Event{Kind: eventlog.KindFile, Path: "/x", Reason: eventlog.ReasonManual, SHA256: zeros64, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rec.RecNum != 2 {
		t.Errorf("the first rimon record after two systemd records has recnum %d, want 2", rec.RecNum)
	}
	if _, _, _, err := ReplayFile(context.Background(), path, allBanks); err != nil {
		t.Errorf("replay of the log rimon wrote: %v", err)
	}
}
