package eventlog

import (
	"bytes"
	"crypto"
	"fmt"
	"testing"
)

// benchLog builds a log of n realistic records extended in the given banks.
func benchLog(b *testing.B, n int, banks []crypto.Hash) []byte {
	b.Helper()
	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		c, err := Event{Kind: KindFile, Path: fmt.Sprintf("/usr/lib/x86_64-linux-gnu/libexample-%d.so.1", i),
			SHA256: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03", Size: uint64(i * 13),
			Reason: ReasonInitial, Time: "2026-11-26T17:50:43.836525411Z", BootID: "a90688c9-f104-496e-9306-961ce43ca76c"}.Content()
		if err != nil {
			b.Fatal(err)
		}
		r := Record{RecNum: uint64(i), HasRecNum: true, PCR: 23, ContentType: ContentTypeRimon, Content: c, Digests: c.Digests(banks)}
		m, err := r.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		buf.Write(m)
	}
	return buf.Bytes()
}

// BenchmarkReplay reads, verifies and replays (as rimon log replay does) a log of 1,000,000 records
// (as written by a TPM with sha256 only, and with four banks). records/cpu-s counts the process's
// CPU time, which other load on the machine disturbs less than wall time (records/s).
func BenchmarkReplay(b *testing.B) {
	for _, tc := range []struct {
		name  string
		banks []crypto.Hash
	}{
		{"sha256", []crypto.Hash{crypto.SHA256}},
		{"4banks", allBanks},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 1_000_000
			data := benchLog(b, n, tc.banks)
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				_, got, err := ReplayReader(bytes.NewReader(data), tc.banks)
				if err != nil || got != n {
					b.Fatalf("ReplayReader = %d records, %v", got, err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
			if cpu := cpuTime() - cpu0; cpu > 0 {
				b.ReportMetric(float64(n*b.N)/cpu.Seconds(), "records/cpu-s")
			}
		})
	}
}
