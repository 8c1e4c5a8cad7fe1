package measure

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFilesSmall measures 1,000 files of 4 KiB, as an initial scan
// of a directory of small files does, on one and on two workers; the cost
// is mostly system calls.
func BenchmarkFilesSmall(b *testing.B) {
	for _, w := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) { benchFiles(b, w) })
	}
}

func benchFiles(b *testing.B, workers int) {
	dir := b.TempDir()
	var paths []string
	for i := 0; i < 1000; i++ {
		p := filepath.Join(dir, fmt.Sprintf("f%04d", i))
		if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
			b.Fatal(err)
		}
		paths = append(paths, p)
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, o := range Files(context.Background(), paths, workers) {
			if o.Err != nil {
				b.Fatal(o.Err)
			}
		}
	}
	b.StopTimer()
	// CPU time (user and system) is steadier than wall time on a shared machine.
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N*len(paths))/1000, "cpu-µs/file")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
