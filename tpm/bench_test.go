package tpm_test

import (
	"context"
	"crypto"
	"testing"

	"github.com/rimon-dev/rimon/internal/testtpm"
)

// BenchmarkExtend measures one TPM2_PCR_Extend of PCR 23 in every active
// bank, on the simulator and on swtpm over TCP.
func BenchmarkExtend(b *testing.B) {
	for _, kind := range []string{"sim", "swtpm"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			tp := testtpm.OpenKind(b, kind)
			banks, err := tp.ActiveBanks(ctx, 23)
			if err != nil {
				b.Fatal(err)
			}
			ds := map[crypto.Hash][]byte{}
			for _, h := range banks.Active {
				ds[h] = make([]byte, h.Size())
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := tp.ExtendPCR(ctx, 23, ds); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "extends/s")
		})
	}
}

// BenchmarkQuote measures TPM2_Quote of PCR 23 (sha256) with the AK, on
// the simulator and on swtpm.
func BenchmarkQuote(b *testing.B) {
	for _, kind := range []string{"sim", "swtpm"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			tp := testtpm.OpenKind(b, kind)
			if _, _, err := tp.ProvisionAK(ctx); err != nil {
				b.Fatal(err)
			}
			nonce := []byte("0123456789abcdef")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := tp.QuotePCRs(ctx, nonce, []int{23}, []crypto.Hash{crypto.SHA256}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/quote")
		})
	}
}
