package main

import (
	"context"
	"crypto"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	attestagent "github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
)

// cacheAgent is an agent's evidence endpoint on the simulator, over a log
// the test appends real measurements to between rounds.
type cacheAgent struct {
	t      *testing.T
	url    string
	log    string
	ak     string
	append func(path, reason string)
	mu     sync.Mutex
	sinces []string
}

func newCacheAgent(t *testing.T, dir string) *cacheAgent {
	ctx := context.Background()
	tp := testtpm.Open(t)
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := attest.PublicKeyPEM(ak.Key)
	if err != nil {
		t.Fatal(err)
	}
	a := &cacheAgent{t: t, log: filepath.Join(dir, "m.log"), ak: writeFile(t, filepath.Join(dir, "ak.pem"), string(pem))}
	banks := []crypto.Hash{crypto.SHA256}
	a.append = func(path, reason string) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		w, _, err := logfile.OpenWriter(ctx, a.log, tp, logfile.WriterOptions{Banks: banks, PCR: 23, BootID: "b"})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Append(ctx, 23, eventlog.Event{Kind: "file", Path: path, SHA256: sha256Hex(string(b)), Size: uint64(len(b)), Reason: reason}); err != nil {
			t.Fatal(err)
		}
	}
	h := attestagent.Handler(attestagent.HandlerOptions{TPM: tp, LogPath: a.log, PCRs: []int{23}, Banks: banks})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.sinces = append(a.sinces, r.URL.Query().Get("since"))
		a.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

func (a *cacheAgent) asked() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.sinces...)
}

// TestAttestCacheRounds: rimon attest --cache over three rounds against
// an agent on the simulator. The first verifies the whole log (TRUSTED);
// a file then changes and the second asks only for the records after the
// saved state and is UNTRUSTED, naming the file; the third, with no
// change, asks from the new count and still names it, as a replay of the
// whole log does.
func TestAttestCacheRounds(t *testing.T) {
	dir := t.TempDir()
	a := newCacheAgent(t, dir)
	app := writeFile(t, filepath.Join(dir, "app"), "v1")
	conf := writeFile(t, filepath.Join(dir, "app.conf"), "listen 80")
	ref := writeFile(t, filepath.Join(dir, "ref.yaml"), "version: 1\nunlisted: fail\nfiles:\n  "+app+": ["+sha256Hex("v1")+"]\n  "+conf+": ["+sha256Hex("listen 80")+"]\n")
	a.append(app, "initial")
	a.append(conf, "initial")
	cache := filepath.Join(dir, "agent.cache")
	args := []string{"attest", "--agent", a.url, "--ak", a.ak, "--reference", ref, "--cache", cache}

	r := rimon(t, args...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "TRUSTED") {
		t.Fatalf("round 1: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(cache)
	if err != nil || !strings.HasPrefix(string(b), `{"version":1,"log":{"version":1,"records":2,`) || strings.Contains(string(b), "\x1e") {
		t.Fatalf("the cache holds %q, %v; want a state of 2 records and no log", b, err)
	}

	writeFile(t, app, "v2 tampered")
	a.append(app, "changed")
	r = rimon(t, args...)
	if r.code != exitCheck || !strings.HasPrefix(r.stdout, "UNTRUSTED") || !strings.Contains(r.stdout, app+": digest not allowed") {
		t.Fatalf("round 2: exit %d, want %d naming %s\n%s%s", r.code, exitCheck, app, r.stdout, r.stderr)
	}
	r = rimon(t, args...)
	if r.code != exitCheck || !strings.Contains(r.stdout, app+": digest not allowed") || !strings.Contains(r.stdout, "the first 3 of 3 records") {
		t.Fatalf("round 3: exit %d, want %d naming %s\n%s%s", r.code, exitCheck, app, r.stdout, r.stderr)
	}
	if got := a.asked(); !slices.Equal(got, []string{"", "2", "3"}) {
		t.Errorf("since asked = %q, want none, 2, 3", got)
	}

	// The same log verified whole says the same.
	whole := rimon(t, "attest", "--agent", a.url, "--ak", a.ak, "--reference", ref)
	if !strings.Contains(r.stdout, "ok   continuity") {
		t.Errorf("round 3 does not report the continuity check:\n%s", r.stdout)
	}
	nonceLine := regexp.MustCompile(`the nonce [0-9a-f]+|\n *ok +continuity[^\n]*`)
	if whole.code != r.code || nonceLine.ReplaceAllString(whole.stdout, "") != nonceLine.ReplaceAllString(r.stdout, "") {
		t.Errorf("whole log: exit %d\n%s\nfrom the cache: exit %d\n%s", whole.code, whole.stdout, r.code, r.stdout)
	}

	// A new reference (approving v2 too): the state was checked with the
	// old one, so the whole log is asked for, and must begin with the
	// records the state accepted.
	ref2 := writeFile(t, filepath.Join(dir, "ref2.yaml"), "version: 1\nunlisted: fail\nfiles:\n  "+app+": ["+sha256Hex("v1")+", "+sha256Hex("v2 tampered")+"]\n  "+conf+": ["+sha256Hex("listen 80")+"]\n")
	r = rimon(t, "attest", "--agent", a.url, "--ak", a.ak, "--reference", ref2, "--cache", cache)
	if r.code != 0 || !strings.Contains(r.stderr, "another reference") {
		t.Errorf("new reference: exit %d, want 0 with a note\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := a.asked(); got[len(got)-1] != "" {
		t.Errorf("after a reference change since=%s was asked, want the whole log", got[len(got)-1])
	}
}

// TestAttestCacheFiles: a cache written by an older rimon (the log itself)
// is read once and replaced by a state; a cache that is not a valid state
// is refused, saying to delete it.
func TestAttestCacheFiles(t *testing.T) {
	dir := t.TempDir()
	a := newCacheAgent(t, dir)
	app := writeFile(t, filepath.Join(dir, "app"), "v1")
	a.append(app, "initial")
	a.append(app, "changed")
	log, err := os.ReadFile(a.log)
	if err != nil {
		t.Fatal(err)
	}
	cache := writeFile(t, filepath.Join(dir, "old.cache"), string(log))
	r := rimon(t, "attest", "--agent", a.url, "--ak", a.ak, "--cache", cache)
	if r.code != 0 || !strings.Contains(r.stdout, "the first 2 of 2 records") {
		t.Fatalf("old cache: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := a.asked(); !slices.Equal(got, []string{"2"}) {
		t.Errorf("with the old cache since asked = %q, want 2", got)
	}
	if b, _ := os.ReadFile(cache); !strings.HasPrefix(string(b), `{"version":1,`) {
		t.Errorf("the old cache was not replaced by a state: %q", b)
	}

	// An older rimon kept an empty log as an empty file.
	writeFile(t, cache, "")
	if r := rimon(t, "attest", "--agent", a.url, "--ak", a.ak, "--cache", cache); r.code != 0 {
		t.Errorf("empty old cache: exit %d\n%s", r.code, r.stderr)
	}
	for _, bad := range []string{"{not json", `{"version":1,"log":{},"checks":{}}`, `{"version":9}`} {
		writeFile(t, cache, bad)
		r := rimon(t, "attest", "--agent", a.url, "--ak", a.ak, "--cache", cache)
		if r.code != exitError || !strings.Contains(r.stderr, "delete the file to start over") || !strings.Contains(r.stderr, cache) {
			t.Errorf("cache %q: exit %d, want %d naming the file and saying to delete it\n%s", bad, r.code, exitError, r.stderr)
		}
	}
}
