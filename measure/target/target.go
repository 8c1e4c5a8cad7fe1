// Package target measures a target by its kind, a regular file, a
// directory tree or a container image, into what a rimon record holds: the
// kind, the digest, the size and the kind's extra fields. It is the one
// dispatch by kind that `rimon measure` and the agent (package monitor)
// share.
//
// Like package measure it does not log, and every goroutine it starts has
// returned when a call returns.
package target

import (
	"context"
	"fmt"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/ociimage"
)

// Kinds of target: the kinds of the records they give (docs/FORMAT.md).
const (
	File  = eventlog.KindFile
	Tree  = eventlog.KindTree
	Image = eventlog.KindImage
)

// Options bound and select what a measurement does.
type Options struct {
	// Budget bounds the work of each file of a file or tree target (its
	// size and time; images have no budget) and how many files are hashed
	// at once, by [All] and within a tree (0: one per core).
	Budget measure.Options
	// Image chooses one image, or one platform, of an image target that
	// holds several (rimon measure's --image-ref and --platform).
	Image ociimage.Options
}

// Target is something to measure.
type Target struct {
	Kind string // File, Tree or Image
	Path string
}

// Result is the measurement of a target.
type Result struct {
	Kind string
	Path string
	// Digest is the SHA-256 recorded for the target, lowercase hex.
	Digest string
	// Size is a file's size in bytes, the number of entries of a tree, or
	// the number of blobs of an image.
	Size uint64
	// Extra holds the fields a record of the kind carries beside the
	// digest (an image's manifest and config digests and its format).
	Extra []eventlog.Field
}

// Event is the record of r, taken for reason.
func (r Result) Event(reason string) eventlog.Event {
	return eventlog.Event{Kind: r.Kind, Path: r.Path, SHA256: r.Digest, Size: r.Size, Reason: reason, Extra: r.Extra}
}

// Measure measures the target at path as kind: a regular file
// ([measure.FileWith]), a directory tree ([measure.TreeWith]) or a
// container image ([ociimage.VerifyWith]). Errors are those of the
// function named, unwrapped, so that callers can branch on them.
func Measure(ctx context.Context, kind, path string, o Options) (Result, error) {
	r := Result{Kind: kind, Path: path}
	switch kind {
	case File:
		res, err := measure.FileWith(ctx, path, o.Budget)
		if err != nil {
			return r, err
		}
		r.Digest, r.Size = res.Digest.String(), uint64(res.Size)
	case Tree:
		res, err := measure.TreeWith(ctx, path, o.Budget)
		if err != nil {
			return r, err
		}
		r.Digest, r.Size = res.Digest.String(), uint64(len(res.Entries))
	case Image:
		res, err := ociimage.VerifyWith(ctx, path, o.Image)
		if err != nil {
			return r, err
		}
		r.Digest, r.Size, r.Extra = res.Digest, uint64(res.Blobs), res.Fields()
	default:
		return r, fmt.Errorf("measure %s: unknown kind %q (want %s, %s or %s)", path, kind, File, Tree, Image)
	}
	return r, nil
}

// Outcome is the result of one target of [All].
type Outcome struct {
	Result
	Err error
}

// filesPerBatch is how many files [All] hashes between two progress reports.
const filesPerBatch = 2048

// All measures every target and returns the outcomes in the order of ts.
// Files are hashed in parallel, up to o.Budget.Workers at once, in batches
// after each of which progress (when not nil) is called with the number of
// files done; trees and images follow, one at a time. When ctx ends, the
// rest are marked with its error.
func All(ctx context.Context, ts []Target, o Options, progress func(done int)) []Outcome {
	out := make([]Outcome, len(ts))
	var files []string
	var fileIdx []int
	for i, t := range ts {
		if t.Kind == File {
			files = append(files, t.Path)
			fileIdx = append(fileIdx, i)
		}
	}
	for start := 0; start < len(files); start += filesPerBatch {
		end := min(start+filesPerBatch, len(files))
		for j, fo := range measure.FilesWith(ctx, files[start:end], o.Budget) {
			i := fileIdx[start+j]
			r := Result{Kind: File, Path: ts[i].Path}
			if fo.Err != nil {
				out[i] = Outcome{Result: r, Err: fo.Err}
				continue
			}
			r.Digest, r.Size = fo.Digest.String(), uint64(fo.Size)
			out[i] = Outcome{Result: r}
		}
		if progress != nil {
			progress(end)
		}
	}
	for i, t := range ts {
		if t.Kind != File {
			r, err := Measure(ctx, t.Kind, t.Path, o)
			out[i] = Outcome{Result: r, Err: err}
		}
	}
	return out
}
