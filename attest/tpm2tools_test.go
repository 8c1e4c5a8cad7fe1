package attest_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/tpm"
)

// tools runs tpm2-tools against one swtpm.
type tools struct {
	t    *testing.T
	tcti string
	dir  string
}

func (x *tools) run(args ...string) {
	x.t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = x.dir
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+x.tcti)
	if out, err := cmd.CombinedOutput(); err != nil {
		x.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (x *tools) read(name string) []byte {
	x.t.Helper()
	b, err := os.ReadFile(filepath.Join(x.dir, name))
	if err != nil {
		x.t.Fatal(err)
	}
	return b
}

// key makes a restricted signing key with tpm2_createprimary, persists it
// at handle and returns its public key as tpm2_readpublic writes it.
func (x *tools) key(alg, handle string) crypto.PublicKey {
	x.t.Helper()
	x.run("tpm2_createprimary", "-C", "o", "-G", alg, "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign", "-c", "k.ctx")
	x.run("tpm2_evictcontrol", "-C", "o", "-c", "k.ctx", handle)
	x.run("tpm2_flushcontext", "-t") // swtpm has no resource manager: free the transient copy
	x.run("tpm2_readpublic", "-c", handle, "-f", "pem", "-o", handle+".pem")
	k, err := attest.ParsePublicKey(x.read(handle + ".pem"))
	if err != nil {
		x.t.Fatal(err)
	}
	return k
}

type quoteFiles struct{ msg, sig, pcrs []byte }

// quote runs tpm2_quote with the key at handle over sel ("sha1:16+sha256:23").
func (x *tools) quote(handle, sel, hash string, extra ...string) quoteFiles {
	x.t.Helper()
	x.run(append([]string{"tpm2_quote", "-c", handle, "-l", sel, "-q", "00112233445566778899aabbccddeeff",
		"-m", "q.msg", "-s", "q.sig", "-o", "q.pcrs", "-g", hash}, extra...)...)
	return quoteFiles{x.read("q.msg"), x.read("q.sig"), x.read("q.pcrs")}
}

// TestTPM2ToolsQuotes verifies quotes that tpm2_quote made on swtpm (four
// banks) against a log rimon wrote: ECDSA and RSA keys, signatures as
// TPMT_SIGNATURE and in -f plain form (DER, and r||s), every bank quoted,
// banks that select different PCRs, and a bank that disagrees with the log.
func TestTPM2ToolsQuotes(t *testing.T) {
	ctx := context.Background()
	spec := testtpm.Swtpm(t)
	x := &tools{t: t, tcti: testtpm.TCTI(spec), dir: t.TempDir()}
	logPath := filepath.Join(x.dir, "m.log")

	// rimon writes the log (every active bank) and the RSA AK, then lets go of swtpm.
	tp, err := tpm.Open(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	rsaAK, _, err := tp.ProvisionAK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	banks, err := tp.ActiveBanks(ctx, 23)
	if err != nil {
		t.Fatal(err)
	}
	if len(banks.Active) != 4 {
		t.Fatalf("swtpm has banks %v; this test wants sha1, sha256, sha384 and sha512", banks.Active)
	}
	w, _, err := logfile.OpenWriter(ctx, logPath, tp, logfile.WriterOptions{Banks: banks.Active, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/usr/bin/a", "/usr/bin/b"} {
		if _, err := w.Append(ctx, 23, eventlog.Event{Kind: "file", Path: p, SHA256: digestOf(p), Reason: "initial"}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	tp.Close()
	log, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}

	p256 := x.key("ecc256:ecdsa-sha256:null", "0x81000010")
	p384 := x.key("ecc384:ecdsa-sha384:null", "0x81000011")
	qnonce := []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}
	all := "sha1:23+sha256:23+sha384:23+sha512:23"

	check := func(name string, q quoteFiles, o attest.QuoteOptions, wantHash crypto.Hash, wantErr string) {
		t.Helper()
		o.Nonce = qnonce
		vals, err := attest.ParsePCRsFile(q.pcrs)
		if err != nil {
			t.Fatalf("%s: tpm2_quote's PCR file: %v", name, err)
		}
		for _, v := range []map[eventlog.PCRKey][]byte{vals, nil} {
			res, err := attest.Verify(q.msg, q.sig, v, bytes.NewReader(log), attest.Options{QuoteOptions: o})
			switch {
			case wantErr == "" && err != nil:
				t.Errorf("%s (values %v): %v", name, v != nil, err)
			case wantErr == "" && (!res.Trusted || res.Covered != 2 || !strings.Contains(res.Checks[0].Detail, wantHash.String())):
				t.Errorf("%s: %+v; want trusted over 2 records, signed with %v", name, res, wantHash)
			case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
				t.Errorf("%s (values %v): %v; want an error saying %q", name, v != nil, err, wantErr)
			}
		}
	}

	q := x.quote("0x81000010", all, "sha256", "-f", "plain")
	check("ECDSA P-256, -f plain (DER), four banks", q, attest.QuoteOptions{AK: p256}, crypto.SHA256, "")
	var der struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(q.sig, &der); err != nil {
		t.Fatalf("tpm2_quote -f plain wrote no DER ECDSA signature: %v", err)
	}
	rs := append(der.R.FillBytes(make([]byte, 32)), der.S.FillBytes(make([]byte, 32))...)
	check("ECDSA P-256, r||s", quoteFiles{q.msg, rs, q.pcrs}, attest.QuoteOptions{AK: p256}, crypto.SHA256, "")
	check("ECDSA P-256, another key", q, attest.QuoteOptions{AK: p384}, 0, "not signed by the pinned attestation key")
	check("ECDSA P-256, truncated plain signature", quoteFiles{q.msg, rs[:63], q.pcrs}, attest.QuoteOptions{AK: p256}, 0, "neither a TPMT_SIGNATURE nor a plain ECDSA signature")
	check("ECDSA P-256, asked for sha256", q, attest.QuoteOptions{AK: p256, Banks: []crypto.Hash{crypto.SHA256}}, crypto.SHA256, "")

	check("ECDSA P-256, TPMT_SIGNATURE", x.quote("0x81000010", all, "sha256"), attest.QuoteOptions{AK: p256}, crypto.SHA256, "")
	check("ECDSA P-384, -f plain, sha384", x.quote("0x81000011", all, "sha384", "-f", "plain"), attest.QuoteOptions{AK: p384}, crypto.SHA384, "")
	check("RSA, -f plain", x.quote("0x81000003", all, "sha256", "-f", "plain"), attest.QuoteOptions{AK: rsaAK.Key}, crypto.SHA256, "")
	check("RSA, sha1+sha256", x.quote("0x81000003", "sha1:23+sha256:23", "sha256"), attest.QuoteOptions{AK: rsaAK.Key}, crypto.SHA256, "")

	// Banks that select different PCRs.
	mixed := x.quote("0x81000010", "sha1:16+sha256:23", "sha256", "-f", "plain")
	check("sha1:16+sha256:23, PCR 23 asked for", mixed, attest.QuoteOptions{AK: p256}, 0,
		"the quote covers sha1:16+sha256:23, which includes sha1:16 that the verifier did not ask for (--pcrs 23); its banks select different PCRs")
	check("sha1:16+sha256:23, PCRs 16 and 23 asked for", mixed, attest.QuoteOptions{AK: p256, PCRs: []int{16, 23}}, 0,
		"covers PCR 16 only in the SHA-1 bank, which is too weak")
	check("sha1:16+sha256:23, with --allow-sha1", mixed, attest.QuoteOptions{AK: p256, PCRs: []int{16, 23}, AllowSHA1: true}, crypto.SHA256, "")
	check("sha256:16+sha384:23", x.quote("0x81000010", "sha256:16+sha384:23", "sha256", "-f", "plain"),
		attest.QuoteOptions{AK: p256, PCRs: []int{16, 23}}, crypto.SHA256, "")
	check("sha256:16+sha384:23, --bank sha256", x.quote("0x81000010", "sha256:16+sha384:23", "sha256"),
		attest.QuoteOptions{AK: p256, PCRs: []int{16, 23}, Banks: []crypto.Hash{crypto.SHA256}}, 0, "sha256:23 is missing")

	// The SHA-1 bank of PCR 23 is extended behind the log's back: a quote
	// that covers it is invalid although SHA-256 agrees.
	x.run("tpm2_pcrextend", "23:sha1="+strings.Repeat("ab", 20))
	q = x.quote("0x81000010", "sha1:23+sha256:23", "sha256", "-f", "plain")
	vals, _ := attest.ParsePCRsFile(q.pcrs)
	_, err = attest.Verify(q.msg, q.sig, vals, bytes.NewReader(log), attest.Options{QuoteOptions: attest.QuoteOptions{AK: p256, Nonce: qnonce}})
	var ce *attest.CheckError
	if !errors.As(err, &ce) || ce.Check != attest.CheckLog || !strings.Contains(err.Error(), "sha1:23: the log replays to") {
		t.Errorf("sha1:23 extended outside the log: %v; want the log replay check to name sha1:23", err)
	}
	check("sha256 alone after the SHA-1 extend", x.quote("0x81000010", "sha256:23", "sha256", "-f", "plain"), attest.QuoteOptions{AK: p256}, crypto.SHA256, "")
}
