package agent_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// machine is a simulated attester: a TPM with an AK and a log.
type machine struct {
	t   *testing.T
	tpm *tpm.TPM
	ak  crypto.PublicKey
	log string
	w   *logfile.Writer
}

func newMachine(t *testing.T) *machine {
	ctx := context.Background()
	tp := testtpm.Open(t)
	ak, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	banks, err := tp.ActiveBanks(ctx, 23)
	if err != nil {
		t.Fatal(err)
	}
	m := &machine{t: t, tpm: tp, ak: ak.Key, log: filepath.Join(t.TempDir(), "m.log")}
	m.w, _, err = logfile.OpenWriter(ctx, m.log, tp, logfile.WriterOptions{Banks: banks.Active, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.w.Close() })
	return m
}

func (m *machine) measure(path, content string) {
	m.t.Helper()
	d := sha256.Sum256([]byte(content))
	if _, err := m.w.Append(context.Background(), 23, eventlog.Event{Kind: "file", Path: path, SHA256: fmt.Sprintf("%x", d), Size: uint64(len(content)), Reason: "initial"}); err != nil {
		m.t.Fatal(err)
	}
}

// verify checks evidence as a verifier does, pinning o's AK and nonce.
func verify(ev *attest.Evidence, o attest.Options) (*attest.Result, error) {
	res, err := verifier.Verify(context.Background(), verifier.Evidence{Header: ev, Log: bytes.NewReader(ev.Log)},
		verifier.Options{AK: o.AK, Nonce: o.Nonce, PCRs: o.PCRs, Banks: o.Banks, Reference: o.Reference})
	if err != nil {
		return nil, err
	}
	return res.Verdict, nil
}

var nonce = []byte("0123456789abcdef")
