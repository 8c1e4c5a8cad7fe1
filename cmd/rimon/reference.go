package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/policy"
	"github.com/spf13/cobra"
)

func newReferenceCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "reference", Short: "Make reference values for rimon verify"}
	var fromLog, fromDir string
	var img imageRefFlags // ocihook.go
	gen := &cobra.Command{
		Use:   "generate (--from-log LOG | --from-dir DIR | --from-image IMAGE [--container NAME])",
		Short: "Write a starting reference file from a log or a directory",
		Long: `generate prints reference values (YAML) that approve exactly what a log
records (the last digest of each present path, every image's digests) or what
a directory holds now (every regular file below it). Review it before use:
it approves what is there, good or bad.

--from-image computes the root file system digest of an image on disk (an OCI
layout or a docker/podman save archive, every blob verified) as the OCI hook
records it for a container of that image, and writes a containers entry that
allows it and the image's config and manifest digests.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n := btoi(fromLog != "") + btoi(fromDir != "") + btoi(img.path != ""); n != 1 {
				return usageErr("give one of --from-log, --from-dir and --from-image")
			}
			if img.path != "" {
				return referenceFromImage(cmd.Context(), g, img)
			}
			if fromLog != "" {
				if _, err := os.Stat(fromLog); err != nil {
					return fmt.Errorf("log %s: %w", fromLog, unwrapPath(err))
				}
				recs, torn, err := logfile.Snapshot(cmd.Context(), fromLog)
				if err != nil {
					return err
				}
				if len(recs) == 0 {
					return fmt.Errorf("log %s has no records", fromLog)
				}
				// A reference approves what the log says: only a log whose
				// records verify may say it.
				for i := range recs {
					if problem, _ := recordProblem(i, &recs[i]); problem != "" {
						return fmt.Errorf("log %s: record %d: %s (a reference is made only from a log whose records verify)", fromLog, i, problem)
					}
				}
				if torn > 0 {
					fmt.Fprintf(g.stderr, "rimon: warning: %s ends in an incomplete record (%d bytes, never extended): left out\n", fromLog, torn)
				}
				return policy.WriteReference(g.stdout, policy.ReferenceFromLog("the log "+fromLog, recs))
			}
			abs, paths, err := policy.RegularFiles(fromDir)
			if err != nil {
				return err
			}
			digests := map[string]string{}
			for _, o := range measure.Files(cmd.Context(), paths, 0) {
				if o.Err != nil {
					return o.Err
				}
				digests[o.Path] = o.Digest.String()
			}
			return policy.WriteReference(g.stdout, policy.ReferenceFromDigests("the directory "+abs, digests))
		},
	}
	gen.Flags().StringVar(&fromLog, "from-log", "", "a measurement log")
	gen.Flags().StringVar(&fromDir, "from-dir", "", "a directory")
	img.flags(gen)

	var kf keylimeFlags
	imp := &cobra.Command{
		Use:   "import-keylime [flags] POLICY",
		Short: "Convert a Keylime runtime policy or allowlist into reference values",
		Long: `import-keylime reads a Keylime runtime policy (JSON), the same signed in a
DSSE envelope (keylime-policy sign), or an older allowlist ("DIGEST  PATH"
lines), and prints reference values (YAML).

rimon records carry SHA-256 digests of files, so only SHA-256 digests can
ever match. Digests of other algorithms (sha1, sha384, sha512, sm3_256) are
refused, naming the algorithm and the paths; --drop-other-algorithms imports
the SHA-256 entries of a mixed policy and lists what it left out. Keylime
does not label its digests: a 64-hex-character digest is SHA-256 or SM3-256,
so --digest-alg must say which (sha256 is keylime-policy's default).

Entries whose path is not absolute (IMA's boot_aggregate, allowlists made
relative to a root) can match no rimon record: they are left out and listed.
Keylime's excludes (Python regular expressions, matched from the start of a
path) become the reference's ignore patterns when patterns express them
exactly; the others are listed and refused unless --drop-unmapped-excludes
accepts that they are left out (which makes the reference stricter).

With --keylime-key, the policy must be a DSSE envelope whose signature
verifies with that key (ECDSA or RSA public key, or certificate, PEM). A
DSSE envelope without --keylime-key is refused: a signed policy is imported
unchecked only with --insecure-skip-signature.`,
		Example: `  rimon reference import-keylime --digest-alg sha256 policy.json > ref.yaml
  rimon reference import-keylime --digest-alg sha256 --keylime-key signer.pub signed.json
  rimon reference import-keylime --digest-alg sha256 --excludelist excl.txt allowlist.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return importKeylime(g, kf, args[0])
		},
	}
	fl := imp.Flags()
	fl.StringVar(&kf.key, "keylime-key", "", "PEM public key or certificate that must have signed the policy (DSSE)")
	fl.StringVar(&kf.digestAlg, "digest-alg", "", "what the policy's unlabelled 64-hex-character digests are: sha256 or sm3_256")
	fl.BoolVar(&kf.dropAlgs, "drop-other-algorithms", false, "import the SHA-256 entries of a policy that also holds other digests, and list the rest")
	fl.BoolVar(&kf.dropExcludes, "drop-unmapped-excludes", false, "leave out excludes no rimon pattern expresses exactly (their paths become unlisted)")
	fl.StringVar(&kf.excludeList, "excludelist", "", "a Keylime exclude list (one regular expression per line) to add")
	fl.BoolVar(&kf.skipSignature, "insecure-skip-signature", false, "INSECURE: import a DSSE-signed policy without checking its signature")
	c.AddCommand(gen, imp)
	return c
}

type keylimeFlags struct {
	key, digestAlg, excludeList string
	dropAlgs, dropExcludes      bool
	skipSignature               bool
}

func importKeylime(g *globals, kf keylimeFlags, name string) error {
	opt := policy.KeylimeOptions{Digest256: kf.digestAlg, DropOtherAlgorithms: kf.dropAlgs, DropUnmappedExcludes: kf.dropExcludes}
	if kf.digestAlg != "" && kf.digestAlg != policy.KeylimeSHA256 && kf.digestAlg != policy.KeylimeSM3 {
		return usageErr("--digest-alg %q: want sha256 or sm3_256", kf.digestAlg)
	}
	if kf.key != "" {
		b, err := os.ReadFile(kf.key)
		if err != nil {
			return fmt.Errorf("--keylime-key: %w", err)
		}
		if opt.Key, err = policy.ParseKeylimeKey(kf.key, b); err != nil {
			return err
		}
	}
	if kf.excludeList != "" {
		b, err := os.ReadFile(kf.excludeList)
		if err != nil {
			return fmt.Errorf("--excludelist: %w", err)
		}
		opt.Excludes = policy.ParseKeylimeExcludeList(b)
	}
	data, err := readLimited(name, 1<<30)
	if err != nil {
		return err
	}
	imp, err := policy.ImportKeylime(name, data, opt)
	switch {
	case errors.Is(err, policy.ErrKeylimeAmbiguous):
		return fmt.Errorf("%w\nif the policy was made with SHA-256, give --digest-alg sha256", err)
	case errors.Is(err, policy.ErrKeylimeAlgorithm) && !kf.dropAlgs:
		return fmt.Errorf("%w\nto import the SHA-256 entries alone and list the rest, give --drop-other-algorithms", err)
	case errors.Is(err, policy.ErrKeylimeExcludes):
		return fmt.Errorf("%w\nto leave them out (their paths become unlisted), give --drop-unmapped-excludes", err)
	case err != nil:
		return err
	}
	signature := ""
	switch {
	case imp.SignatureChecked:
		signature = "; its DSSE signature verified with " + kf.key
	case imp.Signed && !kf.skipSignature:
		return fmt.Errorf("%s is a DSSE-signed policy: give --keylime-key PEM to check its signature (or --insecure-skip-signature to import it unchecked)", name)
	case imp.Signed:
		signature = "; its DSSE signature was NOT checked (--insecure-skip-signature)"
		fmt.Fprintf(g.stderr, "rimon: WARNING: %s is signed, but its signature was NOT checked (--insecure-skip-signature)\n", name)
	}
	for _, n := range imp.Notes {
		fmt.Fprintf(g.stderr, "rimon: %s: %s\n", name, n)
	}
	for _, l := range imp.LeftOut {
		fmt.Fprintf(g.stderr, "rimon: %s: left out %s %s: %s\n", name, l.Path, l.Digest, l.Reason)
	}
	for _, u := range imp.Unmapped {
		fmt.Fprintf(g.stderr, "rimon: %s: DROPPED exclude %q (its paths become unlisted): %s\n", name, u.Regex, u.Reason)
	}
	fmt.Fprintf(g.stderr, "rimon: imported %d paths and %d ignore patterns from the %s %s; left out %d digests and %d excludes\n",
		len(imp.Files), len(imp.Ignore), imp.Format, name, len(imp.LeftOut), len(imp.Unmapped))
	comments := []string{"imported by rimon reference import-keylime from the " + imp.Format + " " + name + signature}
	if len(imp.LeftOut) > 0 || len(imp.Unmapped) > 0 {
		comments = append(comments, fmt.Sprintf("left out: %d digests, %d excludes (listed when imported)", len(imp.LeftOut), len(imp.Unmapped)))
	}
	return policy.WriteReference(g.stdout, policy.RefFile{Comments: comments, Files: imp.Files, Ignore: imp.Ignore})
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return b, nil
}
