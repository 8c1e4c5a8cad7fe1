package measure

import (
	"io/fs"
	"os"
	"syscall"
)

// openNonBlocking opens path read-only without blocking on a FIFO whose
// writer is absent and without making it the controlling terminal.
func openNonBlocking(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
}

func stat(f *os.File) (identity, fs.FileMode, error) {
	fi, err := f.Stat()
	if err != nil {
		return identity{}, 0, err
	}
	id, _ := statIdentity(fi)
	return id, fi.Mode(), nil
}

func statIdentity(fi fs.FileInfo) (identity, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return identity{size: fi.Size(), mtime: fi.ModTime().UnixNano()}, false
	}
	return identity{
		dev:   uint64(st.Dev),
		ino:   st.Ino,
		size:  st.Size,
		mtime: st.Mtim.Nano(),
		ctim:  st.Ctim.Nano(),
	}, true
}

func deviceNumbers(fi fs.FileInfo) (major, minor uint32, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	rdev := uint64(st.Rdev)
	major = uint32((rdev>>8)&0xfff) | uint32((rdev>>32)&^0xfff)
	minor = uint32(rdev&0xff) | uint32((rdev>>12)&^0xff)
	return major, minor, true
}
