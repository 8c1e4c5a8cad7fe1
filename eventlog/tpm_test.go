package eventlog_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// BenchmarkAppend measures a whole record: append to the log with fsync,
// then extend PCR 23 in every active bank, on the simulator and on swtpm.
func BenchmarkAppend(b *testing.B) {
	for _, kind := range []string{"sim", "swtpm"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			spec := kind
			if kind == "swtpm" {
				spec = testtpm.Swtpm(b)
			}
			tp, err := tpm.Open(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			defer tp.Close()
			banks, err := tp.ActiveBanks(ctx, 23)
			if err != nil {
				b.Fatal(err)
			}
			w, _, err := eventlog.OpenWriter(ctx, filepath.Join(b.TempDir(), "m.log"), tp,
				eventlog.WriterOptions{Banks: banks.Active, PCR: 23, BootID: "bench"})
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
