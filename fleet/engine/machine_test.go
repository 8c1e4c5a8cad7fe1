package engine

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/fleet"
	"github.com/rimon-dev/rimon/fleet/sqlstore"
	"github.com/rimon-dev/rimon/policy"
	"github.com/rimon-dev/rimon/tpm"
)

var sha256Bank = []crypto.Hash{crypto.SHA256}

// switchPCRs extends the TPM, unless skip is set: a record then stays in
// the log without its extend (what a crash between the two leaves, or
// records added after the quote).
type switchPCRs struct {
	*tpm.TPM
	skip atomic.Bool
}

func (s *switchPCRs) ExtendPCR(ctx context.Context, pcr int, d map[crypto.Hash][]byte) error {
	if s.skip.Load() {
		return nil
	}
	return s.TPM.ExtendPCR(ctx, pcr, d)
}

// machine is a real agent: a log written by eventlog/logfile on a TPM,
// served by attest/agent.Handler over a real HTTP server.
type machine struct {
	t    *testing.T
	tp   *tpm.TPM
	pcrs *switchPCRs
	path string
	w    *logfile.Writer
	srv  *httptest.Server
	h    atomic.Pointer[http.Handler]
	// verifier is the Rimon-Verifier header of the last request.
	verifier atomic.Value
	ak       crypto.PublicKey
	akPEM    string
}

func newMachine(t *testing.T, tp *tpm.TPM) *machine {
	t.Helper()
	ctx := context.Background()
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pemb, err := attest.PublicKeyPEM(ak.Key)
	if err != nil {
		t.Fatal(err)
	}
	m := &machine{t: t, tp: tp, pcrs: &switchPCRs{TPM: tp}, path: filepath.Join(t.TempDir(), "m.log"), ak: ak.Key, akPEM: string(pemb)}
	m.open()
	m.serve(tp, m.path)
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.verifier.Store(r.Header.Get("Rimon-Verifier"))
		(*m.h.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

// serve makes the agent's server answer from tp and the log at path.
func (m *machine) serve(tp *tpm.TPM, path string) {
	var h http.Handler = agent.Handler(agent.HandlerOptions{TPM: tp, LogPath: path, PCRs: []int{23}, Banks: sha256Bank, Rate: 1000, PerClient: 64})
	m.h.Store(&h)
}

func (m *machine) open() {
	m.t.Helper()
	w, _, err := logfile.OpenWriter(context.Background(), m.path, m.pcrs, logfile.WriterOptions{Banks: sha256Bank, PCR: 23, BootID: "b"})
	if err != nil {
		m.t.Fatal(err)
	}
	m.w = w
	m.t.Cleanup(func() { w.Close() })
}

func digest(s string) string {
	d := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%x", d)
}

func (m *machine) file(path, content string) {
	m.t.Helper()
	if _, err := m.w.Append(context.Background(), 23, eventlog.Event{Kind: "file", Path: path, SHA256: digest(content), Reason: "changed"}); err != nil {
		m.t.Fatal(err)
	}
}

func (m *machine) unmeasured(path string) {
	m.t.Helper()
	ev := eventlog.Event{Kind: "unmeasured", Path: path, Reason: "changed",
		Extra: []eventlog.Field{{Key: "cause", Str: "unstable"}, {Key: "error", Str: "changed while read"}}}
	if _, err := m.w.Append(context.Background(), 23, ev); err != nil {
		m.t.Fatal(err)
	}
}

// container records a container start (launch and root file system digests of contents).
func (m *machine) container(name, launch, rootfs string) {
	m.t.Helper()
	ev, err := eventlog.Container{Name: name, ID: "0123456789abcdef", Rootfs: "/run/c/" + name + "/rootfs", RootfsSHA256: digest(rootfs),
		LaunchSHA256: digest(launch)}.Event()
	if err != nil {
		m.t.Fatal(err)
	}
	if _, err := m.w.Append(context.Background(), 23, ev); err != nil {
		m.t.Fatal(err)
	}
}

// oneShot verifies the whole log once, as rimon attest does.
func (m *machine) oneShot(ref *policy.Reference) *verifier.Result {
	m.t.Helper()
	nonce := newNonce()
	ev, err := attest.Fetch(context.Background(), http.DefaultClient, m.srv.URL, nonce, crypto.SHA256)
	if err != nil {
		m.t.Fatal(err)
	}
	res, err := verifier.Verify(context.Background(), verifier.Evidence{Header: ev, Log: bytes.NewReader(ev.Log)},
		verifier.Options{AK: m.ak, Nonce: nonce, Reference: ref, Banks: sha256Bank})
	if err != nil {
		m.t.Fatalf("one-shot verify: %v", err)
	}
	return res
}

func mustRef(t testing.TB, yaml string) *policy.Reference {
	t.Helper()
	r, err := policy.ParseReference("r.yaml", strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fixture is an engine over a memStore, with a controlled clock.
type fixture struct {
	t      testing.TB
	store  fleet.Store
	e      *Engine
	now    atomic.Pointer[time.Time]
	dbPath string
}

func newFixture(t testing.TB, o Options) *fixture {
	path := filepath.Join(t.TempDir(), "verifier.db")
	st, err := sqlstore.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, store: st, dbPath: path}
	start := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	f.now.Store(&start)
	if o.Now == nil {
		o.Now = func() time.Time { return *f.now.Load() }
	}
	f.e = New(f.store, o)
	return f
}

func (f *fixture) advance(d time.Duration) {
	n := f.now.Load().Add(d)
	f.now.Store(&n)
}

func (f *fixture) putRef(name, body string, replace bool) {
	f.t.Helper()
	ref := mustRef(f.t, body)
	if err := f.store.PutReference(context.Background(), fleet.Reference{Name: name, Body: []byte(body), Fingerprint: attest.ReferenceFingerprint(ref)}, replace); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) add(s fleet.Spec) {
	f.t.Helper()
	if s.Interval == 0 {
		s.Interval = time.Minute
	}
	if _, err := f.store.AddAgent(context.Background(), s, f.e.o.Now()); err != nil {
		f.t.Fatal(err)
	}
}

// poll runs one round of the named agent now, as a worker does, and
// returns the agent as stored after it.
func (f *fixture) poll(name string) *fleet.Agent {
	f.t.Helper()
	ctx := context.Background()
	a, err := f.store.Agent(ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	f.e.round(ctx, job{a: a})
	a, err = f.store.Agent(ctx, name)
	if err != nil {
		f.t.Fatal(err)
	}
	return a
}

func (f *fixture) history(name string) []string {
	h, _ := f.store.History(context.Background(), name, 0)
	var out []string
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Event == "state" {
			out = append(out, string(h[i].To))
		} else {
			out = append(out, h[i].Event)
		}
	}
	return out
}

// freeAddr is an address nothing listens on.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
