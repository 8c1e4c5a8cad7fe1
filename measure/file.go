package measure

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
)

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
}

// bufPool holds read buffers: large reads keep the hash in its fast path.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// File measures the regular file at path (following a symbolic link at path
// itself, as sha256sum does). It never blocks on a FIFO and re-reads a file
// that changed during the read.
func File(ctx context.Context, path string) (Result, error) {
	var lastErr error
	for attempt := 0; attempt < MaxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		r, err := fileOnce(ctx, path)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, errChanged) {
			return Result{}, err
		}
		lastErr = err
	}
	return Result{}, fmt.Errorf("measure %s: %w (%d attempts; last: %v)", path, ErrUnstable, MaxAttempts, lastErr)
}

var errChanged = errors.New("changed during read")

func fileOnce(ctx context.Context, path string) (Result, error) {
	f, err := openNonBlocking(path)
	if err != nil {
		return Result{}, fmt.Errorf("measure %s: %w", path, unwrapPathError(err))
	}
	defer f.Close()
	before, mode, err := stat(f)
	if err != nil {
		return Result{}, fmt.Errorf("measure %s: %w", path, err)
	}
	if !mode.IsRegular() {
		return Result{}, fmt.Errorf("measure %s: %w (it is a %s)", path, ErrNotRegular, describeType(mode))
	}
	h := sha256.New()
	bp := bufPool.Get().(*[]byte)
	n, err := io.CopyBuffer(h, ctxReader{ctx, f}, *bp)
	bufPool.Put(bp)
	if err != nil {
		return Result{}, fmt.Errorf("measure %s: read: %w", path, unwrapPathError(err))
	}
	after, _, err := stat(f)
	if err != nil {
		return Result{}, fmt.Errorf("measure %s: %w", path, err)
	}
	if before != after || n != after.size {
		return Result{}, fmt.Errorf("%w: size %d→%d, read %d bytes", errChanged, before.size, after.size, n)
	}
	// The path may have been replaced (rename over) while we read the old inode.
	now, err := os.Stat(path)
	if err == nil {
		if id, ok := statIdentity(now); ok && (id.dev != after.dev || id.ino != after.ino) {
			return Result{}, fmt.Errorf("%w: path now names another file", errChanged)
		}
	}
	var r Result
	r.Path = path
	copy(r.Digest[:], h.Sum(nil))
	r.Size = n
	r.Mode = mode
	r.ModTime = time.Unix(0, after.mtime)
	return r, nil
}

// ctxReader stops a long read when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
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
