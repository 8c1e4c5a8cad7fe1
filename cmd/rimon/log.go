package main

import (
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/spf13/cobra"
)

func newLogCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "log", Short: "Show, replay and check the measurement log"}
	c.AddCommand(newLogShowCmd(g), newLogReplayCmd(g), newLogCheckCmd(g))
	return c
}

// snapshot reads the log, refusing a missing one, and warns about a torn tail.
func (g *globals) snapshot(cmd *cobra.Command) ([]eventlog.Record, error) {
	if _, err := os.Stat(g.log); err != nil {
		return nil, fmt.Errorf("log %s: %w", g.log, unwrapPath(err))
	}
	recs, torn, err := logfile.Snapshot(cmd.Context(), g.log)
	if err != nil {
		return nil, err
	}
	if torn > 0 {
		fmt.Fprintf(g.stderr, "rimon: warning: %s ends in an incomplete record (%d bytes, never extended); the next measurement moves it aside\n", g.log, torn)
	}
	return recs, nil
}

type jsonDigest struct {
	HashAlg string `json:"hashAlg"`
	Digest  string `json:"digest"`
}

type jsonRecord struct {
	RecNum      *uint64         `json:"recnum,omitempty"`
	PCR         int             `json:"pcr"`
	Digests     []jsonDigest    `json:"digests"`
	ContentType string          `json:"content_type"`
	Content     json.RawMessage `json:"content"`
	// Verified says whether the digests were recomputed from the content
	// and agree with it.
	Verified bool `json:"verified"`
	// Recomputable is false for a record whose digests cannot be recomputed
	// (a systemd volume-key record, an unknown content type): its digests
	// are taken as extended, its content is not vouched for.
	Recomputable bool   `json:"recomputable"`
	Problem      string `json:"problem,omitempty"`
}

// recordProblem says what is wrong with the record at position i of its
// log; notRecomputable marks a record whose digests cannot be checked.
func recordProblem(i int, r *eventlog.Record) (problem string, notRecomputable bool) {
	if err := eventlog.CheckRecNum(r, i); err != nil {
		return err.Error(), false
	}
	err := eventlog.Verify(r)
	if errors.Is(err, eventlog.ErrNotRecomputable) {
		return "", true
	}
	if err != nil {
		return err.Error(), false
	}
	return "", false
}

func newLogShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show [--json]",
		Short: "List the log's records",
		Long: `show lists every record: number, PCR, kind, reason, time, SHA-256 and path.
A record whose digests are not the hash of its content, or whose number is not
its position in the log, is marked EDITED. A record whose digests cannot be
recomputed (a systemd volume-key record is an HMAC with the disk's key; an
unknown content type) is shown as an extended digest, not recomputable.
It reads rimon's logs and systemd's /run/log/systemd/tpm2-measure.log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g.stdout = newTermSafe(g.stdout)
			recs, err := g.snapshot(cmd)
			if err != nil {
				return err
			}
			if asJSON {
				out := make([]jsonRecord, 0, len(recs))
				for i := range recs {
					r := &recs[i]
					jr := jsonRecord{PCR: r.PCR, ContentType: r.ContentType, Content: r.ContentJSON()}
					if r.HasRecNum {
						jr.RecNum = &r.RecNum
					}
					for _, d := range r.Digests {
						jr.Digests = append(jr.Digests, jsonDigest{eventlog.BankName(d.Alg), hex.EncodeToString(d.Value)})
					}
					problem, notRecomputable := recordProblem(i, r)
					jr.Recomputable, jr.Problem = !notRecomputable, problem
					jr.Verified = problem == "" && !notRecomputable
					out = append(out, jr)
				}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			for i := range recs {
				fmt.Fprintln(g.stdout, showLine(i, &recs[i]))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON for machines")
	return c
}

func showLine(i int, r *eventlog.Record) string {
	num := fmt.Sprintf("#%d", i)
	if r.HasRecNum {
		num = fmt.Sprintf("%d", r.RecNum)
	}
	mark := ""
	switch problem, notRecomputable := recordProblem(i, r); {
	case notRecomputable:
		mark = "  (extended digest, not recomputable: content not vouched for)"
	case problem != "":
		mark = "  EDITED: " + problem
	}
	if r.ContentType == eventlog.ContentTypeRimon {
		e := r.Event()
		sum := e.SHA256
		if sum == "" {
			sum = "-"
		}
		path := strconv.Quote(e.Path)
		if esc := r.Content.Str("path_escaped"); e.Path == "" && esc != "" {
			path = "escaped:" + strconv.Quote(esc) // a name that is not UTF-8, percent-escaped
		}
		if cause := r.Content.Str("cause"); e.Kind == eventlog.KindUnmeasured && cause != "" {
			sum = "-(" + cause + ")"
		}
		return fmt.Sprintf("%s pcr%d %s %s %s %s %s%s", num, r.PCR, e.Kind, e.Reason, e.Time, sum, path, mark)
	}
	return fmt.Sprintf("%s pcr%d %s %s%s", num, r.PCR, r.ContentType, strings.TrimSpace(string(r.ContentJSON())), mark)
}

func newLogReplayCmd(g *globals) *cobra.Command {
	var pcr int
	var bank string
	c := &cobra.Command{
		Use:   "replay [--pcr 23] [--bank sha256]",
		Short: "Print the PCR value the log replays to, as lowercase hex",
		Long: `replay verifies every record (its digests must be the hash of its content)
and replays the log, printing the value the PCR must have. It needs no TPM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPCR(pcr); err != nil {
				return err
			}
			h, err := parseBank(bank)
			if err != nil {
				return err
			}
			st, _, torn, err := logfile.ReplayFile(cmd.Context(), g.log, []crypto.Hash{h})
			if err != nil {
				return err
			}
			if torn > 0 {
				fmt.Fprintf(g.stderr, "rimon: warning: %s ends in an incomplete record (%d bytes, never extended); the next measurement moves it aside\n", g.log, torn)
			}
			fmt.Fprintln(g.stdout, hex.EncodeToString(st.Value(pcr, h)))
			return nil
		},
	}
	c.Flags().IntVar(&pcr, "pcr", 23, "PCR to replay")
	c.Flags().StringVar(&bank, "bank", "sha256", "PCR bank: sha1, sha256, sha384 or sha512")
	return c
}

func newLogCheckCmd(g *globals) *cobra.Command {
	var pcr int
	var repair bool
	c := &cobra.Command{
		Use:   "check [--repair]",
		Short: "Compare the log's replay with the TPM's PCRs",
		Long: `check replays the log and compares it with the TPM in every active bank.
It exits 0 when they agree and 1, with the PCR, bank and both values, when they
do not. Records written but never extended (a crash between the two) are
reported; --repair extends them, as every measuring command does on start.
With --tpm sim (the in-process simulator, empty in every process) it extends
every record into the simulator and checks that it then agrees with the
replay, in every bank and every PCR the log names.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkPCR(pcr); err != nil {
				return err
			}
			if _, err := os.Stat(g.log); err != nil {
				// A log that is not there is a wrong path, not a log that
				// disagrees with the TPM.
				return fmt.Errorf("log %s: %w", g.log, unwrapPath(err))
			}
			ctx := cmd.Context()
			t, banks, err := g.openTPM(ctx, pcr)
			if err != nil {
				return err
			}
			defer t.Close()
			if t.Ephemeral() && !repair {
				return g.checkOnSimulator(cmd, t, banks, pcr)
			}
			if repair {
				w, err := g.openWriter(ctx, t, banks, pcr)
				if err != nil {
					return asCheckFailure(err)
				}
				defer w.Close()
				return g.printAgreement(w.Records(), w.State(), banks, pcr)
			}
			boot, err := logfile.CurrentBootID()
			if err != nil {
				return err
			}
			res, err := logfile.Check(ctx, g.log, t, banks, pcr, boot)
			if err != nil {
				return asCheckFailure(err)
			}
			if res.TornBytes > 0 {
				fmt.Fprintf(g.stderr, "rimon: warning: %s ends in an incomplete record (%d bytes, never extended); the next measurement moves it aside\n", g.log, res.TornBytes)
			}
			if len(res.Pending) > 0 {
				hint := "rimon log check --repair extends them"
				if res.Pending[0] == 0 {
					hint += " (the PCR is at its reset value: if rimon did not crash on its first record, the PCR was reset instead)"
				}
				return checkErr(fmt.Errorf("log %s: record(s) %v were written but not extended into the TPM: %s", g.log, res.Pending, hint))
			}
			return g.printAgreement(res.Records, res.State, banks, pcr)
		},
	}
	c.Flags().IntVar(&pcr, "pcr", 23, "PCR rimon extends (compared even when no record names it)")
	c.Flags().BoolVar(&repair, "repair", false, "extend records that were written but never extended")
	return c
}

// checkOnSimulator checks a log against the in-process simulator, which
// starts empty in every process: it extends every record into it and
// checks that the simulator then agrees with the replay of the log. It
// changes nothing on disk.
func (g *globals) checkOnSimulator(cmd *cobra.Command, t logfile.PCRs, banks []crypto.Hash, pcr int) error {
	recs, err := g.snapshot(cmd)
	if err != nil {
		return err
	}
	res, err := logfile.Reconcile(cmd.Context(), recs, t, logfile.ReconcileOptions{Banks: banks, PCRs: []int{pcr}, Rebuild: true})
	if err != nil {
		return asCheckFailure(fmt.Errorf("log %s: %w", g.log, err))
	}
	fmt.Fprintf(g.stderr, "rimon: the simulator starts empty: extended the %d records of %s into it\n", len(res.Repaired), g.log)
	return g.printAgreement(res.Records, res.State, banks, pcr)
}

// asCheckFailure turns a disagreement between log and TPM into exit code 1.
func asCheckFailure(err error) error {
	var div *logfile.DivergenceError
	var rep *eventlog.ReplayError
	if errors.As(err, &div) || errors.As(err, &rep) || errors.Is(err, logfile.ErrOtherBoot) {
		return checkErr(err)
	}
	return err
}

func (g *globals) printAgreement(n int, st *eventlog.State, banks []crypto.Hash, pcr int) error {
	fmt.Fprintf(g.stdout, "ok: log %s agrees with TPM %s (%d records)\n", g.log, g.tpm, n)
	pcrs := st.PCRs()
	if len(pcrs) == 0 {
		pcrs = []int{pcr}
	}
	for _, p := range pcrs {
		for _, b := range banks {
			fmt.Fprintf(g.stdout, "pcr%d %s %s\n", p, eventlog.BankName(b), hex.EncodeToString(st.Value(p, b)))
		}
	}
	return nil
}
