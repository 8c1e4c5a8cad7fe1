//go:build !linux

package measure

import (
	"errors"
	"io/fs"
)

var errOnlyLinux = errors.New("measuring files is only supported on Linux")

type rawFile int

func (rawFile) Read(p []byte) (int, error) { return 0, errOnlyLinux }

func (rawFile) Close() error { return nil }

func openRegular(path string) (rawFile, identity, fs.FileMode, error) {
	return -1, identity{}, 0, errOnlyLinux
}

func pathIdentity(path string) (identity, bool) { return identity{}, false }

func resolvedPath(path string) (string, error) { return "", errOnlyLinux }

func stat(f rawFile) (identity, fs.FileMode, error) { return identity{}, 0, errOnlyLinux }

func deviceNumbers(fi fs.FileInfo) (major, minor uint32, ok bool) { return 0, 0, false }
