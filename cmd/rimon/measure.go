package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/measure/target"
	"github.com/rimon-dev/rimon/ociimage"
	"github.com/rimon-dev/rimon/sdunit"
	"github.com/spf13/cobra"
)

type measureFlags struct {
	pcr    int
	reason string
	tree   bool
	image  bool
	units  []string
	dryRun bool
	jobs   int
	// sel chooses one image or platform in an image (--platform, --image-ref).
	sel ociimage.Options
}

func newMeasureCmd(g *globals) *cobra.Command {
	var f measureFlags
	c := &cobra.Command{
		Use:   "measure [flags] PATH...",
		Short: "Measure files (or trees) into the log and the PCR",
		Long: `measure hashes each PATH with SHA-256, appends one record per PATH to the log
and extends the PCR in every active bank. Every PATH is measured before anything
is written: if one fails, nothing is recorded.

A directory needs --tree and is measured as one digest over its whole tree
(docs/FORMAT.md). FIFOs, sockets and devices are refused.

It prints one line per record: RECNUM PCR KIND SHA256 REASON PATH.

With --dry-run it touches neither TPM nor log and prints "SHA256  PATH" per
file, exactly as sha256sum does.`,
		Example: `  rimon measure --tpm sim /usr/bin/myapp /etc/myapp.conf
  rimon measure --reason launch:myapp.service /usr/bin/myapp
  rimon measure --tree /opt/myapp
  rimon measure --dry-run /usr/bin/*`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range f.units {
				u, source, err := sdunit.Lookup(cmd.Context(), name)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "rimon: %s: read from %s\n", u.Name, source)
				args = append(append(append(args, u.Exec...), u.File), u.DropIns...)
			}
			if len(args) == 0 {
				return usageErr("requires at least 1 arg(s): the paths to measure, or --unit NAME")
			}
			if err := checkExtendPCR(f.pcr); err != nil {
				return err
			}
			if err := checkReason(f.reason); err != nil {
				return err
			}
			if f.image && (f.tree || f.dryRun) {
				return usageErr("--image cannot be combined with --tree or --dry-run")
			}
			if (f.sel.Platform != "" || f.sel.Ref != "") && !f.image {
				return usageErr("--platform and --image-ref need --image")
			}
			if err := f.sel.Validate(); err != nil {
				return usageErr("--platform: %v", err)
			}
			if f.dryRun {
				return dryRun(cmd.Context(), g, f, args)
			}
			return runMeasure(cmd.Context(), g, f, args)
		},
	}
	fl := c.Flags()
	fl.IntVar(&f.pcr, "pcr", 23, "PCR to extend")
	fl.StringVar(&f.reason, "reason", eventlog.ReasonManual, "why the measurement is taken (initial, changed, launch, launch:UNIT ...)")
	fl.BoolVar(&f.tree, "tree", false, "measure directories as one tree digest")
	fl.BoolVar(&f.image, "image", false, "each PATH is a container image (OCI layout or docker/podman save archive): verify every blob, record its manifest and config digests")
	fl.StringVar(&f.sel.Platform, "platform", "", "with --image: measure only the image for this platform (os/arch[/variant]) of a multi-platform image")
	fl.StringVar(&f.sel.Ref, "image-ref", "", "with --image: measure only the image of this tag or name (or manifest or config digest) in an archive of several")
	fl.StringArrayVar(&f.units, "unit", nil, "measure a systemd unit's ExecStart binaries, unit file and drop-ins (repeatable)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print digests like sha256sum; touch no TPM and no log")
	fl.IntVar(&f.jobs, "jobs", 0, "files hashed in parallel (0: one per core)")
	return c
}

// checkReason accepts a lowercase word, optionally followed by ":" and printable text.
func checkReason(r string) error {
	word, rest, _ := strings.Cut(r, ":")
	if word == "" {
		return usageErr("--reason %q: want a word such as launch or launch:myapp.service", r)
	}
	for _, c := range word {
		if !(c >= 'a' && c <= 'z' || c == '-' || c == '_') {
			return usageErr("--reason %q: the part before ':' may hold only a-z, - and _", r)
		}
	}
	for _, c := range rest {
		if c < 0x20 || c == 0x7f {
			return usageErr("--reason %q: control characters are not allowed", r)
		}
	}
	return nil
}

// measureAll measures every path by its kind (the flags say which); on any
// failure it returns all failures and no results.
func measureAll(ctx context.Context, args []string, f measureFlags) ([]target.Result, error) {
	errs := make([]error, len(args)) // found before measuring
	ts := make([]target.Target, 0, len(args))
	idx := make([]int, len(args)) // of each measured path in ts, or -1
	for i, a := range args {
		idx[i] = -1
		abs, err := filepath.Abs(a)
		if err != nil {
			errs[i] = fmt.Errorf("%s: %w", a, err)
			continue
		}
		if !utf8.ValidString(abs) {
			errs[i] = fmt.Errorf("measure %q: the path is not valid UTF-8, which the log cannot record", a)
			continue
		}
		kind := target.File
		fi, err := os.Stat(abs)
		switch {
		case err == nil && f.image:
			kind = target.Image
		case err != nil:
			errs[i] = fmt.Errorf("measure %s: %w", a, unwrapPath(err))
			continue
		case fi.IsDir() && !f.tree:
			errs[i] = fmt.Errorf("measure %s: is a directory (use --tree to measure it as one tree digest)", a)
			continue
		case fi.IsDir():
			kind = target.Tree
		}
		idx[i] = len(ts)
		ts = append(ts, target.Target{Kind: kind, Path: abs})
	}
	outs := target.All(ctx, ts, target.Options{Budget: measure.Options{Workers: f.jobs}, Image: f.sel}, nil)
	// The failures in the order of the arguments, those of files last.
	var all []error
	for i := range args {
		if errs[i] != nil {
			all = append(all, errs[i])
		} else if o := outs[idx[i]]; o.Err != nil && o.Kind != target.File {
			all = append(all, o.Err)
		}
	}
	res := make([]target.Result, len(ts))
	for j, o := range outs {
		if o.Err != nil && o.Kind == target.File {
			all = append(all, o.Err)
		}
		res[j] = o.Result
	}
	if len(all) > 0 {
		return nil, errors.Join(all...)
	}
	return res, nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func dryRun(ctx context.Context, g *globals, f measureFlags, args []string) error {
	// Like sha256sum: every path is tried, failures are reported and counted.
	failed := 0
	out := bufio.NewWriterSize(g.stdout, 64<<10)
	defer out.Flush()
	for i, o := range measure.Files(ctx, args, f.jobs) {
		if o.Err == nil {
			out.WriteString(sumLine(o.Digest, args[i]))
			continue
		}
		if fi, err := os.Stat(args[i]); err == nil && fi.IsDir() {
			if !f.tree {
				o.Err = fmt.Errorf("%s: is a directory (use --tree)", args[i])
			} else if r, err := measure.Tree(ctx, args[i], f.jobs); err != nil {
				o.Err = err
			} else {
				out.WriteString(sumLine(r.Digest, args[i]))
				continue
			}
		}
		out.Flush()
		fmt.Fprintf(g.stderr, "rimon: %v\n", o.Err)
		failed++
	}
	if failed > 0 {
		return &exitErr{code: exitError, err: fmt.Errorf("%d of %d paths could not be measured", failed, len(args))}
	}
	return nil
}

// sumLine formats a line as GNU sha256sum does, escaping backslashes and
// newlines in the name.
func sumLine(d measure.Digest, name string) string {
	if strings.ContainsAny(name, "\\\n") {
		name = strings.NewReplacer("\\", "\\\\", "\n", "\\n").Replace(name)
		return "\\" + d.String() + "  " + name + "\n"
	}
	return d.String() + "  " + name + "\n"
}

func runMeasure(ctx context.Context, g *globals, f measureFlags, args []string) error {
	ms, err := measureAll(ctx, args, f)
	if err != nil {
		return err
	}
	t, banks, err := g.openTPM(ctx, f.pcr)
	if err != nil {
		return err
	}
	defer t.Close()
	w, err := g.openWriter(ctx, t, banks, f.pcr)
	if err != nil {
		return err
	}
	defer w.Close()
	for _, m := range ms {
		rec, err := w.Append(ctx, f.pcr, m.Event(f.reason))
		if err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "%d %d %s %s %s %s\n", rec.RecNum, rec.PCR, m.Kind, m.Digest, f.reason, m.Path)
	}
	return nil
}
