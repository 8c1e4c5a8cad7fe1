package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/policy"
)

// BenchmarkChangeToRecord measures the time from a file being written to
// its record being in the log and PCR 23 extended, with the agent on
// swtpm and the default debounce (200ms), at a steady 20 changes a second.
// It reports the median and the 99th percentile.
func BenchmarkChangeToRecord(b *testing.B) {
	spec := testtpm.Swtpm(b)
	dir := b.TempDir()
	data := filepath.Join(dir, "data")
	polPath := filepath.Join(dir, "policy.yaml")
	writeFileB(b, polPath, fmt.Sprintf("measure:\n  - dir: %s\n", data))
	writeFileB(b, filepath.Join(data, "seed"), "x")
	pol, err := policy.Load(polPath)
	if err != nil {
		b.Fatal(err)
	}
	log := filepath.Join(dir, "m.log")
	g := &globals{tpm: spec, log: log, stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runWatch(ctx, g, pol, polPath, "text", 0) }()
	time.Sleep(time.Second) // initial scan of one file

	n := max(b.N, 200)
	written := make(map[string]time.Time, n)
	b.ResetTimer()
	tick := time.NewTicker(50 * time.Millisecond)
	for i := 0; i < n; i++ {
		<-tick.C
		p := filepath.Join(data, fmt.Sprintf("f%05d", i))
		written[p] = time.Now()
		writeFileB(b, p, fmt.Sprintf("content %d", i))
	}
	tick.Stop()
	time.Sleep(time.Second)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	recs, _, err := logfile.Snapshot(context.Background(), log)
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for i := range recs {
		e := recs[i].Event()
		w, ok := written[e.Path]
		if !ok {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, e.Time)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, t.Sub(w))
	}
	if len(lat) != n {
		b.Fatalf("%d of %d changes recorded", len(lat), n)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "median-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
}

func writeFileB(b *testing.B, p, s string) {
	b.Helper()
	if err := osMkdirWrite(p, s); err != nil {
		b.Fatal(err)
	}
}

func osMkdirWrite(p, s string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(s), 0o644)
}
