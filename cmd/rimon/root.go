package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/rimon-dev/rimon/policy"
	"github.com/rimon-dev/rimon/tpm"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// globals are the flags every command shares.
type globals struct {
	tpm    string
	log    string
	stdout io.Writer
	stderr io.Writer
}

// usageError marks an error about the command line itself: cobra's flag
// parsing errors (through the flag error function), wrong positional
// arguments, unknown commands and missing required flags (through
// [markUsage]). Errors are classified by where they come from, never by
// their text: "invalid argument" is also the text of EINVAL.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

// markUsage makes every command's argument check return a [usageError],
// checks required flags itself (so that their error is one too), and makes
// every command that only groups others refuse an unknown subcommand
// instead of printing help and succeeding.
func markUsage(c *cobra.Command) {
	for _, sub := range c.Commands() {
		markUsage(sub)
	}
	if !c.Runnable() {
		if !c.HasSubCommands() {
			return
		}
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, args []string) error { return cmd.Help() }
		// Runnable only to refuse unknown subcommands: its usage shows
		// "CMD [command]" alone, as for any command group.
		// (The template is inherited, so commands without subcommands keep
		// their usage line.)
		c.SetUsageTemplate(strings.Replace(c.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable (not .HasAvailableSubCommands)}}", 1))
		return
	}
	check := c.Args
	if check == nil {
		check = cobra.ArbitraryArgs
	}
	c.Args = func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		var missing []string
		cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if req := f.Annotations[cobra.BashCompOneRequiredFlag]; len(req) > 0 && req[0] == "true" && !f.Changed {
				missing = append(missing, strconv.Quote(f.Name))
			}
		})
		if len(missing) > 0 {
			return usageError{fmt.Errorf("required flag(s) %s not set", strings.Join(missing, ", "))}
		}
		return nil
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "rimon",
		Short: "Runtime integrity monitor: measure files into a TPM PCR with a replayable log",
		Long: `rimon measures files, directory trees and images with SHA-256, appends a record
of each measurement to its log, and extends a TPM PCR (23 by default) in every
active bank, so that the PCR and the log vouch for each other.

The TPM is chosen with --tpm or $RIMON_TPM: a device path (default /dev/tpmrm0),
tcp:HOST:PORT or unix:PATH for swtpm, or sim for the in-process simulator.

Exit codes: 0 success, 1 a check failed, 2 error, 3 usage error.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.tpm, "tpm", envOr(tpm.EnvVar, tpm.DefaultDevice), "TPM: device path, tcp:HOST:PORT, unix:PATH or sim ($"+tpm.EnvVar+")")
	pf.StringVar(&g.log, "log", envOr("RIMON_LOG", policy.DefaultLog), "measurement log ($RIMON_LOG)")
	root.AddCommand(newMeasureCmd(g), newWatchCmd(g), newPolicyCmd(g), newLogCmd(g), newPCRCmd(g), newProvisionCmd(g), newAKCmd(g), newQuoteCmd(g), newVerifyCmd(g), newAttestCmd(g), newReferenceCmd(g), newAzureCmd(g), newEnrollCmd(g), newOCIHookCmd(g), newVerifierCmd(g), newFleetCmd(g), newManCmd(g))
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	if help, _, err := root.Find([]string{"help"}); err == nil && help != root {
		help.Args = func(cmd *cobra.Command, args []string) error {
			if c, rest, _ := root.Find(args); len(rest) > 0 && c.HasSubCommands() {
				return fmt.Errorf("unknown help topic %q", strings.Join(args, " "))
			}
			return nil
		}
	}
	markUsage(root)
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// openTPM opens the TPM and returns its active banks for pcr.
func (g *globals) openTPM(ctx context.Context, pcr int) (*tpm.TPM, []crypto.Hash, error) {
	t, err := tpm.Open(ctx, g.tpm)
	if err != nil {
		return nil, nil, err
	}
	b, err := t.ActiveBanks(ctx, pcr)
	if err != nil {
		t.Close()
		return nil, nil, err
	}
	for _, u := range b.Unsupported {
		fmt.Fprintf(g.stderr, "rimon: warning: PCR %d is also allocated in bank %v, which rimon cannot extend; it stays at its reset value\n", pcr, u)
	}
	return t, b.Active, nil
}

func checkPCR(pcr int) error {
	if pcr < 0 || pcr > 23 {
		return usageErr("--pcr %d: want a PCR index from 0 to 23", pcr)
	}
	return nil
}

// checkExtendPCR refuses a PCR that rimon could not extend: out of range, or
// reserved to other localities (TPM_RC_LOCALITY), before anything is
// measured or written.
func checkExtendPCR(pcr int) error {
	if err := checkPCR(pcr); err != nil {
		return err
	}
	if err := tpm.CheckExtendable(pcr); err != nil {
		return usageErr("--pcr %d: %v", pcr, err)
	}
	return nil
}
