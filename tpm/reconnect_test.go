package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// readWhenBack polls ReadPCRs until the TPM answers again (the socket
// transport redials with backoff), failing the test after a deadline.
func readWhenBack(t *testing.T, tp *tpm.TPM, banks []crypto.Hash) map[crypto.Hash][]byte {
	t.Helper()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var v map[crypto.Hash][]byte
		if v, err = tp.ReadPCRs(context.Background(), 23, banks); err == nil {
			return v
		}
		if !errors.Is(err, tpm.ErrUnreachable) {
			t.Fatalf("ReadPCRs after a restart = %v, want success or ErrUnreachable", err)
		}
	}
	t.Fatalf("the TPM did not come back: %v", err)
	return nil
}

// TestSocketTPMReconnects kills swtpm under an open TPM and starts it
// again, first with its volatile state saved (the PCR keeps its value),
// then as a new TPM (the PCR is back at zero): the same *tpm.TPM serves
// both, where it used to fail with "broken pipe" forever.
func TestSocketTPMReconnects(t *testing.T) {
	ctx := context.Background()
	sw := testtpm.StartSwtpm(t)
	tp, err := tpm.Open(ctx, sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	banks := []crypto.Hash{crypto.SHA256}
	d := crypto.SHA256.New()
	d.Write([]byte("rimon"))
	if err := tp.ExtendPCR(ctx, 23, map[crypto.Hash][]byte{crypto.SHA256: d.Sum(nil)}); err != nil {
		t.Fatal(err)
	}
	extended, err := tp.ReadPCRs(ctx, 23, banks)
	if err != nil {
		t.Fatal(err)
	}

	sw.SaveVolatile()
	sw.Kill()
	if _, err := tp.ReadPCRs(ctx, 23, banks); !errors.Is(err, tpm.ErrUnreachable) {
		t.Fatalf("ReadPCRs with swtpm killed = %v, want ErrUnreachable", err)
	}
	sw.Restart(true)
	if got := readWhenBack(t, tp, banks); !bytes.Equal(got[crypto.SHA256], extended[crypto.SHA256]) {
		t.Errorf("PCR 23 after a restart with state = %x, want %x", got[crypto.SHA256], extended[crypto.SHA256])
	}

	sw.Restart(false)
	if got := readWhenBack(t, tp, banks); !bytes.Equal(got[crypto.SHA256], make([]byte, 32)) {
		t.Errorf("PCR 23 after a restart without state = %x, want zeros", got[crypto.SHA256])
	}
	// And the TPM works for extends again.
	if err := tp.ExtendPCR(ctx, 23, map[crypto.Hash][]byte{crypto.SHA256: d.Sum(nil)}); err != nil {
		t.Errorf("ExtendPCR after reconnecting: %v", err)
	}
}

// TestSocketTPMReconnectsToUnstartedTPM restarts swtpm without
// startup-clear: the reconnected transport must send TPM2_Startup itself,
// and the command that found the TPM unstarted goes through.
func TestSocketTPMReconnectsToUnstartedTPM(t *testing.T) {
	ctx := context.Background()
	sw := testtpm.StartSwtpm(t)
	tp, err := tpm.Open(ctx, sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	banks := []crypto.Hash{crypto.SHA256}
	if _, err := tp.ReadPCRs(ctx, 23, banks); err != nil {
		t.Fatal(err)
	}
	sw.NoStartup = true
	sw.Restart(false)
	if got := readWhenBack(t, tp, banks); !bytes.Equal(got[crypto.SHA256], make([]byte, 32)) {
		t.Errorf("PCR 23 of the restarted TPM = %x, want zeros", got[crypto.SHA256])
	}
}

// TestSocketTPMBadResponseSize: a response whose header announces an
// impossible size leaves its body unread; the connection must not carry
// another command, so the error is ErrUnreachable (a reconnecting TPM dials
// again) and names the size.
func TestSocketTPMBadResponseSize(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				if _, err := c.Read(buf); err != nil {
					return
				}
				// TPM_ST_NO_SESSIONS, size 1 MiB, TPM_RC_SUCCESS, then garbage.
				c.Write([]byte{0x80, 0x01, 0x00, 0x10, 0x00, 0x00, 0, 0, 0, 0, 1, 2, 3})
			}()
		}
	}()
	tp, err := tpm.Open(context.Background(), "tcp:"+ln.Addr().String())
	if err == nil {
		_, err = tp.ReadPCRs(context.Background(), 23, []crypto.Hash{crypto.SHA256})
		tp.Close()
	}
	if !errors.Is(err, tpm.ErrUnreachable) || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("a response of 1 MiB announced: %v; want ErrUnreachable naming the size", err)
	}
}
