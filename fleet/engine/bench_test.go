package engine

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/policy"
)

// softMachine is a log and a software key standing in for a TPM's AK
// (what the load generator does), quoting PCR 23 after any record.
type softMachine struct {
	log   []byte
	ends  []int
	pcrs  [][]byte
	key   *rsa.PrivateKey
	ec    *ecdsa.PrivateKey // when set, the AK (see softEvidence)
	nonce []byte
}

func newSoftMachine(b *testing.B, n int) *softMachine {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	m := &softMachine{key: key, nonce: newNonce()}
	st := eventlog.NewState(sha256Bank)
	var log bytes.Buffer
	for i := range n {
		c, err := eventlog.Event{Kind: "file", Path: fmt.Sprintf("/usr/lib/libexample-%d.so", i%5000), SHA256: fmt.Sprintf("%064x", i%5000),
			Reason: "changed", Time: "2026-11-28T12:00:00Z", BootID: "b"}.Content()
		if err != nil {
			b.Fatal(err)
		}
		r := eventlog.Record{RecNum: uint64(i), HasRecNum: true, PCR: 23, ContentType: "rimon", Content: c, Digests: c.Digests(sha256Bank)}
		rb, _ := r.Marshal()
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

// evidence quotes PCR 23 after n records, with the records from since.
func (m *softMachine) evidence(b *testing.B, since, n int) *attest.Evidence {
	pd := sha256.Sum256(m.pcrs[n-1])
	a := tpm2.Marshal(&tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote, ExtraData: tpm2.TPM2BData{Buffer: m.nonce},
		ClockInfo: tpm2.TPMSClockInfo{Clock: uint64(1000 + n), ResetCount: 7},
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
	ev.SetValues(map[eventlog.PCRKey][]byte{{PCR: 23, Bank: crypto.SHA256}: m.pcrs[n-1]})
	return ev
}

// BenchmarkIncrementalRound: what one incremental round costs (10 new
// records on an accepted prefix of 10,000, a reference of 5,000 files),
// broken down: the quote's signature alone, the replay of the new records
// from the saved state (no reference), the reference checks and
// observations on top, the store's transaction (SQLite), and the whole
// round without the network (verify, decide, store).
//
//	go test ./fleet/engine/ -run '^$' -bench IncrementalRound -benchtime 2s
func BenchmarkIncrementalRound(b *testing.B) {
	const saved, fresh = 10_000, 10
	m := newSoftMachine(b, saved+fresh)
	var refb strings.Builder
	refb.WriteString("files:\n")
	for i := range 5000 {
		fmt.Fprintf(&refb, "  /usr/lib/libexample-%d.so: [%064x]\n", i, i)
	}
	ref := mustRef(b, refb.String())
	first, err := verifier.Verify(context.Background(), verifier.Evidence{Header: m.evidence(b, 0, saved), Log: bytes.NewReader(m.evidence(b, 0, saved).Log)},
		verifier.Options{AK: &m.key.PublicKey, Nonce: m.nonce, Reference: ref, SaveState: true, Banks: sha256Bank})
	if err != nil || !first.Verdict.Trusted {
		b.Fatalf("%v %+v", err, first.Verdict)
	}
	stateJSON, _ := first.State.MarshalJSON()
	plainFirst, err := verifier.Verify(context.Background(), verifier.Evidence{Header: m.evidence(b, 0, saved), Log: bytes.NewReader(m.evidence(b, 0, saved).Log)},
		verifier.Options{AK: &m.key.PublicKey, Nonce: m.nonce, SaveState: true, Banks: sha256Bank})
	if err != nil {
		b.Fatal(err)
	}
	plainJSON, _ := plainFirst.State.MarshalJSON()
	ev := m.evidence(b, saved, saved+fresh)
	values, _ := ev.Values()

	b.Run("signature", func(b *testing.B) {
		for b.Loop() {
			if _, err := attest.VerifyQuote(ev.Quote.Attest, ev.Quote.Signature, values, attest.QuoteOptions{AK: &m.key.PublicKey, Nonce: m.nonce}); err != nil {
				b.Fatal(err)
			}
		}
	})
	verify := func(b *testing.B, st []byte, ref *policy.Reference, observe bool) {
		fp := attest.ReferenceFingerprint(ref)
		for b.Loop() {
			s, err := verifier.ParseState(st)
			if err != nil {
				b.Fatal(err)
			}
			res, err := verifier.Verify(context.Background(), verifier.Evidence{Header: ev, Log: bytes.NewReader(ev.Log)},
				verifier.Options{AK: &m.key.PublicKey, Nonce: m.nonce, Reference: ref, ReferenceFingerprint: fp, State: s, Observe: observe, Banks: sha256Bank})
			if err != nil || res.Verdict.Covered != saved+fresh {
				b.Fatal(err)
			}
			if _, err := res.State.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("signature+replay", func(b *testing.B) { verify(b, plainJSON, nil, false) })
	b.Run("signature+replay+reference", func(b *testing.B) { verify(b, stateJSON, ref, true) })

	f := newFixture(b, Options{Now: time.Now})
	f.putRef("r", refb.String(), false)
	pemb, _ := attest.PublicKeyPEM(&m.key.PublicKey)
	f.add(fleet.Spec{Name: "m", URL: "http://127.0.0.1:1", AK: string(pemb), Reference: "r"})
	ctx := context.Background()
	a, _ := f.store.Agent(ctx, "m")
	boot := fleet.Boot{Known: true, ResetCount: 7, Clock: 1000 + saved, State: stateJSON}
	if err := f.store.SaveResult(ctx, fleet.Result{AgentID: a.ID, Version: a.Version, At: time.Now(), Status: fleet.Trusted, Boot: &boot, NextDue: time.Now()}); err != nil {
		b.Fatal(err)
	}
	a, _ = f.store.Agent(ctx, "m")
	p, err := f.e.plan(ctx, a)
	if err != nil {
		b.Fatal(err)
	}
	c := f.e.check(ctx, a, p, p.state, p.since, m.nonce, ev, bytes.NewReader(ev.Log), nil, time.Now())
	if c.result.Status != fleet.Trusted {
		b.Fatalf("%s %s", c.result.Status, c.result.Reason)
	}
	b.Run("storage", func(b *testing.B) {
		r := c.result
		for b.Loop() {
			a, _ := f.store.Agent(ctx, "m")
			r.AgentID, r.Version, r.At = a.ID, a.Version, time.Now()
			if err := f.store.SaveResult(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("round", func(b *testing.B) {
		for b.Loop() {
			a, _ := f.store.Agent(ctx, "m")
			a.Boot.State = stateJSON // the same new records every time
			p, err := f.e.plan(ctx, a)
			if err != nil {
				b.Fatal(err)
			}
			c := f.e.check(ctx, a, p, p.state, p.since, m.nonce, ev, bytes.NewReader(ev.Log), nil, time.Now())
			if err := f.e.save(ctx, a, c.result, time.Now()); err != nil || c.result.Status != fleet.Trusted {
				b.Fatal(err, c.result.Reason)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rounds/s")
	})
}
