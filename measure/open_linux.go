package measure

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks is how many symbolic links one path may go through (the
// kernel's own limit, MAXSYMLINKS).
const maxLinks = 40

// openRegular opens path for reading only once it is known to be a regular
// file, so that a device, FIFO or socket is never opened.
//
// A path without symbolic links (the common case) takes one fstatat for the
// type, an openat2 that refuses symbolic links, and an fstat that checks the
// descriptor names the inode just checked. A path with symbolic links is
// resolved by [resolve] under the symbolic link rule to an O_PATH
// descriptor (which opens nothing), checked, and that very inode opened
// through /proc/self/fd.
func openRegular(path string) (rawFile, identity, fs.FileMode, error) {
	var st unix.Stat_t
	err := unix.Fstatat(unix.AT_FDCWD, path, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil {
		return -1, identity{}, 0, fmt.Errorf("open: %w", err)
	}
	mode := modeOf(st.Mode)
	if mode.IsRegular() {
		fd, err := retryEINTR(func() (int, error) {
			return unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
				Flags: unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
		})
		switch {
		case err == nil:
			var now unix.Stat_t
			if err := unix.Fstat(fd, &now); err != nil {
				unix.Close(fd)
				return -1, identity{}, 0, fmt.Errorf("fstat: %w", err)
			}
			if now.Dev != st.Dev || now.Ino != st.Ino {
				unix.Close(fd)
				return -1, identity{}, 0, fmt.Errorf("%w: path now names another file", errChanged)
			}
			return rawFile(fd), identityOfUnix(&now), modeOf(now.Mode), nil
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
			// A symbolic link on the way: resolve it under the rule.
		default:
			return -1, identity{}, 0, fmt.Errorf("open: %w", err)
		}
	} else if mode&fs.ModeSymlink == 0 {
		return -1, identity{}, 0, fmt.Errorf("%w (it is a %s)", ErrNotRegular, describeType(mode))
	}
	return openResolved(path)
}

// openResolved opens a path with symbolic links: see [openRegular].
func openResolved(path string) (rawFile, identity, fs.FileMode, error) {
	pfd, err := resolve(path)
	if err != nil {
		return -1, identity{}, 0, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return -1, identity{}, 0, fmt.Errorf("fstat: %w", err)
	}
	mode := modeOf(st.Mode)
	if !mode.IsRegular() {
		return -1, identity{}, 0, fmt.Errorf("%w (it is a %s)", ErrNotRegular, describeType(mode))
	}
	id := identityOfUnix(&st)
	fd, err := retryEINTR(func() (int, error) {
		return unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	})
	if errors.Is(err, unix.ENOENT) {
		// No /proc: open the path again and check that it is the same inode.
		fd, err = retryEINTR(func() (int, error) {
			return unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		})
		if err == nil {
			var st2 unix.Stat_t
			if err := unix.Fstat(fd, &st2); err != nil || st2.Dev != st.Dev || st2.Ino != st.Ino {
				unix.Close(fd)
				return -1, identity{}, 0, fmt.Errorf("%w: path now names another file", errChanged)
			}
		}
	}
	if err != nil {
		return -1, identity{}, 0, fmt.Errorf("open: %w", err)
	}
	return rawFile(fd), id, mode, nil
}

func retryEINTR(open func() (int, error)) (int, error) {
	for {
		fd, err := open()
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// openPath returns an O_PATH descriptor of what path names, following
// symbolic links under the rule of [resolve]. A path without symbolic links
// takes one system call.
func openPath(path string) (int, error) {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	})
	switch {
	case err == nil:
		return fd, nil
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EPERM):
		return resolve(path)
	}
	return -1, fmt.Errorf("open: %w", err)
}

// principal is the owner of a symbolic link that was followed.
type principal struct{ uid uint32 }

// may reports whether every principal may access an inode with st's owner
// and mode for bit (4 read, 1 search). rimon does not know a user's groups
// (and a link's own group says nothing: a setgid directory gives every link
// made in it the directory's group), so for a user who does not own the
// inode the group bits and the other bits must both allow it: whether or
// not the user is in the group, the kernel would let them in.
func may(who []principal, st *unix.Stat_t, bit uint32) bool {
	for _, p := range who {
		perm := (st.Mode >> 3) & st.Mode
		if p.uid == st.Uid {
			perm = st.Mode >> 6
		}
		if perm&bit == 0 {
			return false
		}
	}
	return true
}

// resolve walks path one component at a time with O_PATH|O_NOFOLLOW
// descriptors and follows symbolic links itself, so that it knows who
// placed each link. The rule (docs/THREAT-MODEL.md, "Symbolic links"): a
// link owned by root is followed; a link owned by anyone else is followed
// only as far as its owner could go, so every directory after it must be
// searchable, and the file it leads to readable, by the link's owner (and
// the owner of every other such link on the way). Otherwise it fails with
// [ErrSymlinkRefused], before anything is opened for reading.
func resolve(path string) (int, error) {
	start := "."
	if strings.HasPrefix(path, "/") {
		start = "/"
	}
	cur, err := unix.Open(start, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open: %w", err)
	}
	rest := components(path)
	where := start // the path walked so far, for messages
	var who []principal
	links := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		fd, err := retryEINTR(func() (int, error) {
			return unix.Openat(cur, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		})
		if err != nil {
			unix.Close(cur)
			return -1, fmt.Errorf("open: %w", err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			unix.Close(cur)
			return -1, fmt.Errorf("fstat: %w", err)
		}
		next := joinPath(where, name)
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			links++
			target, err := readlinkFd(fd)
			unix.Close(fd)
			if err == nil && links > maxLinks {
				err = unix.ELOOP
			}
			if err != nil {
				unix.Close(cur)
				return -1, fmt.Errorf("open: %w", err)
			}
			if st.Uid != 0 {
				who = addPrincipal(who, principal{st.Uid})
			}
			if strings.HasPrefix(target, "/") {
				unix.Close(cur)
				if cur, err = unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
					return -1, fmt.Errorf("open: %w", err)
				}
				where = "/"
			}
			rest = append(components(target), rest...)
			continue
		}
		bit := uint32(1)
		if len(rest) == 0 {
			bit = 4
		}
		// Only a regular file's content is read; other types are refused
		// later by type, with a clearer message.
		if (len(rest) > 0 || st.Mode&unix.S_IFMT == unix.S_IFREG) && !may(who, &st, bit) {
			unix.Close(fd)
			unix.Close(cur)
			verb := "search"
			if bit == 4 {
				verb = "read"
			}
			return -1, fmt.Errorf("%w: it leads to %s, which the link's owner (uid %d) may not %s", ErrSymlinkRefused, next, refusedUID(who, &st, bit), verb)
		}
		unix.Close(cur)
		cur, where = fd, next
	}
	return cur, nil
}

func refusedUID(who []principal, st *unix.Stat_t, bit uint32) uint32 {
	for _, p := range who {
		if !may([]principal{p}, st, bit) {
			return p.uid
		}
	}
	return 0
}

func addPrincipal(who []principal, p principal) []principal {
	for _, q := range who {
		if q == p {
			return who
		}
	}
	return append(who, p)
}

func components(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

func joinPath(dir, name string) string {
	switch {
	case name == "..":
		if i := strings.LastIndexByte(strings.TrimSuffix(dir, "/"), '/'); i > 0 {
			return dir[:i]
		}
		return "/"
	case dir == "/":
		return "/" + name
	case dir == ".":
		return name
	}
	return dir + "/" + name
}

func readlinkFd(fd int) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		if len(buf) >= 1<<16 {
			return "", unix.ENAMETOOLONG
		}
		buf = make([]byte, 2*len(buf))
	}
}

// resolvedPath is the path with every symbolic link resolved under the
// rule of [resolve]; it names a directory the caller then walks.
func resolvedPath(path string) (string, error) {
	fd, err := openPath(path)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	n, err := unix.Readlink("/proc/self/fd/"+strconv.Itoa(fd), buf)
	if err != nil || n == len(buf) {
		return "", fmt.Errorf("resolve: cannot read /proc/self/fd: %v", err)
	}
	return string(buf[:n]), nil
}

func identityOfUnix(st *unix.Stat_t) identity {
	return identity{
		dev:   st.Dev,
		ino:   st.Ino,
		size:  st.Size,
		mtime: st.Mtim.Nano(),
		ctim:  st.Ctim.Nano(),
		nlink: uint64(st.Nlink),
	}
}

// pathIdentity stats path (following links) for the check after a read.
func pathIdentity(path string) (identity, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return identity{}, false
	}
	return identityOfUnix(&st), true
}
