package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/go-sev-guest/verify/trust"
	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/attest/azure"
	"github.com/rimon-dev/rimon/attest/verifier"
	"github.com/rimon-dev/rimon/tpm"
	"github.com/spf13/cobra"
)

// azureFlags select where the Azure hardware evidence comes from (attester)
// and what it is checked against (verifier).
type azureFlags struct {
	mode      string // auto, on, off
	vcek      string // file; empty: IMDS
	imds      string
	testRoots []string // INSECURE: test ASK/ARK bundles to trust, one product line each
	at        string   // RFC 3339 time for certificate validity
}

func (a *azureFlags) attesterFlags(c *cobra.Command) {
	c.Flags().StringVar(&a.mode, "azure", "auto", "include Azure SEV-SNP evidence: auto (when NV 0x01400001 exists), on, off")
	c.Flags().StringVar(&a.vcek, "vcek", "", "Azure: the VCEK (PEM or DER) instead of fetching it from the instance metadata service")
	c.Flags().StringVar(&a.imds, "imds-url", azure.IMDSURL, "Azure: the instance metadata service's VCEK endpoint")
	c.Flags().MarkHidden("imds-url")
}

func (a *azureFlags) verifierFlags(c *cobra.Command) {
	c.Flags().StringArrayVar(&a.testRoots, "insecure-trust-test-roots", nil, "INSECURE, for tests only: trust this ASK+ARK bundle (PEM) of one product line instead of AMD's roots (repeat for several lines)")
	c.Flags().StringVar(&a.at, "at", "", "check certificate validity at this time (RFC 3339) instead of now")
}

// hardware reads the HCL report and the VCEK, or returns nil when the
// TPM has no HCL report and the mode is auto.
func (a *azureFlags) hardware(ctx context.Context, t *tpm.TPM) (*attest.AzureBlob, error) {
	switch a.mode {
	case "off":
		return nil, nil
	case "", "auto", "on":
	default:
		return nil, usageErr("--azure %q: want auto, on or off", a.mode)
	}
	report, err := t.ReadNV(ctx, azure.NVIndex)
	if errors.Is(err, tpm.ErrNoNV) && a.mode != "on" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("azure: read the HCL report: %w", err)
	}
	var vcek []byte
	if a.vcek != "" {
		vcek, err = os.ReadFile(a.vcek)
	} else {
		url := a.imds
		if url == "" {
			url = azure.IMDSURL
		}
		vcek, err = azure.FetchVCEK(ctx, url)
	}
	if err != nil {
		return nil, fmt.Errorf("azure: %w", err)
	}
	return &attest.AzureBlob{HCLReport: report, VCEK: vcek}, nil
}

// chainOptions builds the verification options: AMD's roots unless
// insecure test roots are named, one ASK+ARK bundle per product line.
func (a *azureFlags) chainOptions(stderr interface{ Write([]byte) (int, error) }) (azure.Options, error) {
	var o azure.Options
	if a.at != "" {
		t, err := time.Parse(time.RFC3339, a.at)
		if err != nil {
			return o, usageErr("--at %q: want RFC 3339, such as 2025-06-01T00:00:00Z", a.at)
		}
		o.Now = t
	}
	for _, f := range a.testRoots {
		b, err := os.ReadFile(f)
		if err != nil {
			return o, usageErr("--insecure-trust-test-roots: %v", err)
		}
		line, root, err := verifier.TestRoots(b)
		if err != nil {
			return o, usageErr("--insecure-trust-test-roots %s: %v", f, err)
		}
		if o.TrustedRoots == nil {
			o.TrustedRoots = map[string][]*trust.AMDRootCerts{}
		}
		o.TrustedRoots[line] = append(o.TrustedRoots[line], root)
		fmt.Fprintf(stderr, "rimon: WARNING: trusting test roots for %s from %s instead of AMD's: this verdict proves nothing about real hardware\n", line, f)
	}
	return o, nil
}

func newAzureCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "azure", Short: "Azure confidential VMs: the SEV-SNP report behind the vTPM's AK"}
	var asJSON bool
	report := &cobra.Command{
		Use:   "report [--json]",
		Short: "Print the HCL report in vTPM NV 0x01400001: runtime claims and SNP report fields",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := tpm.Open(cmd.Context(), g.tpm)
			if err != nil {
				return err
			}
			defer t.Close()
			b, err := t.ReadNV(cmd.Context(), azure.NVIndex)
			if err != nil {
				return err
			}
			r, err := azure.Parse(b)
			if err != nil {
				return err
			}
			return g.printReport(r, asJSON)
		},
	}
	report.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	var af azureFlags
	var reportFile, vcekFile, msg, sig, nonceHex string
	ver := &cobra.Command{
		Use:   "verify --report HCL.bin --vcek VCEK.pem [--quote-msg F --quote-sig F --nonce HEX] [--at TIME]",
		Short: "Verify an HCL report on its own, and a quote signed by its AK",
		Long: `verify checks an HCL report (from any tool) offline: the VCEK against AMD's
roots for the chip's product line (Milan, Genoa or Turin, from the report's
CPUID, else from the VCEK's product name), the SNP report's signature, its fields (no
debug, no migration agent, VMPL 0), and the binding of the runtime claims into
REPORT_DATA. With --quote-msg, --quote-sig and --nonce it also checks that the
quote is signed by the report's HCLAkPub. Exit codes: 0 verified, 2 invalid,
3 usage error.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if reportFile == "" || vcekFile == "" {
				return usageErr("--report and --vcek are required")
			}
			if (msg == "") != (sig == "") || (msg != "" && nonceHex == "") {
				return usageErr("--quote-msg, --quote-sig and --nonce go together")
			}
			rb, err := os.ReadFile(reportFile)
			if err != nil {
				return err
			}
			vb, err := os.ReadFile(vcekFile)
			if err != nil {
				return err
			}
			o, err := af.chainOptions(g.stderr)
			if err != nil {
				return err
			}
			chain, err := verifier.VerifyAzure(&attest.AzureBlob{HCLReport: rb, VCEK: vb}, o)
			if err != nil {
				return &exitErr{code: exitError, err: err}
			}
			for _, s := range chain.Steps {
				fmt.Fprintf(g.stdout, "  ok   %s\n", s)
			}
			if msg != "" {
				nonce, err := hex.DecodeString(nonceHex)
				if err != nil {
					return usageErr("--nonce: not hex")
				}
				m, err := os.ReadFile(msg)
				if err != nil {
					return err
				}
				s, err := os.ReadFile(sig)
				if err != nil {
					return err
				}
				q, err := attest.VerifyQuote(m, s, nil, attest.QuoteOptions{AK: chain.AK, Nonce: nonce, AnySelection: true})
				if err != nil {
					return &exitErr{code: exitError, err: fmt.Errorf("quote: %w", err)}
				}
				fmt.Fprintf(g.stdout, "  ok   quote: signed by HCLAkPub, nonce matches, covers %d PCRs\n", len(q.Selection))
			}
			fmt.Fprintln(g.stdout, "VERIFIED")
			return nil
		},
	}
	af.verifierFlags(ver)
	ver.Flags().StringVar(&reportFile, "report", "", "HCL report (contents of NV 0x01400001)")
	ver.Flags().StringVar(&vcekFile, "vcek", "", "VCEK certificate, PEM or DER")
	ver.Flags().StringVar(&msg, "quote-msg", "", "TPMS_ATTEST of a quote by the AK")
	ver.Flags().StringVar(&sig, "quote-sig", "", "its signature")
	ver.Flags().StringVar(&nonceHex, "nonce", "", "the quote's nonce, hex")
	c.AddCommand(report, ver)
	return c
}

func (g *globals) printReport(r *azure.Report, asJSON bool) error {
	info, err := azure.Describe(r)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	fmt.Fprintf(g.stdout, "HCL report version %d, SNP report version %d\n", r.Version, info.SNPVersion)
	if info.CPUID != "" {
		fmt.Fprintf(g.stdout, "CPUID           %s\n", info.CPUID)
	}
	fmt.Fprintf(g.stdout, "vmUniqueId      %s\nsecure-boot     %v\ntpm-enabled     %v\nconsole-enabled %v\n",
		r.VMConfig.VMUniqueID, r.VMConfig.SecureBoot, r.VMConfig.TPMEnabled, r.VMConfig.ConsoleEnabled)
	for _, k := range r.Keys {
		fmt.Fprintf(g.stdout, "key             %s (%s, %v)\n", k.Kid, k.Kty, k.KeyOps)
	}
	fmt.Fprintf(g.stdout, "policy          0x%x\nVMPL            %d\nTCB             %s\nchip ID         %s\nmeasurement     %s\nreport data     %s\n",
		info.Policy, info.VMPL, info.TCB, info.ChipID, info.Measurement, info.ReportData)
	return nil
}
