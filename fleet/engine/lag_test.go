package engine

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/fleet"
)

// softEvidence is softMachine's evidence for any nonce, for a server.
func (m *softMachine) softEvidence(nonce []byte, since, n int) ([]byte, error) {
	pd := sha256.Sum256(m.pcrs[n-1])
	a := tpm2.Marshal(&tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote, ExtraData: tpm2.TPM2BData{Buffer: nonce},
		ClockInfo: tpm2.TPMSClockInfo{Clock: uint64(time.Now().UnixMilli()), ResetCount: 7},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(23)}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: pd[:]},
		}),
	})
	d := sha256.Sum256(a)
	var sig []byte
	if m.ec != nil {
		r, s, err := ecdsa.Sign(rand.Reader, m.ec, d[:])
		if err != nil {
			return nil, err
		}
		sig = tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
			&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgSHA256, SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))}})})
	} else {
		s, err := rsa.SignPKCS1v15(nil, m.key, crypto.SHA256, d[:])
		if err != nil {
			return nil, err
		}
		sig = tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
			&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s}})})
	}
	start := 0
	if since > 0 {
		start = m.ends[since-1]
	}
	ev := &attest.Evidence{Version: 1, Quote: attest.QuoteBlob{Attest: a, Signature: sig}, Log: m.log[start:m.ends[n-1]], LogStart: uint64(since)}
	ev.SetValues(map[eventlog.PCRKey][]byte{{PCR: 23, Bank: crypto.SHA256}: m.pcrs[n-1]})
	return ev.Marshal()
}

// lagMetrics keeps every lag.
type lagMetrics struct {
	fleet.NopMetrics
	mu   sync.Mutex
	lags []time.Duration
}

func (l *lagMetrics) Lag(d time.Duration) { l.mu.Lock(); l.lags = append(l.lags, d); l.mu.Unlock() }

// BenchmarkScheduleLag: 1,000 agents at a 6-second interval (the rate
// of 10,000 at 60 s: 167 rounds a second) for 30 seconds, served by one
// in-process HTTP server with a software AK (a static log of 10 records),
// on the SQLite store; reports the lag between due time and round start
// (p50, p99, max) after the first minute-equivalent. One iteration.
//
//	go test ./fleet/engine/ -run '^$' -bench ScheduleLag -benchtime 1x
func BenchmarkScheduleLag(b *testing.B) {
	const agents, interval, run = 1000, 6 * time.Second, 30 * time.Second
	m := newSoftMachine(b, 10)
	// An ECDSA P-256 AK: signing one quote costs the in-process agents
	// far less than RSA, so that the verifier's work shows.
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	m.ec = ec
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nonce, _ := hex.DecodeString(r.URL.Query().Get("nonce"))
		since, _ := strconv.Atoi(r.URL.Query().Get("since"))
		body, err := m.softEvidence(nonce, since, 10)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	met := &lagMetrics{}
	f := newFixture(b, Options{Now: time.Now, Metrics: met})
	pemb, _ := attest.PublicKeyPEM(&ec.PublicKey)
	for i := range agents {
		f.add(fleet.Spec{Name: fmt.Sprintf("a%05d", i), URL: srv.URL, AK: string(pemb), Interval: interval})
	}
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), run)
		start := time.Now()
		f.e.Run(ctx)
		cancel()
		met.mu.Lock()
		lags := slices.Clone(met.lags[min(agents, len(met.lags)):]) // after the first round of all
		met.mu.Unlock()
		slices.Sort(lags)
		if len(lags) == 0 {
			b.Fatal("no rounds after the first")
		}
		b.ReportMetric(float64(len(met.lags))/time.Since(start).Seconds(), "rounds/s")
		b.ReportMetric(lags[len(lags)/2].Seconds()*1000, "p50-lag-ms")
		b.ReportMetric(lags[len(lags)*99/100].Seconds()*1000, "p99-lag-ms")
		b.ReportMetric(lags[len(lags)-1].Seconds()*1000, "max-lag-ms")
	}
	counts, _ := f.store.CountByStatus(context.Background())
	if counts[fleet.Trusted] != agents {
		b.Errorf("states at the end: %v", counts)
	}
}
