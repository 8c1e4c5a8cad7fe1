package verifier_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/eventlog"
)

// benchMachine is a log of records and a software key standing in for a
// TPM's AK, which quotes PCR 23 (sha256) after any number of records.
type benchMachine struct {
	log   []byte
	ends  []int    // ends[i]: the log's length after record i
	pcrs  [][]byte // pcrs[i]: PCR 23 after record i
	key   *rsa.PrivateKey
	nonce []byte
}

func newBenchMachine(b *testing.B, n int) *benchMachine {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	m := &benchMachine{key: key, nonce: []byte("0123456789abcdef")}
	st := eventlog.NewState(banks256)
	var log bytes.Buffer
	for i := 0; i < n; i++ {
		c, err := eventlog.Event{Kind: "file", Path: fmt.Sprintf("/usr/lib/x86_64-linux-gnu/libexample-%d.so.1", i),
			SHA256: fmt.Sprintf("%064x", i), Size: uint64(i), Reason: "initial", Time: "2026-11-26T17:50:43.836525411Z", BootID: "b"}.Content()
		if err != nil {
			b.Fatal(err)
		}
		r := eventlog.Record{RecNum: uint64(i), HasRecNum: true, PCR: 23, ContentType: "rimon", Content: c, Digests: c.Digests(banks256)}
		rb, err := r.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		log.Write(rb)
		if err := st.Apply(&r); err != nil {
			b.Fatal(err)
		}
		m.ends = append(m.ends, log.Len())
		m.pcrs = append(m.pcrs, append([]byte(nil), st.Value(23, crypto.SHA256)...))
	}
	m.log = log.Bytes()
	return m
}

// evidence quotes PCR 23 after the first n records and holds the records
// from since to n.
func (m *benchMachine) evidence(b *testing.B, since, n int) *attest.Evidence {
	pcr := m.pcrs[n-1]
	pd := sha256.Sum256(pcr)
	a := tpm2.Marshal(&tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: m.nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(23)}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: pd[:]},
		}),
	})
	d := sha256.Sum256(a)
	s, err := rsa.SignPKCS1v15(rand.Reader, m.key, crypto.SHA256, d[:])
	if err != nil {
		b.Fatal(err)
	}
	sig := tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
		&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s}})})
	start := 0
	if since > 0 {
		start = m.ends[since-1]
	}
	ev := &attest.Evidence{Version: 1, Quote: attest.QuoteBlob{Attest: a, Signature: sig}, Log: m.log[start:m.ends[n-1]], LogStart: uint64(since)}
	ev.SetValues(map[eventlog.PCRKey][]byte{{PCR: 23, Bank: crypto.SHA256}: pcr})
	return ev
}

// BenchmarkIncremental: a round of 10 new records verified from a saved
// state of 100,000 records (the state parsed from its saved form each
// time, as a verifier reading it from storage does), against a replay of
// the whole log of 100,010 records.
func BenchmarkIncremental(b *testing.B) {
	const saved, fresh = 100_000, 10
	m := newBenchMachine(b, saved+fresh)
	o := verifier.Options{AK: &m.key.PublicKey, Nonce: m.nonce}
	oSave := o
	oSave.SaveState = true
	first, err := verify2(m.evidence(b, 0, saved), oSave)
	if err != nil {
		b.Fatal(err)
	}
	stored, err := first.State.MarshalJSON()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("incremental_10_on_100000", func(b *testing.B) {
		ev := m.evidence(b, saved, saved+fresh)
		for i := 0; i < b.N; i++ {
			st, err := verifier.ParseState(stored)
			if err != nil {
				b.Fatal(err)
			}
			o := o
			o.State = st
			res, err := verify2(ev, o)
			if err != nil || res.Verdict.Covered != saved+fresh {
				b.Fatalf("%v", err)
			}
			if _, err := res.State.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rounds/s")
	})
	// The whole log, as rimon verify replays it (no state kept), and as a
	// verifier that saves the state for next time does.
	for _, tc := range []struct {
		name string
		o    verifier.Options
	}{{"full_100010", o}, {"full_100010_save_state", oSave}} {
		b.Run(tc.name, func(b *testing.B) {
			ev := m.evidence(b, 0, saved+fresh)
			for i := 0; i < b.N; i++ {
				res, err := verify2(ev, tc.o)
				if err != nil || res.Verdict.Covered != saved+fresh || (res.State != nil) != tc.o.SaveState {
					b.Fatalf("%v", err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rounds/s")
		})
	}
}

func verify2(ev *attest.Evidence, o verifier.Options) (*verifier.Result, error) {
	return verifier.Verify(context.Background(), verifier.Evidence{Header: ev, Log: bytes.NewReader(ev.Log)}, o)
}
