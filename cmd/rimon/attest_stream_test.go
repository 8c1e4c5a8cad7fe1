package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
)

// fakeAgent answers like rimon watch --listen, with quotes signed by a
// software key standing in for a TPM: the quote covers an empty log (PCR
// 23 all zeros), and log writes whatever follows the header.
type fakeAgent struct {
	key    *rsa.PrivateKey
	akPath string
}

func newFakeAgent(t *testing.T) *fakeAgent {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemb, err := attest.PublicKeyPEM(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeAgent{key: key, akPath: writeFile(t, filepath.Join(t.TempDir(), "ak.pem"), string(pemb))}
}

// header is the evidence header for nonce, signed by key.
func (a *fakeAgent) header(t *testing.T, nonce []byte, key *rsa.PrivateKey) []byte {
	pcr := make([]byte, 32)
	pd := sha256.Sum256(pcr)
	ab := tpm2.Marshal(&tpm2.TPMSAttest{
		Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestQuote,
		ExtraData: tpm2.TPM2BData{Buffer: nonce},
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(23)}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: pd[:]},
		}),
	})
	d := sha256.Sum256(ab)
	s, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, d[:])
	if err != nil {
		t.Error(err)
	}
	sig := tpm2.Marshal(&tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
		&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s}})})
	ev := attest.Evidence{Version: attest.EvidenceVersion, Nonce: hex.EncodeToString(nonce), Quote: attest.QuoteBlob{Attest: ab, Signature: sig}}
	ev.SetValues(map[eventlog.PCRKey][]byte{{PCR: 23, Bank: crypto.SHA256}: pcr})
	b, err := ev.Marshal()
	if err != nil {
		t.Error(err)
	}
	return b
}

// record is a valid record (its digest is its content's) numbered n.
func record(t *testing.T, n int) []byte {
	c, err := eventlog.Event{Kind: "file", Path: fmt.Sprintf("/usr/lib/padding-%09d.so", n), SHA256: fmt.Sprintf("%064x", n),
		Size: uint64(n), Reason: "changed", Time: "2026-11-28T13:00:00Z", BootID: "b"}.Content()
	if err != nil {
		t.Error(err)
	}
	r := eventlog.Record{RecNum: uint64(n), HasRecNum: true, PCR: 23, ContentType: "rimon", Content: c, Digests: c.Digests([]crypto.Hash{crypto.SHA256})}
	b, err := r.Marshal()
	if err != nil {
		t.Error(err)
	}
	return b
}

func nonceOf(t *testing.T, r *http.Request) []byte {
	n, err := hex.DecodeString(r.URL.Query().Get("nonce"))
	if err != nil {
		t.Errorf("agent got nonce %q: %v", r.URL.Query().Get("nonce"), err)
	}
	return n
}

// TestAttestStopsAtMaxEvidence: an agent that sends a log of 1 GiB (valid
// records, made as they are sent, never covered by the quote) makes rimon
// attest stop at --max-evidence with an error, having asked for little
// more than that; it used to read all of it into memory first.
func TestAttestStopsAtMaxEvidence(t *testing.T) {
	a := newFakeAgent(t)
	var mu sync.Mutex
	var sent int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := w.Write(a.header(t, nonceOf(t, r), a.key))
		total := int64(n)
		for i := 0; err == nil && total < 1<<30; i++ {
			n, err = w.Write(record(t, i))
			total += int64(n)
		}
		mu.Lock()
		sent = total
		mu.Unlock()
	}))
	defer srv.Close()
	r := rimon(t, "attest", "--agent", srv.URL, "--ak", a.akPath, "--max-evidence", "4MiB")
	if r.code != exitError || !strings.Contains(r.stderr, "larger than the limit") || !strings.Contains(r.stderr, "--max-evidence 4MiB") {
		t.Errorf("attest of a 1 GiB log with --max-evidence 4MiB: exit %d, stderr %q; want 2, naming the limit", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("attest printed a verdict on evidence it refused:\n%s", r.stdout)
	}
	srv.Close() // waits for the handler
	mu.Lock()
	defer mu.Unlock()
	t.Logf("the agent wrote %d bytes", sent)
	// What the agent got written is what rimon read plus the sockets' buffers.
	if sent > 64<<20 {
		t.Errorf("the agent wrote %d bytes before rimon attest stopped reading; want about 4 MiB", sent)
	}
	if r := rimon(t, "attest", "--agent", srv.URL, "--ak", a.akPath, "--max-evidence", "2GiB"); r.code != exitUsage {
		t.Errorf("--max-evidence 2GiB: exit %d, want %d (at most 1GiB)", r.code, exitUsage)
	}
}

// TestAttestChecksQuoteBeforeLog: evidence whose quote carries another
// nonce, or is signed by another key, is refused before any of the log is
// read. The agent holds the log back until the client hangs up (or 20 s
// pass): rimon attest must not wait for it.
func TestAttestChecksQuoteBeforeLog(t *testing.T) {
	a := newFakeAgent(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, want string
		header     func(nonce []byte) []byte
	}{
		{"wrong_nonce", "nonce", func(nonce []byte) []byte { return a.header(t, append([]byte{^nonce[0]}, nonce[1:]...), a.key) }},
		{"other_key", "signature", func(nonce []byte) []byte { return a.header(t, nonce, other) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ended := make(chan string, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write(tc.header(nonceOf(t, r)))
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					ended <- "client hung up before the log"
				case <-time.After(20 * time.Second):
					w.Write(record(t, 0))
					ended <- "client waited for the log"
				}
			}))
			defer srv.Close()
			cache := filepath.Join(t.TempDir(), "agent.cache")
			r := rimon(t, "attest", "--agent", srv.URL, "--ak", a.akPath, "--cache", cache)
			if r.code != exitError || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("attest: exit %d, stderr %q; want 2 naming the %s", r.code, r.stderr, tc.want)
			}
			if got := <-ended; got != "client hung up before the log" {
				t.Errorf("agent: %s", got)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(cache), "*")); len(left) != 0 {
				t.Errorf("invalid evidence left files in the cache's directory: %v", left)
			}
		})
	}
}

// TestAttestRetries: on 429 and 503 rimon attest asks again with a fresh
// nonce, after the Retry-After the agent gives (at most 10 s) or a backoff,
// and gives up after --tries requests.
func TestAttestRetries(t *testing.T) {
	var waits []time.Duration
	defer func(f func(context.Context, time.Duration) error) { retrySleep = f }(retrySleep)
	retrySleep = func(_ context.Context, d time.Duration) error {
		waits = append(waits, d)
		return nil
	}
	a := newFakeAgent(t)
	var mu sync.Mutex // the handler's goroutine and the test's share nonces and answers
	var nonces []string
	answers := []func(w http.ResponseWriter){
		func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "7")
			http.Error(w, "too many requests", http.StatusTooManyRequests)
		},
		func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "3600")
			http.Error(w, "busy", http.StatusServiceUnavailable)
		},
		func(w http.ResponseWriter) { http.Error(w, "too many requests", http.StatusTooManyRequests) },
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		nonces = append(nonces, r.URL.Query().Get("nonce"))
		if i := len(nonces) - 1; i < len(answers) {
			answers[i](w)
			return
		}
		w.Write(a.header(t, nonceOf(t, r), a.key))
	}))
	defer srv.Close()
	r := rimon(t, "attest", "--agent", srv.URL, "--ak", a.akPath)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "TRUSTED") {
		t.Fatalf("attest after 429, 503, 429: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if want := []time.Duration{7 * time.Second, 10 * time.Second, 4 * time.Second}; !slices.Equal(waits, want) {
		t.Errorf("waits = %v, want %v (Retry-After 7, then 3600 capped at 10s, then the backoff)", waits, want)
	}
	if len(nonces) != 4 || len(slices.Compact(slices.Sorted(slices.Values(nonces)))) != 4 {
		t.Errorf("nonces of the 4 requests = %q; want 4 different ones", nonces)
	}

	// Always busy: give up after --tries requests, saying why.
	mu.Lock()
	nonces, waits = nil, nil
	answers = slices.Repeat(answers[1:2], 10)
	mu.Unlock()
	r = rimon(t, "attest", "--agent", srv.URL, "--ak", a.akPath, "--tries", "2")
	if r.code != exitError || !strings.Contains(r.stderr, "503 Service Unavailable") || !strings.Contains(r.stderr, "after 2 tries") || len(nonces) != 2 {
		t.Errorf("attest against a busy agent, --tries 2: exit %d, %d requests, stderr %q", r.code, len(nonces), r.stderr)
	}
	// Other refusals are not retried.
	mu.Lock()
	nonces = nil
	answers = []func(w http.ResponseWriter){func(w http.ResponseWriter) { http.Error(w, "nonce: want 8 to 64 bytes in hex", http.StatusBadRequest) }}
	mu.Unlock()
	if r := rimon(t, "attest", "--agent", srv.URL, "--ak", a.akPath); r.code != exitError || len(nonces) != 1 {
		t.Errorf("attest answered 400: exit %d after %d requests; want 2 after 1", r.code, len(nonces))
	}
}

// TestAttestCacheStreams: with --cache, the state after the records the
// quote covers is kept for the next round; records after the quote are
// not trusted, so they are not kept, and the next round asks for them
// again.
func TestAttestCacheStreams(t *testing.T) {
	a := newFakeAgent(t)
	var sinces []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sinces = append(sinces, r.URL.Query().Get("since"))
		w.Write(a.header(t, nonceOf(t, r), a.key))
		for i := 0; i < 3; i++ {
			w.Write(record(t, i)) // after the quote: reported, not trusted
		}
	}))
	defer srv.Close()
	cache := filepath.Join(t.TempDir(), "agent.cache")
	// The fake's quote covers none of its records: tolerate them.
	r := rimon(t, "attest", "--agent", srv.URL, "--ak", a.akPath, "--cache", cache, "--allow-trailing", "3")
	if r.code != 0 || !strings.Contains(r.stdout, "3 records after the quote") {
		t.Fatalf("attest --cache: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(cache)
	if err != nil || !bytes.Contains(b, []byte(`"records":0,`)) {
		t.Errorf("cache holds %q, %v; want a state of 0 records", b, err)
	}
	rimon(t, "attest", "--agent", srv.URL, "--ak", a.akPath, "--cache", cache, "--allow-trailing", "3")
	if !slices.Equal(sinces, []string{"", ""}) {
		t.Errorf("since asked = %q, want none twice", sinces)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "4KiB": 4 << 10, "512MiB": 512 << 20, "1GiB": 1 << 30, "3M": 3 << 20, "2G": 2 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1KiB", "1.5GiB", "1TiB", "99999999999GiB", "12 MiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d; want an error", in, got)
		}
	}
	for _, args := range [][]string{{"--max-evidence", "1023"}, {"--max-evidence", "lots"}, {"--tries", "0"}, {"--tries", "11"}} {
		if r := rimon(t, append([]string{"attest", "--agent", "http://127.0.0.1:1", "--ak", "ak.pem"}, args...)...); r.code != exitUsage {
			t.Errorf("attest %v: exit %d, want %d", args, r.code, exitUsage)
		}
	}
}
