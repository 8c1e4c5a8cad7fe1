package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/policy"
)

// The benchmarks below measure what one attestation costs the verifier
// library, on loadgen evidence: the parts (quote, replay, state) and the
// whole incremental verification with and without a reference. They
// leave out the load generator's own work (timer stopped). bench/fleet.sh
// runs them; docs/BENCHMARKS.md has the figures.

// chain is one agent's evidence verified in sequence, each from the state
// the previous one saved.
type chain struct {
	a     *Agent
	ref   *policy.Reference
	state *verifier.State
}

func newChain(b *testing.B, initial int, ref bool) *chain {
	f, err := New(Options{Agents: 1, Initial: initial})
	if err != nil {
		b.Fatal(err)
	}
	c := &chain{a: f.Agent(0)}
	if ref {
		c.ref = reference(b, f)
	}
	c.verify(b, c.next(b, 0))
	return c
}

type evidence struct {
	b     []byte
	nonce []byte
}

// next makes the agent's next evidence: n new records, from the state on.
func (c *chain) next(b *testing.B, n int) evidence {
	if err := c.a.AddRecords(n); err != nil {
		b.Fatal(err)
	}
	since := uint64(0)
	if c.state != nil {
		since = c.state.Records()
	}
	nn := nonce(b)
	e, err := c.a.EvidenceBytes(nn, since, nil)
	if err != nil {
		b.Fatal(err)
	}
	return evidence{e, nn}
}

func (c *chain) verify(b *testing.B, e evidence) *verifier.Result {
	h, log, err := attest.OpenEvidence(bytes.NewReader(e.b))
	if err != nil {
		b.Fatal(err)
	}
	res, err := verifier.Verify(context.Background(), verifier.Evidence{Header: h, Log: log},
		verifier.Options{AK: c.a.Public(), Nonce: e.nonce, Reference: c.ref, State: c.state, SaveState: true})
	if err != nil || !res.Verdict.Trusted {
		b.Fatalf("Verify = %+v, %v", res, err)
	}
	c.state = res.State
	return res
}

// BenchmarkIncremental verifies incremental polls of 10 new records each
// from the saved state, with the reference (what a fleet poll costs the
// verifier library, storage left out), including the state's save and
// restore as JSON (what the store keeps).
func BenchmarkIncremental(b *testing.B) {
	for _, ref := range []bool{true, false} {
		name := "reference"
		if !ref {
			name = "no-reference"
		}
		b.Run(name, func(b *testing.B) {
			c := newChain(b, 10, ref)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e := c.next(b, 10)
				b.StartTimer()
				c.verify(b, e)
				js, err := c.state.MarshalJSON()
				if err != nil {
					b.Fatal(err)
				}
				if c.state, err = verifier.ParseState(js); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "attestations/s")
		})
	}
}

// BenchmarkCost breaks one incremental attestation of 10 records down:
// the quote (signature, structure, nonce, PCR digest), the replay of the
// 10 records, the saved state's JSON round trip. The reference check's
// cost is BenchmarkIncremental/reference minus /no-reference.
func BenchmarkCost(b *testing.B) {
	c := newChain(b, 10, true)
	e := c.next(b, 10)
	h, log, err := attest.OpenEvidence(bytes.NewReader(e.b))
	if err != nil {
		b.Fatal(err)
	}
	// The 10 new records, replayed from the saved state's checkpoint.
	records, err := readAll(log)
	if err != nil {
		b.Fatal(err)
	}
	vals, err := h.Values()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("signature", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := attest.VerifyQuote(h.Quote.Attest, h.Quote.Signature, vals, attest.QuoteOptions{AK: c.a.Public(), Nonce: e.nonce}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("replay", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			n, err := c.state.Log.Resume().Visit(bytes.NewReader(records), nil)
			if err != nil || uint64(n) != c.state.Records()+10 {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("header", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, _, err := attest.OpenEvidence(bytes.NewReader(e.b)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("state-json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			js, err := c.state.MarshalJSON()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := verifier.ParseState(js); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("loadgen-evidence", func(b *testing.B) {
		// The load generator's side: 10 records made and one quote signed.
		for i := 0; i < b.N; i++ {
			c.a.AddRecords(10)
			if _, err := c.a.EvidenceBytes(e.nonce, c.a.Records()-10, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func readAll(r interface{ Read([]byte) (int, error) }) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

// BenchmarkFirstPoll100k verifies the first poll of an agent whose log
// holds 100,000 records, with the reference, saving the state (the whole
// log replayed, the prefix digest computed).
func BenchmarkFirstPoll100k(b *testing.B) {
	f, err := New(Options{Agents: 1, Initial: 100_000})
	if err != nil {
		b.Fatal(err)
	}
	a := f.Agent(0)
	ref := reference(b, f)
	n := nonce(b)
	e, err := a.EvidenceBytes(n, 0, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(e)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, log, err := attest.OpenEvidence(bytes.NewReader(e))
		if err != nil {
			b.Fatal(err)
		}
		res, err := verifier.Verify(context.Background(), verifier.Evidence{Header: h, Log: log},
			verifier.Options{AK: a.Public(), Nonce: n, Reference: ref, SaveState: true})
		if err != nil || res.Verdict.Covered != 100_000 || res.State == nil {
			b.Fatalf("Verify = %+v, %v", res, err)
		}
	}
}

// BenchmarkSaveResult stores one incremental attestation's result in the
// SQLite store as the engine does after a poll of 10 new records: the
// state (the saved verifier state, about 1 KB of JSON), the 10 records'
// observations, the next due time; set RIMON_BENCH_DB_DIR to put the file
// elsewhere than the test's temporary directory (a tmpfs, say).
func BenchmarkSaveResult(b *testing.B) {
	ctx := context.Background()
	dir := os.Getenv("RIMON_BENCH_DB_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		var err error
		if dir, err = os.MkdirTemp(dir, "bench"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	st, err := sqlstore.Open(ctx, filepath.Join(dir, "verifier.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := newChain(b, 10, true)
	if err := st.PutReference(ctx, fleet.Reference{Name: "fleet", Body: Reference(64)}, false); err != nil {
		b.Fatal(err)
	}
	// A fleet's worth of other agents, so the tables are not tiny.
	var ids []int64
	for i := 0; i < 1000; i++ {
		a, err := st.AddAgent(ctx, fleet.Spec{Name: fmt.Sprintf("agent-%05d", i), URL: "http://127.0.0.1:1", AK: c.a.AKPEM(),
			Reference: "fleet", PCRs: []int{23}, Banks: []string{"sha256"}, Interval: time.Minute}, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	js, err := c.state.MarshalJSON()
	if err != nil {
		b.Fatal(err)
	}
	versions := map[int64]int64{}
	for _, id := range ids {
		versions[id] = 1
	}
	a, err := st.Agent(ctx, "agent-00000")
	if err != nil {
		b.Fatal(err)
	}
	versions[ids[0]] = a.Version
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := ids[i%len(ids)]
		var obs []fleet.Observation
		for k := 0; k < 10; k++ {
			n := i*10 + k
			p := filePath(n % 64)
			obs = append(obs, fleet.Observation{Path: p, Kind: "file", SHA256: fileDigest(p, (n/64)%2), Record: uint64(n), Latest: true})
		}
		err := st.SaveResult(ctx, fleet.Result{AgentID: id, Version: versions[id], At: time.Now(), Status: fleet.Trusted,
			Reason: "trusted", Boot: &fleet.Boot{Known: true, ResetCount: 1, Clock: uint64(i), State: js},
			Observations: obs, NextDue: time.Now().Add(time.Minute)})
		if errors.Is(err, fleet.ErrConflict) {
			a, _ := st.Agent(ctx, fmt.Sprintf("agent-%05d", i%len(ids)))
			versions[id] = a.Version
			i--
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		versions[id]++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "saves/s")
}
