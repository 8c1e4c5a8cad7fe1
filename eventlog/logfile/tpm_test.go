package logfile_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// BenchmarkAppend measures a whole record: append to the log with fsync,
// then extend PCR 23 in every active bank, on the simulator and on swtpm.
func BenchmarkAppend(b *testing.B) {
	for _, kind := range []string{"sim", "swtpm"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			tp := testtpm.OpenKind(b, kind)
			banks, err := tp.ActiveBanks(ctx, 23)
			if err != nil {
				b.Fatal(err)
			}
			w, _, err := logfile.OpenWriter(ctx, filepath.Join(b.TempDir(), "m.log"), tp,
				logfile.WriterOptions{Banks: banks.Active, PCR: 23, BootID: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				_, err := w.Append(ctx, 23, eventlog.Event{Kind: eventlog.KindFile, Path: fmt.Sprintf("/bin/f%d", i),
					SHA256: strings.Repeat("ab", 32), Size: 1, Reason: eventlog.ReasonInitial})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// TestWritersShareARealTPM runs two writers, as the agent and a launch-time
// "rimon measure" do, appending concurrently to one log and one simulator;
// the log must stay one sequence whose replay is the PCR in every bank.
func TestWritersShareARealTPM(t *testing.T) {
	ctx := context.Background()
	tp := testtpm.Open(t)
	banks, err := tp.ActiveBanks(ctx, 23)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.log")
	errs := make(chan error, 2)
	for w := 0; w < 2; w++ {
		wr, _, err := logfile.OpenWriter(ctx, path, tp, logfile.WriterOptions{Banks: banks.Active, PCR: 23, BootID: "b"})
		if err != nil {
			t.Fatal(err)
		}
		defer wr.Close()
		go func(w int) {
			for i := 0; i < 50; i++ {
				if _, err := wr.Append(ctx, 23, eventlog.Event{Kind: "file", Path: fmt.Sprintf("/w%d/%d", w, i),
					SHA256: strings.Repeat("cd", 32), Reason: "launch"}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}(w)
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st, n, _, err := logfile.ReplayFile(ctx, path, banks.Active)
	if err != nil || n != 100 {
		t.Fatalf("ReplayFile = %d records, %v", n, err)
	}
	vals, err := tp.ReadPCRs(ctx, 23, banks.Active)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range banks.Active {
		if !bytes.Equal(vals[h], st.Value(23, h)) {
			t.Errorf("%s: TPM %x, replay %x", eventlog.BankName(h), vals[h], st.Value(23, h))
		}
	}
}
