package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

func TestExtendEveryActiveBank(t *testing.T) {
	ctx := context.Background()
	tp := testtpm.Open(t)
	banks, err := tp.ActiveBanks(ctx, 23)
	if err != nil {
		t.Fatal(err)
	}
	if len(banks.Active) == 0 {
		t.Fatal("ActiveBanks returned no bank")
	}
	before, err := tp.ReadPCRs(ctx, 23, banks.Active)
	if err != nil {
		t.Fatal(err)
	}
	ds := map[crypto.Hash][]byte{}
	for _, h := range banks.Active {
		hh := h.New()
		hh.Write([]byte("rimon"))
		ds[h] = hh.Sum(nil)
	}
	if err := tp.ExtendPCR(ctx, 23, ds); err != nil {
		t.Fatal(err)
	}
	after, err := tp.ReadPCRs(ctx, 23, banks.Active)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range banks.Active {
		hh := h.New()
		hh.Write(before[h])
		hh.Write(ds[h])
		if want := hh.Sum(nil); !bytes.Equal(after[h], want) {
			t.Errorf("PCR 23 %v after extend = %x, want %x", h, after[h], want)
		}
	}
}

func TestSimulatorHasSHA256(t *testing.T) {
	tp := testtpm.Open(t)
	banks, err := tp.ActiveBanks(context.Background(), 23)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, h := range banks.Active {
		found = found || h == crypto.SHA256
	}
	if !found {
		t.Errorf("ActiveBanks = %v, want sha256 among them", banks.Active)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, spec string
		want       error
		text       string
	}{
		{"missing_device", "/nonexistent/tpmrm0", tpm.ErrNoTPM, "no TPM at /nonexistent/tpmrm0"},
		{"not_a_device", "/etc/passwd", tpm.ErrNoTPM, "not a device"},
		{"tcp_refused", "tcp:127.0.0.1:1", tpm.ErrUnreachable, "swtpm not reachable at tcp:127.0.0.1:1"},
		{"unix_missing", "unix:/nonexistent/sock", tpm.ErrUnreachable, "swtpm not reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tpm.Open(ctx, tc.spec)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("Open(%q) = %v, want %v containing %q", tc.spec, err, tc.want, tc.text)
			}
		})
	}
}

func TestReadPCRRange(t *testing.T) {
	tp := testtpm.Open(t)
	if _, err := tp.ReadPCRs(context.Background(), 24, []crypto.Hash{crypto.SHA256}); err == nil {
		t.Error("ReadPCRs(24) succeeded, want an out-of-range error")
	}
}

// TestSwtpmMatchesTpm2Tools extends on a private swtpm and reads back with tpm2_pcrread.
func TestSwtpmMatchesTpm2Tools(t *testing.T) {
	spec := testtpm.Swtpm(t)
	ctx := context.Background()
	tp, err := tpm.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	d := crypto.SHA256.New()
	d.Write([]byte("x"))
	if err := tp.ExtendPCR(ctx, 23, map[crypto.Hash][]byte{crypto.SHA256: d.Sum(nil)}); err != nil {
		t.Fatal(err)
	}
	vals, err := tp.ReadPCRs(ctx, 23, []crypto.Hash{crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	tp.Close() // swtpm serves one client at a time
	out, err := exec.Command("tpm2_pcrread", "-T", testtpm.TCTI(spec), "sha256:23").CombinedOutput()
	if err != nil {
		t.Fatalf("tpm2_pcrread: %v\n%s", err, out)
	}
	if want := strings.ToUpper(hexs(vals[crypto.SHA256])); !strings.Contains(string(out), want) {
		t.Errorf("tpm2_pcrread printed\n%s\nwant it to contain %s", out, want)
	}
}

// TestNVRoundTrip writes an Azure-size (2600-byte) index and reads it back
// in chunks; the simulator must be built with CGO_CFLAGS=-DMAX_NV_INDEX_SIZE=4096
// (the Makefile does so).
func TestNVRoundTrip(t *testing.T) {
	ctx := context.Background()
	tp := testtpm.Open(t)
	data := make([]byte, 2600)
	for i := range data {
		data[i] = byte(i * 7)
	}
	idx := uint32(0x01400002)
	if err := tp.WriteNV(ctx, idx, data); err != nil {
		t.Fatal(err)
	}
	got, err := tp.ReadNV(ctx, idx)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadNV = %d bytes, %v; want the 2600 bytes written", len(got), err)
	}
	if _, err := tp.ReadNV(ctx, 0x01400003); !errors.Is(err, tpm.ErrNoNV) {
		t.Errorf("ReadNV of an undefined index = %v, want ErrNoNV", err)
	}
}

func TestUnixSocketSwtpm(t *testing.T) {
	ctx := context.Background()
	tp, err := tpm.Open(ctx, testtpm.SwtpmUnix(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	d := crypto.SHA256.New()
	d.Write([]byte("over a unix socket"))
	if err := tp.ExtendPCR(ctx, 23, map[crypto.Hash][]byte{crypto.SHA256: d.Sum(nil)}); err != nil {
		t.Fatal(err)
	}
	v, err := tp.ReadPCRs(ctx, 23, []crypto.Hash{crypto.SHA256})
	if err != nil || bytes.Equal(v[crypto.SHA256], make([]byte, 32)) {
		t.Errorf("PCR 23 after an extend over unix: %x, %v", v[crypto.SHA256], err)
	}
}

// TestSwtpmBusyWithAnotherClient: swtpm serves one client at a time; a
// second one (rimon measure beside a running agent) is told so, instead of
// waiting out the command timeout with "i/o timeout".
func TestSwtpmBusyWithAnotherClient(t *testing.T) {
	ctx := context.Background()
	spec := testtpm.Swtpm(t)
	first, err := tpm.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	defer tpm.SetFirstTimeout(500 * time.Millisecond)()
	second, err := tpm.Open(ctx, spec)
	if err == nil {
		_, err = second.ReadPCRs(ctx, 23, []crypto.Hash{crypto.SHA256})
		second.Close()
	}
	if !errors.Is(err, tpm.ErrUnreachable) || !strings.Contains(err.Error(), "swtpm serves one client at a time") {
		t.Errorf("a second client of swtpm: %v; want ErrUnreachable saying swtpm serves one client at a time", err)
	}
}
