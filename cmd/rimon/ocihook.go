package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/rimon-dev/rimon/attest"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/ocihook"
	"github.com/rimon-dev/rimon/ociimage"
	"github.com/rimon-dev/rimon/policy"
	"github.com/spf13/cobra"
)

// DefaultHooksDir is where podman and CRI-O read oci-hooks(5) files.
const defaultHooksDir = "/usr/share/containers/oci/hooks.d"

// hookFileName is the file `rimon oci-hook install` writes in the hooks directory.
const hookFileName = "rimon.json"

type ociHookFlags struct {
	policy string
	pcr    int
	stdin  io.Reader
}

func newOCIHookCmd(g *globals) *cobra.Command {
	f := ociHookFlags{stdin: os.Stdin}
	c := &cobra.Command{
		Use:   "oci-hook [--tpm T] [--log L] [--policy P]",
		Short: "Measure a container before it starts (an OCI createRuntime hook)",
		Long: `oci-hook is run by an OCI runtime (runc, crun; through podman, CRI-O or
containerd's NRI) as a createRuntime hook: it reads the container's state on
stdin and its bundle's config.json, and appends one record of kind container
(reason launch:container:NAME) to the log, extending the PCR in every active
bank, before the container's process runs. The record holds the launch digest
(args, env, mounts, capabilities, namespaces... normalized: docs/FORMAT.md),
the root file system's tree digest (as rimon measure --tree gives it) and the
image identity when the container manager left it.

The runtime gives a hook no environment: give --tpm, --log and --policy as
flags. Without a policy, or without its containers section, every container is
measured, root file system included, and any error makes the hook fail, so that
the runtime refuses to start the container (on_error: deny). With on_error:
allow the error is reported on stderr and the container starts unmeasured.

rimon oci-hook install writes the oci-hooks(5) file that makes podman and CRI-O
run it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOCIHook(cmd.Context(), g, f, cmd.Flags().Changed("log"), cmd.Flags().Changed("pcr"))
		},
	}
	c.Flags().StringVar(&f.policy, "policy", "", "policy file (its containers section, and settings pcr and log)")
	c.Flags().IntVar(&f.pcr, "pcr", 23, "PCR to extend (default: the policy's, else 23)")

	var dir, bin string
	inst := &cobra.Command{
		Use:   "install [--dir DIR] [--policy P] [--tpm T] [--log L]",
		Short: "Write the oci-hooks(5) file that runs rimon oci-hook for podman and CRI-O",
		Long: `install writes ` + hookFileName + ` to the hooks directory (default ` + defaultHooksDir + `):
an oci-hooks(5) file of version 1.0.0 with stage createRuntime, whose "when" is
the policy's containers.when (else always), and whose arguments name the TPM,
the log and the policy, since the runtime passes the hook no environment.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return installOCIHook(g, dir, bin, f.policy, cmd.Flags().Changed("log") || os.Getenv("RIMON_LOG") != "")
		},
	}
	inst.Flags().StringVar(&dir, "dir", defaultHooksDir, "hooks directory")
	inst.Flags().StringVar(&bin, "path", "", "the rimon binary the runtime runs (default: this one)")
	inst.Flags().StringVar(&f.policy, "policy", "", "policy file the hook reads")
	var bundle, id string
	desc := &cobra.Command{
		Use:   "describe --bundle DIR [--id ID]",
		Short: "Print a bundle's launch description in its normal form, and its launch digest",
		Long: `describe prints the normal form of the launch description of the bundle's
config.json (docs/FORMAT.md) on one line, then its launch digest: the value a
container record's launch_sha256 holds for a start of that bundle, and what a
reference file's containers.NAME.launch lists. --id is the container id the
runtime gives (it matters only when it is 32 characters or longer, and is then
replaced by {id}).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := ocihook.ReadConfig(bundle)
			if err != nil {
				return err
			}
			normal, digest := cfg.Launch(id)
			fmt.Fprintf(g.stdout, "%s\n%s\n", normal, digest)
			return nil
		},
	}
	desc.Flags().StringVar(&bundle, "bundle", ".", "bundle directory (holding config.json)")
	desc.Flags().StringVar(&id, "id", "", "container id")
	c.AddCommand(inst, desc)
	return c
}

// runOCIHook measures and records one container start.
func runOCIHook(ctx context.Context, g *globals, f ociHookFlags, logSet, pcrSet bool) error {
	cs := policy.DefaultContainers()
	pcr := f.pcr
	budget := measure.Options{MaxSize: policy.DefaultMaxFileSize, MaxTime: policy.DefaultMaxFileTime}
	if f.policy != "" {
		pol, err := policy.Load(f.policy)
		if err != nil {
			return fmt.Errorf("oci-hook: %w (the container is not started: without its policy the hook cannot tell whether errors may be allowed)", err)
		}
		if pol.Containers != nil {
			cs = *pol.Containers
		}
		if !logSet {
			g.log = pol.Log
		}
		if !pcrSet {
			pcr = pol.PCR
		}
		budget.MaxSize, budget.MaxTime = pol.MaxFileSize, pol.MaxFileTime
	}
	if err := checkExtendPCR(pcr); err != nil {
		return err
	}
	err := measureContainer(ctx, g, f.stdin, cs, pcr, budget)
	if err == nil {
		return nil
	}
	if cs.OnError == policy.Allow {
		fmt.Fprintf(g.stderr, "rimon: warning: the container starts unmeasured (containers.on_error: allow): %v\n", err)
		return nil
	}
	return fmt.Errorf("oci-hook: %w (containers.on_error: deny: the runtime does not start the container)", err)
}

// measureContainer measures the container the state on stdin names, when
// cs selects it, and records it; budget bounds the work on each file of its
// root file system (the policy's max_file_size and max_file_time).
func measureContainer(ctx context.Context, g *globals, stdin io.Reader, cs policy.Containers, pcr int, budget measure.Options) error {
	st, err := ocihook.ReadState(stdin)
	if err != nil {
		return err
	}
	cfg, err := ocihook.ReadConfig(st.Bundle)
	if err != nil {
		return err
	}
	command := ""
	if len(cfg.Args) > 0 {
		command = cfg.Args[0]
	}
	if !cs.Selects(cfg.Annotations, command) {
		return nil
	}
	m, err := ocihook.Measure(ctx, st, cfg, ocihook.Options{SkipRootfs: !cs.Rootfs, Budget: budget})
	if err != nil {
		return err
	}
	for _, n := range m.Notes {
		fmt.Fprintf(g.stderr, "rimon: note: container %s: %s\n", m.Container.Name, n)
	}
	ev, err := m.Container.Event()
	if err != nil {
		return err
	}
	t, banks, err := g.openTPM(ctx, pcr)
	if err != nil {
		return err
	}
	defer t.Close()
	w, err := g.openWriter(ctx, t, banks, pcr)
	if err != nil {
		return err
	}
	defer w.Close()
	rec, err := w.Append(ctx, pcr, ev)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%d %d container %s %s launch %s\n", rec.RecNum, rec.PCR, orNone(ev.SHA256), ev.Reason, m.Container.LaunchSHA256)
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// hookFile is an oci-hooks(5) file, version 1.0.0.
type hookFile struct {
	Version string         `json:"version"`
	Hook    hookCmd        `json:"hook"`
	When    map[string]any `json:"when"`
	Stages  []string       `json:"stages"`
}

type hookCmd struct {
	Path string   `json:"path"`
	Args []string `json:"args"`
	Env  []string `json:"env,omitempty"`
}

// installOCIHook writes the hooks.d file. The log is named in it when
// given (--log or $RIMON_LOG) or when there is no policy: with a policy,
// the hook reads the policy's settings.log, as rimon watch does.
func installOCIHook(g *globals, dir, bin, policyPath string, logSet bool) error {
	cs := policy.DefaultContainers()
	args := []string{"rimon", "oci-hook", "--tpm", g.tpm}
	if logSet || policyPath == "" {
		args = append(args, "--log", g.log)
	}
	if policyPath != "" {
		abs, err := filepath.Abs(policyPath)
		if err != nil {
			return err
		}
		pol, err := policy.Load(abs)
		if err != nil {
			return err
		}
		if pol.Containers != nil {
			cs = *pol.Containers
		}
		args = append(args, "--policy", abs)
	}
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this binary (give --path): %w", err)
		}
		if bin, err = filepath.EvalSymlinks(exe); err != nil {
			return fmt.Errorf("find this binary (give --path): %w", err)
		}
	}
	if !filepath.IsAbs(bin) {
		return usageErr("--path %q: the runtime needs an absolute path", bin)
	}
	hf := hookFile{Version: "1.0.0", Hook: hookCmd{Path: bin, Args: args}, When: cs.HookWhen(), Stages: []string{"createRuntime"}}
	b, err := json.MarshalIndent(hf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	dst := filepath.Join(dir, hookFileName)
	tmp, err := os.CreateTemp(dir, ".rimon-*.json.tmp")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(append(b, '\n'))
	if err := errors.Join(werr, tmp.Chmod(0o644), tmp.Sync(), tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	fmt.Fprintf(g.stdout, "%s\n", dst)
	return nil
}

// reportContainers lists, after rimon verify's verdict, every container
// start among the trusted records with its own verdict. It reads the log
// again from the evidence file, the --log file or the fetched evidence;
// a log streamed past (rimon attest --stream) is not listed.
func (g *globals) reportContainers(f verifyFlags, ev *attest.Evidence, logStart uint64, covered int, ref *policy.Reference) {
	var log io.Reader
	switch {
	case ev != nil && f.logR == nil:
		log = bytes.NewReader(ev.Log)
	case ev != nil:
		return
	case f.evidence != "":
		fh, err := os.Open(f.evidence)
		if err != nil {
			return
		}
		defer fh.Close()
		if _, log, err = attest.OpenEvidence(fh); err != nil {
			return
		}
	case f.log != "":
		fh, err := os.Open(f.log)
		if err != nil {
			return
		}
		defer fh.Close()
		log = fh
	default:
		return
	}
	starts, err := attest.ContainerStarts(log, int(logStart), covered, ref)
	if err != nil {
		fmt.Fprintf(g.stderr, "rimon: warning: listing container starts: %v\n", err)
	}
	for _, s := range starts {
		c := s.Record
		v := strings.ToUpper(s.Verdict)
		if s.Verdict == attest.ContainerApproved || s.Verdict == attest.ContainerUnchecked {
			v = s.Verdict
		}
		line := fmt.Sprintf("  container %s [record %d]: %s (launch %s, rootfs %s", c.Name, s.Index, v, shortDigest(c.LaunchSHA256), shortDigest(orNone(c.RootfsSHA256)))
		if c.ImageName != "" || c.ImageID != "" {
			line += ", image " + strings.TrimSpace(c.ImageName+" "+c.ImageID)
		}
		line += ")"
		if len(s.Problems) > 0 {
			line += ": " + strings.Join(s.Problems, "; ")
		}
		fmt.Fprintln(g.stdout, line)
	}
}

func shortDigest(d string) string {
	if len(d) > 16 {
		return d[:16] + "…"
	}
	return d
}

// imageRefFlags are rimon reference generate's --from-image flags.
type imageRefFlags struct {
	path, container string
	sel             ociimage.Options
}

func (f *imageRefFlags) flags(c *cobra.Command) {
	c.Flags().StringVar(&f.path, "from-image", "", "an image (OCI layout or save archive): its root file system digest, for containers")
	c.Flags().StringVar(&f.container, "container", "*", "with --from-image: the container name or pattern the entry is for")
	c.Flags().StringVar(&f.sel.Ref, "image-ref", "", "with --from-image: the image of this tag or name in an archive of several")
	c.Flags().StringVar(&f.sel.Platform, "platform", "", "with --from-image: the image for this platform (os/arch[/variant])")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// referenceFromImage writes a reference whose containers entry allows the
// root file system an image makes, and the image's digests.
func referenceFromImage(ctx context.Context, g *globals, f imageRefFlags) error {
	if err := f.sel.Validate(); err != nil {
		return usageErr("--platform: %v", err)
	}
	if err := eventlog.CheckContainerName(f.container); err != nil {
		return usageErr("--container: %v", err)
	}
	r, err := ociimage.RootfsDigest(ctx, f.path, f.sel)
	if err != nil {
		return err
	}
	d := &policy.ContainerDigests{Rootfs: []string{r.Digest.String()}, Pattern: true}
	for _, id := range []string{r.Image.ConfigDigest, r.Image.ManifestDigest} {
		if strings.HasPrefix(id, "sha256:") && !slices.Contains(d.Image, id) {
			d.Image = append(d.Image, id)
		}
	}
	comments := []string{fmt.Sprintf("generated by rimon reference generate from the image %s (%d entries in its root file system)", f.path, len(r.Entries)),
		"the root file system digest holds when the runtime adds nothing to the image's files (podman adds mount points"}
	comments[1] += " such as /etc/hosts: take its digest from the log of a known-good start, rimon reference generate --from-log)"
	if f.container == "*" {
		comments = append(comments, `review: "*" covers every container; name the containers of this image (--container NAME)`)
	}
	return policy.WriteReference(g.stdout, policy.RefFile{Comments: comments, Containers: map[string]*policy.ContainerDigests{f.container: d}})
}
