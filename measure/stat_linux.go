package measure

import (
	"io"
	"io/fs"
	"syscall"
)

// rawFile is a file descriptor read with plain system calls: regular files
// gain nothing from Go's poller, and registering each one costs a system call.
type rawFile int

func (f rawFile) Read(p []byte) (int, error) {
	for {
		n, err := syscall.Read(int(f), p)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			return 0, &fs.PathError{Op: "read", Err: err}
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f rawFile) Close() error { return syscall.Close(int(f)) }

func stat(f rawFile) (identity, fs.FileMode, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f), &st); err != nil {
		return identity{}, 0, &fs.PathError{Op: "fstat", Err: err}
	}
	return identityOf(&st), modeOf(st.Mode), nil
}

func identityOf(st *syscall.Stat_t) identity {
	return identity{
		dev:   uint64(st.Dev),
		ino:   st.Ino,
		size:  st.Size,
		mtime: st.Mtim.Nano(),
		ctim:  st.Ctim.Nano(),
		nlink: uint64(st.Nlink),
	}
}

// modeOf converts st_mode to an fs.FileMode, as os.Stat does.
func modeOf(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & syscall.S_IFMT {
	case syscall.S_IFBLK:
		mode |= fs.ModeDevice
	case syscall.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFDIR:
		mode |= fs.ModeDir
	case syscall.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case syscall.S_IFLNK:
		mode |= fs.ModeSymlink
	case syscall.S_IFSOCK:
		mode |= fs.ModeSocket
	}
	if m&syscall.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&syscall.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&syscall.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
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
