package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	attestagent "github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/policy"
	"github.com/rimon-dev/rimon/tpm"
	"github.com/spf13/cobra"
)

func newProvisionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "provision",
		Short: "Create the attestation key at 0x81000003 (or keep the one there) and print it",
		Long: `provision creates a restricted RSA-2048 signing key (RSASSA, SHA-256) in the
owner hierarchy and persists it at 0x81000003, unless a key is there already:
on an Azure confidential VM the platform's AK lives there and is used as it is.
It prints the public key (PEM) on stdout and its fingerprint on stderr; give
the PEM to the verifier, which pins it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := tpm.Open(cmd.Context(), g.tpm)
			if err != nil {
				return err
			}
			defer t.Close()
			ak, created, err := t.ProvisionAK(cmd.Context())
			if err != nil {
				return err
			}
			return g.printAK(ak, created)
		},
	}
}

func (g *globals) printAK(ak *tpm.AK, created bool) error {
	p, err := attest.PublicKeyPEM(ak.Key)
	if err != nil {
		return err
	}
	fp, _ := attest.Fingerprint(ak.Key)
	state := "existing key kept"
	if created {
		state = "created"
	}
	fmt.Fprintf(g.stderr, "rimon: attestation key at 0x%x (%s), fingerprint sha256:%s\n", uint32(tpm.AKHandle), state, fp)
	_, err = g.stdout.Write(p)
	return err
}

func newAKCmd(g *globals) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "ak [--format pem|tpm]",
		Short: "Print the attestation key's public part",
		Long:  "ak prints the public key at 0x81000003 as PEM, or with --format tpm as a marshalled TPM2B_PUBLIC (binary).",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "pem" && format != "tpm" {
				return usageErr("--format %q: want pem or tpm", format)
			}
			t, err := tpm.Open(cmd.Context(), g.tpm)
			if err != nil {
				return err
			}
			defer t.Close()
			ak, err := t.ReadAK(cmd.Context())
			if err != nil {
				return err
			}
			if format == "tpm" {
				pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ak.Public)
				if err != nil {
					return err
				}
				_, err = g.stdout.Write(tpm2.Marshal(tpm2.New2B(*pub)))
				return err
			}
			return g.printAK(ak, false)
		},
	}
	c.Flags().StringVar(&format, "format", "pem", "pem or tpm")
	return c
}

// parsePCRList parses "23" or "16,23".
func parsePCRList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 23 {
			return nil, usageErr("--pcrs %q: want PCR indexes 0-23 separated by commas", s)
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}

func parseBanks(names []string) ([]crypto.Hash, error) {
	var out []crypto.Hash
	for _, n := range names {
		h, err := parseBank(n)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func parseNonce(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) < 8 || len(b) > 64 {
		return nil, usageErr("--nonce: want 8 to 64 bytes in hex (16 to 128 hex characters)")
	}
	return b, nil
}

func newQuoteCmd(g *globals) *cobra.Command {
	var nonceHex, pcrList, out, toolsDir string
	var bankNames []string
	var af azureFlags
	c := &cobra.Command{
		Use:   "quote --nonce HEX [--pcrs 23] [--bank sha256] [--out evidence.json] [--tpm2-tools DIR]",
		Short: "Take a nonce-bound quote and write evidence: quote, PCR values, AK and log",
		Long: `quote signs the selected PCRs (every active bank, or --bank) with the attestation
key, reads their values and the log under the log's shared lock, and writes one
evidence document (docs/FORMAT.md, section 5). With --tpm2-tools DIR it also
writes quote.msg, quote.sig, quote.pcrs and ak.pem, which
  tpm2_checkquote -u ak.pem -m quote.msg -s quote.sig -f quote.pcrs -g sha256 -q NONCE
accepts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nonce, err := parseNonce(nonceHex)
			if err != nil {
				return err
			}
			pcrs, err := parsePCRList(pcrList)
			if err != nil {
				return err
			}
			banks, err := parseBanks(bankNames)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			t, active, err := g.openTPM(ctx, pcrs[0])
			if err != nil {
				return err
			}
			defer t.Close()
			if len(banks) == 0 {
				banks = active
			}
			ev, err := attestagent.Collect(ctx, t, g.log, nonce, pcrs, banks)
			if err != nil {
				return err
			}
			if ev.Azure, err = af.hardware(ctx, t); err != nil {
				return err
			}
			b, err := ev.Marshal()
			if err != nil {
				return err
			}
			if toolsDir != "" {
				if err := writeTools(toolsDir, ev, pcrs, banks); err != nil {
					return err
				}
			}
			if out == "" || out == "-" {
				_, err = g.stdout.Write(b)
				return err
			}
			return os.WriteFile(out, b, 0o644)
		},
	}
	c.Flags().StringVar(&nonceHex, "nonce", "", "the verifier's nonce, hex (required)")
	c.Flags().StringVar(&pcrList, "pcrs", "23", "PCRs to quote, comma-separated")
	c.Flags().StringArrayVar(&bankNames, "bank", nil, "bank to quote (repeatable; default every active bank)")
	c.Flags().StringVar(&out, "out", "", "evidence file (default stdout)")
	c.Flags().StringVar(&toolsDir, "tpm2-tools", "", "also write quote.msg, quote.sig, quote.pcrs and ak.pem here")
	c.MarkFlagRequired("nonce")
	af.attesterFlags(c)
	return c
}

func writeTools(dir string, ev *attest.Evidence, pcrs []int, banks []crypto.Hash) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	vals, err := ev.Values()
	if err != nil {
		return err
	}
	pf, err := attest.MarshalPCRsFile(attest.Selection(pcrs, banks), vals)
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{"quote.msg": ev.Quote.Attest, "quote.sig": ev.Quote.Signature,
		"quote.pcrs": pf, "ak.pem": []byte(ev.AKPublic)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

type verifyFlags struct {
	azure                                azureFlags
	logPrefix                            string                // file holding the records evidence left out
	prefix                               []byte                // the same, in memory (rimon attest --cache holding a log, as older rimon wrote it)
	state                                *verifier.State       // the saved replay state to continue from (rimon attest --cache)
	keepState                            func(*verifier.State) // receives the state to save after a valid verdict
	akKey                                crypto.PublicKey      // the AK enrollment vouched for (rimon attest --ek-ca/--ak-ca)
	logR                                 io.Reader             // the log of evidence being streamed (rimon attest)
	evidence, nonce, ak, reference, pcrs string
	banks                                []string
	msg, sig, pcrsFile, log              string
	asJSON, allowSHA1                    bool
	allowTrailing                        int
}

func newVerifyCmd(g *globals) *cobra.Command {
	var f verifyFlags
	c := &cobra.Command{
		Use:   "verify --nonce HEX --ak AK.pem (--evidence FILE | --quote-msg F --quote-sig F [--pcrs-file F] --log L) [--reference REF.yaml] [--json]",
		Short: "Verify evidence: quote, nonce, PCRs, log, and reference values",
		Long: `verify checks, in order: the quote's signature with the pinned AK, the
TPM_GENERATED magic and quote type, the nonce, the PCR selection, the PCR
digest, and that a prefix of the log replays to the quoted PCRs in every bank
the quote covers (later records are reported, never trusted). With
--reference it then checks every trusted measurement.

The quote must cover exactly the PCRs of --pcrs (default 23), each in at least
one bank stronger than SHA-1, and with --bank every bank named; by default any
banks are accepted, so the quote of every active bank that rimon quote takes
by default verifies. A record that says a path could not be measured, and an
evidence header that lists unrecorded changes, make the verdict untrusted
(the reference's "unmeasured: warn" makes the former warnings).

Exit codes: 0 trusted, 1 untrusted (evidence fine, content not approved),
2 evidence invalid, 3 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g.stdout = newTermSafe(g.stdout)
			return runVerify(g, f, nil)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.evidence, "evidence", "", "evidence file written by rimon quote")
	fl.StringVar(&f.nonce, "nonce", "", "the nonce the verifier sent, hex (required)")
	fl.StringVar(&f.ak, "ak", "", "the attestation key to pin, PEM (required)")
	fl.StringVar(&f.reference, "reference", "", "reference values (YAML)")
	fl.StringVar(&f.pcrs, "pcrs", "23", "PCRs the quote must cover")
	fl.StringArrayVar(&f.banks, "bank", nil, "a bank the quote must cover for every PCR (repeatable; default: any banks, at least one stronger than SHA-1)")
	fl.StringVar(&f.msg, "quote-msg", "", "TPMS_ATTEST (tpm2_quote -m)")
	fl.StringVar(&f.sig, "quote-sig", "", "signature: TPMT_SIGNATURE or plain (tpm2_quote -s)")
	fl.StringVar(&f.pcrsFile, "pcrs-file", "", "PCR values (tpm2_quote -o); without it the log must replay to the quoted digest")
	fl.StringVar(&f.log, "log", "", "the measurement log, with --quote-msg")
	fl.StringVar(&f.logPrefix, "log-prefix", "", "an earlier copy of the log, for evidence that starts at a later record (since=N)")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	fl.BoolVar(&f.allowSHA1, "allow-sha1", false, "INSECURE: accept quotes that rely on SHA-1 alone")
	fl.IntVar(&f.allowTrailing, "allow-trailing", 1, "records after the quote tolerated before the verdict is UNTRUSTED (more mean a reset or foreign PCR, or records added after the quote)")
	f.azure.verifierFlags(c)
	return c
}

// runVerify verifies; when ev is set (rimon attest) the files are not read.
func runVerify(g *globals, f verifyFlags, ev *attest.Evidence) error {
	o, err := f.options(g, ev != nil)
	if err != nil {
		return err
	}
	in, closeIn, err := f.input(g, ev)
	if err != nil {
		return err
	}
	defer closeIn()
	if in.Header.LogStart > 0 {
		o.LogPrefix = f.prefix
		if f.logPrefix != "" {
			if o.LogPrefix, err = os.ReadFile(f.logPrefix); err != nil {
				return err
			}
		}
	}
	o.State, o.SaveState = f.state, f.keepState != nil
	res, err := verifier.Verify(context.Background(), in, o)
	switch {
	case errors.Is(err, attest.ErrPriorUnusable):
		return &exitErr{code: exitError, err: fmt.Errorf("%w (delete the cache file to start over)", err)}
	case errors.Is(err, verifier.ErrNoKey):
		return usageErr("--ak is required unless the evidence carries an Azure SEV-SNP report that vouches for the AK (rimon attest also takes --ek-ca or --ak-ca to enroll the AK)")
	case errors.Is(err, verifier.ErrNoPrefix):
		return usageErr("the evidence starts at record %d: give the earlier records with --log-prefix", in.Header.LogStart)
	case err != nil:
		return g.invalid(f, err)
	}
	if f.keepState != nil && res.State != nil {
		f.keepState(res.State)
	}
	g.report(f.asJSON, res.Verdict)
	if !f.asJSON {
		g.reportContainers(f, ev, in.Header.LogStart, res.Verdict.Covered, o.Reference) // ocihook.go
	}
	if !res.Verdict.Trusted {
		by := "the evidence's own records"
		if o.Reference != nil {
			by = o.Reference.Source
		}
		return &exitErr{code: exitCheck, err: fmt.Errorf("untrusted: %d measurements are not approved by %s", res.Verdict.FailureTotal, by)}
	}
	return nil
}

// options turns the flags into the verifier's options; streamed says the
// evidence comes from an agent (rimon attest), not from files.
func (f *verifyFlags) options(g *globals, streamed bool) (verifier.Options, error) {
	var o verifier.Options
	if f.nonce == "" {
		return o, usageErr("--nonce is required: a verifier picks its nonce")
	}
	nonce, err := hex.DecodeString(f.nonce)
	if err != nil || len(nonce) == 0 {
		return o, usageErr("--nonce: not hex")
	}
	tools := f.msg != "" || f.sig != "" || f.pcrsFile != "" || f.log != ""
	if !streamed && (f.evidence == "") == !tools {
		return o, usageErr("give either --evidence, or --quote-msg, --quote-sig and --log")
	}
	if tools && (f.msg == "" || f.sig == "" || f.log == "") {
		return o, usageErr("--quote-msg, --quote-sig and --log go together")
	}
	o.Nonce, o.AllowSHA1 = nonce, f.allowSHA1
	if f.allowTrailing < 1 {
		return o, usageErr("--allow-trailing: want 1 or more (one record can trail the quote after a crash)")
	}
	o.AllowTrailing = f.allowTrailing
	if o.PCRs, err = parsePCRList(f.pcrs); err != nil {
		return o, err
	}
	if o.Banks, err = parseBanks(f.banks); err != nil {
		return o, err
	}
	if f.akKey != nil {
		o.AK = f.akKey
	}
	if f.ak != "" {
		akPEM, err := os.ReadFile(f.ak)
		if err != nil {
			return o, fmt.Errorf("--ak: %w", err)
		}
		if o.AK, err = attest.ParsePublicKey(akPEM); err != nil {
			return o, fmt.Errorf("--ak %s: %w", f.ak, err)
		}
	}
	chainOpts, err := f.azure.chainOptions(g.stderr)
	if err != nil {
		return o, err
	}
	o.AzureRoots, o.Now = chainOpts.TrustedRoots, chainOpts.Now
	if f.reference != "" {
		if o.Reference, err = loadReference(f.reference); err != nil {
			return o, err
		}
	}
	return o, nil
}

// input opens the evidence: ev with its log streaming from f.logR (rimon
// attest), the --evidence file, or tpm2-tools' files.
func (f *verifyFlags) input(g *globals, ev *attest.Evidence) (in verifier.Evidence, closeIn func(), err error) {
	closeIn = func() {}
	switch {
	case ev != nil:
		in = verifier.Evidence{Header: ev, Log: bytes.NewReader(ev.Log)}
		if f.logR != nil {
			in.Log = f.logR
		}
		return in, closeIn, nil
	case f.evidence != "":
		fh, err := os.Open(f.evidence)
		if err != nil {
			return in, closeIn, err
		}
		if in.Header, in.Log, err = attest.OpenEvidence(fh); err != nil {
			fh.Close()
			return in, closeIn, g.invalid(*f, err)
		}
		return in, func() { fh.Close() }, nil
	}
	in.Header = &attest.Evidence{}
	if in.Header.Quote.Attest, err = os.ReadFile(f.msg); err != nil {
		return in, closeIn, err
	}
	if in.Header.Quote.Signature, err = os.ReadFile(f.sig); err != nil {
		return in, closeIn, err
	}
	lf, err := os.Open(f.log)
	if err != nil {
		return in, closeIn, err
	}
	in.Log, closeIn = lf, func() { lf.Close() }
	in.NoValues = f.pcrsFile == ""
	if f.pcrsFile != "" {
		b, err := os.ReadFile(f.pcrsFile)
		if err != nil {
			closeIn()
			return in, func() {}, err
		}
		values, err := attest.ParsePCRsFile(b)
		if err != nil {
			closeIn()
			return in, func() {}, g.invalid(*f, err)
		}
		in.Header.SetValues(values)
	}
	return in, closeIn, nil
}

// invalid reports evidence that proves nothing: exit 2.
func (g *globals) invalid(f verifyFlags, err error) error {
	if f.asJSON {
		check := verifier.CheckEvidence
		var ce *verifier.CheckError
		var qe *attest.CheckError
		switch {
		case errors.As(err, &ce):
			check = ce.Check
		case errors.As(err, &qe):
			check = qe.Check
		}
		json.NewEncoder(g.stdout).Encode(map[string]any{"trusted": false, "invalid": true, "failed_check": check, "error": err.Error()})
	}
	return &exitErr{code: exitError, err: fmt.Errorf("evidence invalid: %w", err)}
}

func (g *globals) report(asJSON bool, res *attest.Result) {
	if asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
		return
	}
	verdict := "TRUSTED"
	if !res.Trusted {
		verdict = "UNTRUSTED"
	}
	fmt.Fprintf(g.stdout, "%s\n", verdict)
	for _, c := range res.Checks {
		fmt.Fprintf(g.stdout, "  ok   %-16s %s\n", c.Name, c.Detail)
	}
	keys := make([]string, 0, len(res.PCRs))
	for k := range res.PCRs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(g.stdout, "  pcr  %-16s %s\n", k, res.PCRs[k])
	}
	if res.Trailing > 0 {
		fmt.Fprintf(g.stdout, "  note %d records after the quote (from record %d on) are not covered and not trusted\n", res.Trailing, res.Covered)
	}
	if res.TrailingProblem != "" {
		fmt.Fprintf(g.stdout, "  note %s\n", res.TrailingProblem)
	}
	if res.TailProblem != "" && res.TailProblem != res.TrailingProblem {
		fmt.Fprintf(g.stdout, "  note reading stopped: %s\n", res.TailProblem)
	}
	for _, x := range res.Failures {
		fmt.Fprintf(g.stdout, "  FAIL %s\n", x)
	}
	if n := res.FailureTotal - len(res.Failures); n > 0 {
		fmt.Fprintf(g.stdout, "  FAIL ... and %d more\n", n)
	}
	for _, x := range res.Warnings {
		fmt.Fprintf(g.stdout, "  warn %s\n", x)
	}
	if n := res.WarningTotal - len(res.Warnings); n > 0 {
		fmt.Fprintf(g.stdout, "  warn ... and %d more\n", n)
	}
}

func newAttestCmd(g *globals) *cobra.Command {
	var f verifyFlags
	var agent, caFile, cache, maxSize string
	var tries int
	var ef enrollFlags
	c := &cobra.Command{
		Use:   "attest --agent URL (--ak AK.pem | --ek-ca CA | --ak-ca CA) [--ca CA.pem] [--reference REF.yaml] [--json]",
		Short: "Fetch evidence from an agent with a fresh random nonce, then verify it",
		Long: `attest picks a fresh 32-byte random nonce, fetches GET URL/v1/evidence?nonce=…
from an agent started with rimon watch --listen, and verifies it as rimon verify
does. The quote's signature and nonce are checked before any of the log is
read; the log is then verified as it streams in, and evidence larger than
--max-evidence is refused. An agent that answers 429 or 503 is asked again
(--tries in all, each time with a fresh nonce) after the Retry-After it
gives, at most 10 s. Exit codes as for verify.

Without --ak, --ek-ca or --ak-ca enrolls the agent first (docs/THREAT-MODEL.md):
the agent's EK certificate must chain to a TPM vendor CA of --ek-ca, its EK
must be the certificate's key, and its TPM must recover a fresh secret sealed
to that EK for the AK's name (credential activation); or, with --ak-ca, the AK
certificate of a cloud vTPM must chain to a root of --ak-ca. The chain of
trust is printed step by step, with the path that vouched; a refusal names the
step that failed (exit 2).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g.stdout = newTermSafe(g.stdout)
			if agent == "" {
				return usageErr("--agent is required")
			}
			maxEv, err := parseSize(maxSize)
			if err != nil || maxEv < 1<<10 || maxEv > attest.MaxEvidence {
				return usageErr("--max-evidence %q: want a size from 1KiB to 1GiB, such as 512MiB", maxSize)
			}
			if tries < 1 || tries > 10 {
				return usageErr("--tries %d: want 1 to 10", tries)
			}
			banks, err := parseBanks(f.banks)
			if err != nil {
				return err
			}
			client, err := httpClient(caFile)
			if err != nil {
				return err
			}
			if ef.set() {
				if f.ak != "" {
					return usageErr("--ak pins the AK; --ek-ca and --ak-ca enroll it: give one or the other")
				}
				res, err := enrollAgent(cmd.Context(), g, client, agent, ef, f.asJSON)
				if err != nil {
					return err
				}
				f.akKey = res.AK.Key
			}
			var since uint64
			var next *verifier.State
			if cache != "" {
				if since, err = readCache(g, cache, &f, banks); err != nil {
					return &exitErr{code: exitError, err: err}
				}
				f.keepState = func(s *verifier.State) { next = s }
			}
			s, nonce, err := fetchEvidence(cmd.Context(), g, client, agent, since, banks, maxEv, tries)
			if err != nil {
				if errors.Is(err, attest.ErrTooLarge) {
					return g.invalid(f, fmt.Errorf("%w (--max-evidence %s)", err, maxSize))
				}
				return &exitErr{code: exitError, err: err}
			}
			defer s.Close()
			f.nonce = hex.EncodeToString(nonce)
			f.logR = s.Log
			// The report is printed once the evidence is known to be within
			// the limit: reading stops at the limit, and what lies beyond it
			// was never seen.
			var out bytes.Buffer
			vg := *g
			vg.stdout = &out
			err = runVerify(&vg, f, s.Evidence)
			if s.TooLarge() {
				return g.invalid(f, fmt.Errorf("%w: more than --max-evidence %s; the agent's log may be larger, or the agent hostile", attest.ErrTooLarge, maxSize))
			}
			g.stdout.Write(out.Bytes())
			if next != nil {
				// Valid evidence (trusted or not): its trusted prefix is the
				// starting point of the next round.
				if werr := writeCache(cache, next); werr != nil {
					fmt.Fprintf(g.stderr, "rimon: warning: cache %s: %v\n", cache, werr)
				}
			}
			return err
		},
	}
	fl := c.Flags()
	fl.StringVar(&agent, "agent", "", "the agent's base URL, http(s)://HOST:PORT")
	fl.StringVar(&cache, "cache", "", "keep the verifier's replay state in this file and fetch only newer records next time, verified from it (delete the file to start over)")
	fl.StringVar(&caFile, "ca", "", "CA certificates (PEM) that sign the agent's TLS certificate (default: the system's)")
	fl.StringVar(&maxSize, "max-evidence", "512MiB", "refuse evidence larger than this (at most 1GiB)")
	fl.IntVar(&tries, "tries", 4, "requests in all when the agent answers 429 or 503 (1 to 10)")
	fl.StringVar(&f.ak, "ak", "", "the attestation key to pin, PEM (or --ek-ca/--ak-ca)")
	ef.register(c)
	fl.StringVar(&f.reference, "reference", "", "reference values (YAML)")
	fl.StringVar(&f.pcrs, "pcrs", "23", "PCRs the quote must cover")
	fl.StringArrayVar(&f.banks, "bank", []string{"sha256"}, "banks the quote must cover (repeatable)")
	fl.BoolVar(&f.asJSON, "json", false, "print the result as JSON")
	fl.BoolVar(&f.allowSHA1, "allow-sha1", false, "INSECURE: accept quotes that rely on SHA-1 alone")
	fl.IntVar(&f.allowTrailing, "allow-trailing", 1, "records after the quote tolerated before the verdict is UNTRUSTED (more mean a reset or foreign PCR, or records added after the quote)")
	return c
}

// maxRetryWait caps the wait an agent's Retry-After asks for.
const maxRetryWait = 10 * time.Second

// retrySleep waits before asking again; tests replace it.
var retrySleep = func(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetchEvidence asks the agent for evidence with a fresh nonce and reads its
// header. On 429 or 503 it asks again with a new nonce, up to tries requests
// in all, after the agent's Retry-After (at most maxRetryWait) or a backoff
// from one second. It returns the nonce of the request that was answered.
func fetchEvidence(ctx context.Context, g *globals, client *http.Client, agent string, since uint64, banks []crypto.Hash, maxSize int64, tries int) (*attest.Stream, []byte, error) {
	backoff := time.Second
	for try := 1; ; try++ {
		nonce := make([]byte, 32)
		if _, err := rand.Read(nonce); err != nil {
			return nil, nil, err
		}
		s, err := attest.OpenFetch(ctx, client, strings.TrimSuffix(agent, "/"), nonce,
			attest.FetchOptions{Since: since, Banks: banks, MaxSize: maxSize})
		if err == nil {
			return s, nonce, nil
		}
		var fe *attest.FetchError
		if !errors.As(err, &fe) || !fe.Temporary() || try >= tries {
			if fe != nil && fe.Temporary() {
				err = fmt.Errorf("%w (after %d tries)", err, try)
			}
			return nil, nil, err
		}
		wait := backoff
		if fe.RetryAfter > 0 {
			wait = fe.RetryAfter
		}
		wait = min(wait, maxRetryWait)
		backoff *= 2
		fmt.Fprintf(g.stderr, "rimon: the agent answered %s; asking again in %v (try %d of %d)\n", fe.Status, wait, try+1, tries)
		if err := retrySleep(ctx, wait); err != nil {
			return nil, nil, err
		}
	}
}

// parseSize reads a byte count: 1048576, 512KiB, 512MiB, 1GiB (K, M, G too).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	num := s
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q", s)
	}
	return n * mult, nil
}

// readCache reads rimon attest's cache: the verifier state saved after the
// last valid round (the record count to ask from, the PCR values, the
// accepted prefix's digest and the reference checks after it). A cache
// written by an older rimon holds the log itself: its records are then
// sent with the evidence's and replayed whole, once. A state saved with
// other banks or another reference is not continued: the whole log is
// asked for and must begin with the records the state accepted. It returns
// the record to ask from.
func readCache(g *globals, path string, f *verifyFlags, banks []crypto.Hash) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(b) == 0 || b[0] == 0x1e {
		// A log (empty when the agent's was).
		f.prefix = b
		return uint64(bytes.Count(b, []byte{'\n'})), nil
	}
	st, err := verifier.ParseState(b)
	if err != nil {
		return 0, fmt.Errorf("cache %s: %w; delete the file to start over (the next round verifies the whole log)", path, err)
	}
	f.state = st
	if len(banks) == 0 {
		banks = []crypto.Hash{crypto.SHA256}
	}
	if !slices.Equal(st.Log.Banks(), banks) {
		fmt.Fprintf(g.stderr, "rimon: cache %s was saved for other banks: verifying the whole log\n", path)
		f.state = nil
		return 0, nil
	}
	var ref *policy.Reference
	if f.reference != "" {
		if ref, err = loadReference(f.reference); err != nil {
			return 0, err
		}
	}
	if attest.ReferenceFingerprint(ref) != st.Ref.Reference {
		fmt.Fprintf(g.stderr, "rimon: cache %s was saved with another reference: verifying the whole log from the agent\n", path)
		return 0, nil
	}
	return st.Records(), nil
}

// writeCache saves the state for the next round: written beside the
// cache, synced, then renamed into place.
func writeCache(path string, st *verifier.State) error {
	b, err := st.MarshalJSON()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// httpClient trusts the CA certificates in caFile, or the system's.
func httpClient(caFile string) (*http.Client, error) {
	c := &http.Client{Timeout: 60 * time.Second}
	if caFile == "" {
		return c, nil
	}
	pemb, err := os.ReadFile(caFile)
	if err != nil {
		return nil, usageErr("--ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemb) {
		return nil, usageErr("--ca %s: no PEM certificate", caFile)
	}
	c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return c, nil
}

// loadReference reads a reference file: a file that is missing or
// malformed is bad input (exit 2), not a usage error.
func loadReference(path string) (*policy.Reference, error) {
	return policy.LoadReference(path)
}
