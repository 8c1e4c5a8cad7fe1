package measure

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"
)

// MaxAttempts is how many times [File] reads a file that keeps changing
// under it before it gives up with [ErrUnstable].
const MaxAttempts = 3

// Errors that callers branch on. They are wrapped with the path and details.
var (
	// ErrNotRegular means the path names a directory, FIFO, socket or device node.
	ErrNotRegular = errors.New("not a regular file")
	// ErrUnstable means the file changed every time it was read.
	ErrUnstable = errors.New("file kept changing while it was read")
	// ErrTooLarge means the file is larger than [Options.MaxSize]; it was not read.
	ErrTooLarge = errors.New("file larger than the size budget")
	// ErrTimeout means reading the file took longer than [Options.MaxTime].
	ErrTimeout = errors.New("file took longer than the time budget")
	// ErrSymlinkRefused means the path goes through a symbolic link whose
	// owner could not read what it points to (docs/THREAT-MODEL.md).
	ErrSymlinkRefused = errors.New("symbolic link refused")
)

// Options bounds the work of a measurement. The zero value sets no budget
// and hashes on every core.
type Options struct {
	// MaxSize refuses, without reading it, a regular file larger than this
	// many bytes ([ErrTooLarge]); 0 sets no limit.
	MaxSize int64
	// MaxTime stops reading one file after this long ([ErrTimeout]),
	// counting every attempt; 0 sets no limit.
	MaxTime time.Duration
	// Workers bounds how many files [FilesWith] and [TreeWith] hash at
	// once; 0 means one per core.
	Workers int
}

// Digest is a SHA-256 digest.
type Digest [sha256.Size]byte

// String returns the digest as lowercase hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Result is the measurement of one regular file.
type Result struct {
	Path   string
	Digest Digest
	Size   int64
	Mode   fs.FileMode
	// ModTime is the file's modification time as it was read.
	ModTime time.Time
}

// identity is what must not change while a file is read.
type identity struct {
	dev, ino    uint64
	size        int64
	mtime, ctim int64
	nlink       uint64
}

// same reports whether a and b are the same unchanged file.
func (a identity) same(b identity) bool {
	return a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime == b.mtime && a.ctim == b.ctim
}

// bufPool holds read buffers: large reads keep the hash in its fast path.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// checkEvery is how many bytes are read between two looks at whether the
// file changed or was deleted under the read.
const checkEvery = 64 << 20

// File measures the regular file at path (following symbolic links, as
// sha256sum does, within the symbolic link rule of docs/THREAT-MODEL.md).
// It checks the type before it opens anything, never blocks on a FIFO,
// and re-reads a file that changed during the read.
func File(ctx context.Context, path string) (Result, error) {
	return FileWith(ctx, path, Options{})
}

// FileWith is [File] within the budgets of o.
func FileWith(ctx context.Context, path string, o Options) (Result, error) {
	var deadline time.Time // no timer per file: reads look at the clock
	if o.MaxTime > 0 {
		deadline = time.Now().Add(o.MaxTime)
	}
	var lastErr error
	for attempt := 0; attempt < MaxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		r, err := fileOnce(ctx, path, o, deadline)
		if err == nil {
			return r, nil
		}
		if errors.Is(err, errDeadline) {
			return Result{}, fmt.Errorf("measure %s: %w (%v)", path, ErrTimeout, o.MaxTime)
		}
		if !errors.Is(err, errChanged) {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			return Result{}, err
		}
		lastErr = err
	}
	return Result{}, fmt.Errorf("measure %s: %w (%d attempts; last: %v)", path, ErrUnstable, MaxAttempts, lastErr)
}

var errDeadline = errors.New("time budget used up")

var errChanged = errors.New("changed during read")

func fileOnce(ctx context.Context, path string, o Options, deadline time.Time) (Result, error) {
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return Result{}, errDeadline
	}
	f, before, mode, err := openRegular(path)
	if err != nil {
		return Result{}, fmt.Errorf("measure %s: %w", path, err)
	}
	defer f.Close()
	if o.MaxSize > 0 && before.size > o.MaxSize {
		return Result{}, fmt.Errorf("measure %s: %w (%d bytes, budget %d)", path, ErrTooLarge, before.size, o.MaxSize)
	}
	h := sha256.New()
	bp := bufPool.Get().(*[]byte)
	n, err := io.CopyBuffer(h, &watchedReader{ctx: ctx, f: f, id: before, deadline: deadline}, *bp)
	bufPool.Put(bp)
	if err != nil {
		if errors.Is(err, errChanged) || errors.Is(err, errDeadline) {
			return Result{}, err
		}
		return Result{}, fmt.Errorf("measure %s: read: %w", path, unwrapPathError(err))
	}
	after, _, err := stat(f)
	if err != nil {
		return Result{}, fmt.Errorf("measure %s: %w", path, err)
	}
	if !before.same(after) || n != after.size {
		return Result{}, fmt.Errorf("%w: size %d→%d, read %d bytes", errChanged, before.size, after.size, n)
	}
	// The path may have been replaced (rename over) while we read the old inode.
	if now, ok := pathIdentity(path); ok && (now.dev != after.dev || now.ino != after.ino) {
		return Result{}, fmt.Errorf("%w: path now names another file", errChanged)
	}
	var r Result
	r.Path = path
	copy(r.Digest[:], h.Sum(nil))
	r.Size = n
	r.Mode = mode
	r.ModTime = time.Unix(0, after.mtime)
	return r, nil
}

// watchedReader stops a long read when the context ends or the deadline
// (when set) passes, and every
// [checkEvery] bytes looks whether the file changed or was deleted, so that
// no work is spent on a file that will not be recorded as read.
type watchedReader struct {
	ctx      context.Context
	f        rawFile
	id       identity
	since    int
	deadline time.Time
}

func (w *watchedReader) Read(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	if !w.deadline.IsZero() && !time.Now().Before(w.deadline) {
		return 0, errDeadline
	}
	if w.since >= checkEvery {
		w.since = 0
		now, _, err := stat(w.f)
		if err != nil {
			return 0, err
		}
		if now.nlink == 0 {
			return 0, fmt.Errorf("%w: deleted while read", errChanged)
		}
		if !w.id.same(now) {
			return 0, fmt.Errorf("%w: size %d→%d while read", errChanged, w.id.size, now.size)
		}
	}
	n, err := w.f.Read(p)
	w.since += n
	return n, err
}

// unwrapPathError drops the *fs.PathError wrapper, whose path the caller
// already names, keeping its operation and cause.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

func describeType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	default:
		return "special file"
	}
}
