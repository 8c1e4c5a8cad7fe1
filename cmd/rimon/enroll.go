package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/rimon-dev/rimon/attest"
	attestagent "github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/enroll"
	"github.com/rimon-dev/rimon/tpm"
	"github.com/spf13/cobra"
)

func newEnrollCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "enroll",
		Short: "Credential activation by hand: make a credential for an AK under an EK, or activate one",
		Long: `enroll holds the two halves of TPM credential activation (TPM2_MakeCredential
and TPM2_ActivateCredential), in tpm2-tools' credential file format, for
people with their own tooling. rimon attest --ek-ca runs both over the
network by itself.

  rimon enroll make-credential --ek EK.pem --ak-name HEX --secret FILE --out CRED
      (the verifier's side; tpm2_activatecredential -i CRED recovers the secret)
  rimon enroll activate --credential CRED --out FILE
      (the machine's side, from tpm2_makecredential -o CRED or make-credential)
  rimon enroll identity
      (what rimon watch --listen serves at GET /v1/identity)`,
	}
	c.AddCommand(newMakeCredentialCmd(g), newActivateCmd(g), newIdentityCmd(g))
	return c
}

func newMakeCredentialCmd(g *globals) *cobra.Command {
	var ekFile, akName, secretFile, out string
	c := &cobra.Command{
		Use:   "make-credential --ek EK(.pem|.crt) --ak-name HEX --secret FILE --out FILE",
		Short: "Seal a secret to a TPM's EK for the AK of that name (tpm2-tools' credential format)",
		Long: `make-credential runs TPM2_MakeCredential in software: only the TPM that holds the
EK, with a key of the given name loaded, can recover the secret (RSA EKs wrap
the seed with RSA-OAEP and the label IDENTITY, ECC EKs with ECDH). --ek is the
EK's public key (PEM) or certificate (PEM or DER); the EK's name algorithm and
symmetric parameters are those of the TCG default template for its key (RSA
2048 and ECC P-256: SHA-256 and AES-128; ECC P-384 and RSA 3072: SHA-384 and
AES-256), as tpm2_makecredential -G assumes. --ak-name is the AK's name
(tpm2_readpublic prints it; 000b... for a SHA-256 name). The secret is 1 to 64
bytes. The output is tpm2-tools' credential file:
  tpm2_activatecredential -c AK -C EK -i FILE -o SECRET -P session:...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ekFile == "" || akName == "" || secretFile == "" || out == "" {
				return usageErr("--ek, --ak-name, --secret and --out are required")
			}
			name, err := hex.DecodeString(strings.TrimPrefix(akName, "0x"))
			if err != nil || len(name) < 3 {
				return usageErr("--ak-name %q: want the AK's name in hex (000b followed by a SHA-256 digest)", akName)
			}
			key, err := readEKKey(ekFile)
			if err != nil {
				return err
			}
			secret, err := os.ReadFile(secretFile)
			if err != nil {
				return err
			}
			if len(secret) == 0 || len(secret) > 64 {
				return usageErr("--secret %s: %d bytes (want 1 to 64)", secretFile, len(secret))
			}
			pub, err := enroll.DefaultEKPublic(key)
			if err != nil {
				return fmt.Errorf("--ek %s: %w", ekFile, err)
			}
			id, enc, err := enroll.MakeCredential(rand.Reader, pub, name, secret)
			if err != nil {
				return err
			}
			b, err := enroll.MarshalCredentialFile(id, enc)
			if err != nil {
				return err
			}
			return os.WriteFile(out, b, 0o600)
		},
	}
	fl := c.Flags()
	fl.StringVar(&ekFile, "ek", "", "the EK: public key (PEM) or certificate (PEM or DER)")
	fl.StringVar(&akName, "ak-name", "", "the AK's TPM name, hex")
	fl.StringVar(&secretFile, "secret", "", "file holding the secret (1 to 64 bytes)")
	fl.StringVar(&out, "out", "", "credential file to write (tpm2-tools format)")
	return c
}

// readEKKey reads an EK public key from a PEM key, or a PEM or DER
// certificate (an EK certificate's quirks allowed).
func readEKKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if strings.Contains(string(b), "PUBLIC KEY-----") {
		k, err := attest.ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("--ek %s: %w", path, err)
		}
		return k, nil
	}
	certs, err := enroll.ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("--ek %s: neither a PEM public key nor a certificate: %w", path, err)
	}
	return certs[0].PublicKey, nil
}

func newActivateCmd(g *globals) *cobra.Command {
	var credFile, out, ekIndex string
	c := &cobra.Command{
		Use:   "activate --credential FILE --out FILE [--ek-index 0x01C00002]",
		Short: "Recover a credential's secret with this TPM's EK and the AK at 0x81000003",
		Long: `activate runs TPM2_ActivateCredential: the EK (the one whose certificate is at
--ek-index, default the RSA 2048 EK's 0x01C00002; the key persisted for it, or
made again from the TCG template) decrypts the seed, and the secret is released
only if the credential was made for the name of the AK at 0x81000003. --credential
is tpm2-tools' credential file (tpm2_makecredential -o, or rimon enroll
make-credential). The secret is written to --out.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if credFile == "" || out == "" {
				return usageErr("--credential and --out are required")
			}
			idx, err := strconv.ParseUint(ekIndex, 0, 32)
			if err != nil {
				return usageErr("--ek-index %q: want an NV index such as 0x01C00002", ekIndex)
			}
			slot, ok := tpm.EKSlotFor(uint32(idx))
			if !ok {
				return usageErr("--ek-index 0x%08X: not an EK certificate index rimon knows (0x01C00002, 0x01C0000A, 0x01C00012-0x01C0001E)", idx)
			}
			b, err := os.ReadFile(credFile)
			if err != nil {
				return err
			}
			id, enc, err := enroll.ParseCredentialFile(b)
			if err != nil {
				return fmt.Errorf("--credential %s: %w", credFile, err)
			}
			ctx := cmd.Context()
			t, err := tpm.Open(ctx, g.tpm)
			if err != nil {
				return err
			}
			defer t.Close()
			handle, err := ekHandle(ctx, t, slot)
			if err != nil {
				return err
			}
			secret, err := t.ActivateCredential(ctx, slot, handle, id, enc)
			if err != nil {
				return checkErr(fmt.Errorf("%w (was the credential made for this TPM's EK and the name of its AK at 0x81000003?)", err))
			}
			return os.WriteFile(out, secret, 0o600)
		},
	}
	fl := c.Flags()
	fl.StringVar(&credFile, "credential", "", "tpm2-tools credential file")
	fl.StringVar(&out, "out", "", "file to write the secret to")
	fl.StringVar(&ekIndex, "ek-index", "0x01C00002", "NV index of the EK certificate whose EK to use")
	return c
}

// ekHandle returns the persistent handle of slot's EK when the key there
// is made from its template, or 0 (make it again with CreatePrimary).
func ekHandle(ctx context.Context, t *tpm.TPM, s tpm.EKSlot) (tpm2.TPMHandle, error) {
	eks, err := t.ReadEKs(ctx)
	if err != nil && !errors.Is(err, tpm.ErrNoEK) {
		return 0, err
	}
	for _, ek := range eks {
		if ek.Slot.CertIndex == s.CertIndex {
			return ek.Handle, nil
		}
	}
	return 0, nil
}

func newIdentityCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "identity",
		Short: "Print this TPM's identity document: EK certificates and keys, AK, AK certificates (JSON)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := tpm.Open(cmd.Context(), g.tpm)
			if err != nil {
				return err
			}
			defer t.Close()
			id, err := attestagent.Identity(cmd.Context(), t)
			if err != nil {
				return err
			}
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(id)
		},
	}
}

// enrollFlags are rimon attest's flags for an agent without a pinned AK.
type enrollFlags struct {
	ekCA, akCA []string
}

func (e *enrollFlags) set() bool { return len(e.ekCA) > 0 || len(e.akCA) > 0 }

func (e *enrollFlags) register(c *cobra.Command) {
	c.Flags().StringArrayVar(&e.ekCA, "ek-ca", nil, "instead of --ak: TPM vendor CA certificates (PEM/DER file or a directory such as Keylime's tpm_cert_store; repeatable) that vouch for the agent's EK, and through credential activation for its AK")
	c.Flags().StringArrayVar(&e.akCA, "ak-ca", nil, "instead of --ak: cloud roots (GCE, Azure Trusted Launch) that vouch for the AK certificate the agent's vTPM carries (repeatable)")
}

// enrollAgent fetches the agent's identity and enrolls its AK. It prints
// the chain of trust (to stdout, or to stderr with --json).
func enrollAgent(ctx context.Context, g *globals, client *http.Client, agent string, e enrollFlags, asJSON bool) (*enroll.Result, error) {
	var o enroll.Options
	var err error
	if len(e.ekCA) > 0 {
		if o.EKCAs, err = enroll.LoadCAPool(e.ekCA...); err != nil {
			return nil, usageErr("--ek-ca: %v", err)
		}
	}
	if len(e.akCA) > 0 {
		if o.AKCAs, err = enroll.LoadCAPool(e.akCA...); err != nil {
			return nil, usageErr("--ak-ca: %v", err)
		}
	}
	id, err := attestagent.FetchIdentity(ctx, client, agent)
	if err != nil {
		return nil, &exitErr{code: exitError, err: err}
	}
	res, err := enroll.Enroll(ctx, id, o, attestagent.HTTPActivator(client, agent))
	if err != nil {
		return nil, &exitErr{code: exitError, err: fmt.Errorf("enrollment refused: %w", err)}
	}
	var w io.Writer = g.stdout
	prefix := ""
	if asJSON {
		w, prefix = g.stderr, "rimon: "
	}
	chain := "vendor CA → EK certificate → EK → credential activation → AK"
	if res.Path == enroll.PathAKCert {
		chain = "cloud CA → AK certificate → AK"
	}
	fmt.Fprintf(w, "%sENROLLED via %s: %s → quote → PCRs → files\n", prefix, res.Path, chain)
	for i, s := range res.Steps {
		fmt.Fprintf(w, "%s  %d %-22s %s\n", prefix, i+1, s.Name, s.Detail)
	}
	for _, r := range res.Refused {
		fmt.Fprintf(w, "%s  note: not vouched for by the AK certificate path: %s\n", prefix, r)
	}
	return res, nil
}
