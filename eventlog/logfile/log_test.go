package logfile

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/eventlog"
)

func openW(t *testing.T, path string, f PCRs) (*Writer, *Recovery) {
	t.Helper()
	w, rec, err := OpenWriter(context.Background(), path, f, WriterOptions{Banks: allBanks, BootID: "boot-a", PCR: 23,
		Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, rec
}

func ev(path string) eventlog.Event {
	return eventlog.Event{Kind: eventlog.KindFile, Path: path, SHA256: strings.Repeat("ab", 32), Size: 1, Reason: eventlog.ReasonInitial}
}

// checkAgrees replays the file at path and compares it with the fake TPM.
func checkAgrees(t *testing.T, path string, f *fakePCRs, wantRecords int) {
	t.Helper()
	res, err := Check(context.Background(), path, f, allBanks, 23, "boot-a")
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if res.Records != wantRecords || len(res.Pending) != 0 {
		t.Fatalf("Check = %d records, pending %v; want %d records, none pending", res.Records, res.Pending, wantRecords)
	}
}

func TestWriterAppendsAndExtends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	for i := 0; i < 3; i++ {
		rec, err := w.Append(context.Background(), 23, ev(fmt.Sprintf("/f%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if rec.RecNum != uint64(i) {
			t.Errorf("record %d has recnum %d", i, rec.RecNum)
		}
		if got := rec.Content.Str("boot_id"); got != "boot-a" {
			t.Errorf("boot_id = %q, want boot-a", got)
		}
	}
	checkAgrees(t, path, f, 3)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("log mode = %v, %v; want 0640", fi.Mode(), err)
	}
}

// TestWritersInterleave runs several writers on one log, as the daemon and
// launch-time measurements do, and checks the log stays one sequence that
// replays to the TPM's value.
func TestWritersInterleave(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.log")
	f := newFake()
	const writers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for i := 0; i < writers; i++ {
		w, _ := openW(t, path, f)
		wg.Add(1)
		go func(i int, w *Writer) {
			defer wg.Done()
			for j := 0; j < each; j++ {
				if _, err := w.Append(context.Background(), 23, ev(fmt.Sprintf("/w%d/%d", i, j))); err != nil {
					errs <- err
				}
			}
		}(i, w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkAgrees(t, path, f, writers*each)
	recs, _, err := Snapshot(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		if recs[i].RecNum != uint64(i) {
			t.Fatalf("record %d has recnum %d", i, recs[i].RecNum)
		}
	}
}

func TestWriterRepairsCrashBetweenAppendAndExtend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	if _, err := w.Append(context.Background(), 23, ev("/a")); err != nil {
		t.Fatal(err)
	}
	f.failNext = errInjected
	_, err := w.Append(context.Background(), 23, ev("/b"))
	var ee *ExtendError
	if !errors.As(err, &ee) || ee.Index != 1 {
		t.Fatalf("Append with a failing extend = %v, want *ExtendError for record 1", err)
	}
	res, err := Check(context.Background(), path, f, allBanks, 23, "boot-a")
	if err != nil || len(res.Pending) != 1 || res.Pending[0] != 1 {
		t.Fatalf("Check = %+v, %v; want record 1 pending", res, err)
	}
	// The next writer, in another process, repairs it.
	_, rec := openW(t, path, f)
	if len(rec.Repaired) != 1 || rec.Repaired[0] != 1 {
		t.Errorf("Recovery.Repaired = %v, want [1]", rec.Repaired)
	}
	checkAgrees(t, path, f, 2)
	// And the first writer carries on where it was.
	if _, err := w.Append(context.Background(), 23, ev("/c")); err != nil {
		t.Fatal(err)
	}
	checkAgrees(t, path, f, 3)
}

func TestWriterMovesTornTailAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	if _, err := w.Append(context.Background(), 23, ev("/a")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	torn := "\x1e{\"recnum\":1,\"pcr\":23,\"dig"
	lf, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	lf.WriteString(torn)
	lf.Close()

	_, rec := openW(t, path, f)
	if rec.TornBytes != int64(len(torn)) {
		t.Fatalf("TornBytes = %d, want %d", rec.TornBytes, len(torn))
	}
	saved, err := os.ReadFile(rec.TornPath)
	if err != nil || string(saved) != torn {
		t.Errorf("torn bytes saved as %q (%v), want %q", saved, err, torn)
	}
	checkAgrees(t, path, f, 1)
}

func TestWriterRefusesOtherBoot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	if _, err := w.Append(context.Background(), 23, ev("/a")); err != nil {
		t.Fatal(err)
	}
	_, _, err := OpenWriter(context.Background(), path, f, WriterOptions{Banks: allBanks, BootID: "boot-b", PCR: 23})
	if !errors.Is(err, ErrOtherBoot) || !strings.Contains(err.Error(), "record 0") {
		t.Errorf("OpenWriter on another boot's log = %v, want ErrOtherBoot naming record 0", err)
	}
}

func TestWriterNoticesTruncation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	for i := 0; i < 2; i++ {
		if _, err := w.Append(context.Background(), 23, ev("/a")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(path, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(context.Background(), 23, ev("/b")); err == nil || !strings.Contains(err.Error(), "shrank") {
		t.Errorf("Append after truncation = %v, want a 'shrank' error", err)
	}
}

func TestCheckMissingLog(t *testing.T) {
	f := newFake()
	path := filepath.Join(t.TempDir(), "none.log")
	if _, err := Check(context.Background(), path, f, allBanks, 23, ""); err != nil {
		t.Errorf("Check(missing log, fresh TPM) = %v, want agreement", err)
	}
	f.extendRaw(23, crypto.SHA256, "x")
	if _, err := Check(context.Background(), path, f, allBanks, 23, ""); err == nil {
		t.Error("Check(missing log, extended PCR) succeeded, want a divergence")
	}
}

func TestOnOpenSeesEveryRecordOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	for i := 0; i < 3; i++ {
		if _, err := w.Append(context.Background(), 23, ev(fmt.Sprintf("/f%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var seen []string
	w2, _, err := OpenWriter(context.Background(), path, f, WriterOptions{Banks: allBanks, BootID: "boot-a", PCR: 23,
		OnOpen: func(r *eventlog.Record) { seen = append(seen, r.Content.Str("path")) }})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if _, err := w.Append(context.Background(), 23, ev("/later")); err != nil {
		t.Fatal(err)
	}
	if _, err := w2.Append(context.Background(), 23, ev("/mine")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != "/f0,/f1,/f2" {
		t.Errorf("OnOpen saw %v, want the three records present at open", seen)
	}
}
