//go:build !unix

package logfile

import (
	"context"
	"errors"
	"os"
)

const (
	lockShared    = 1
	lockExclusive = 2
)

func flock(ctx context.Context, f *os.File, how int) error {
	return errors.New("log locking is only supported on Linux")
}

func funlock(f *os.File) error { return nil }
