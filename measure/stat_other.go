//go:build !linux

package measure

import (
	"errors"
	"io/fs"
	"os"
)

var errOnlyLinux = errors.New("measuring files is only supported on Linux")

func openNonBlocking(path string) (*os.File, error) { return nil, errOnlyLinux }

func stat(f *os.File) (identity, fs.FileMode, error) { return identity{}, 0, errOnlyLinux }

func statIdentity(fi fs.FileInfo) (identity, bool) { return identity{}, false }

func deviceNumbers(fi fs.FileInfo) (major, minor uint32, ok bool) { return 0, 0, false }
