package measure

import (
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openDir returns a fresh directory that every user may search, as a
// watched system directory is.
func openDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return dir
}

const nobody = 65534

func sumOf(s string) Digest { return Digest(sha256.Sum256([]byte(s))) }

// TestSymlinkRule checks the rule of docs/THREAT-MODEL.md: a link is
// followed only to what its owner could read. Links are chowned to nobody,
// as a user without privileges would have made them.
func TestSymlinkRule(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chowning links to another user needs root")
	}
	dir := openDir(t)
	secret := filepath.Join(dir, "secret")
	write(t, secret, "1234")
	os.Chmod(secret, 0o600)
	public := filepath.Join(dir, "public")
	write(t, public, "hello")
	private := filepath.Join(dir, "private")
	os.Mkdir(private, 0o700)
	hidden := filepath.Join(private, "readable")
	write(t, hidden, "x")
	own := filepath.Join(dir, "own")
	write(t, own, "mine")
	os.Chmod(own, 0o600)
	os.Chown(own, nobody, nobody)

	// Group-readable files: 0640 and 0604, of root and group 4.
	groupOnly := filepath.Join(dir, "group-only")
	write(t, groupOnly, "4242")
	os.Chmod(groupOnly, 0o640)
	os.Chown(groupOnly, 0, 4)
	groupDenied := filepath.Join(dir, "group-denied")
	write(t, groupDenied, "4343")
	os.Chmod(groupDenied, 0o604)
	os.Chown(groupDenied, 0, 4)

	linkAs := func(name, target string, uid, gid int) string {
		p := filepath.Join(dir, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := func(name, target string, uid int) string { return linkAs(name, target, uid, uid) }
	for _, tc := range []struct {
		name string
		path string
		want string // content, or "" for a refusal
	}{
		{"users_link_to_root_only_file", link("l1", secret, nobody), ""},
		{"users_relative_link_to_root_only_file", link("l2", "secret", nobody), ""},
		{"users_link_through_private_dir", link("l3", hidden, nobody), ""},
		{"users_link_to_users_link_to_secret", link("l4", "l1", nobody), ""},
		{"roots_link_to_users_link_to_secret", link("l5", "l1", 0), ""},
		{"users_link_to_public_file", link("l6", public, nobody), "hello"},
		{"users_link_to_own_file", link("l7", own, nobody), "mine"},
		{"roots_link_to_root_only_file", link("l8", secret, 0), "1234"},
		{"users_directory_link_on_the_way", filepath.Join(link("l9", dir, nobody), "secret"), ""},
		{"roots_directory_link_on_the_way", filepath.Join(link("l10", private, 0), "readable"), "x"},
		// A setgid directory gives a user's link the directory's group: that
		// group is not the user's, and proves nothing.
		{"users_link_with_the_files_group", linkAs("l11", groupOnly, nobody, 4), ""},
		// Group bits deny what other bits allow: a member of the group is
		// denied by the kernel, and rimon cannot tell who is a member.
		{"users_link_to_file_its_group_may_not_read", link("l12", groupDenied, nobody), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := File(context.Background(), tc.path)
			if tc.want == "" {
				if !errors.Is(err, ErrSymlinkRefused) || !strings.Contains(err.Error(), "uid 65534") {
					t.Errorf("File(%s) = %v, %v; want ErrSymlinkRefused naming uid 65534", tc.path, r.Digest, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("File(%s) = %v", tc.path, err)
			}
			if r.Digest != sumOf(tc.want) {
				t.Errorf("File(%s) measured something else than %q", tc.path, tc.want)
			}
		})
	}
}

// TestLinkToDeviceIsNotOpened follows links to a FIFO and to a character
// device: both are refused by type, and the FIFO is never opened.
func TestLinkToDeviceIsNotOpened(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Symlink(fifo, filepath.Join(dir, "to-fifo"))
	os.Symlink("/dev/ptmx", filepath.Join(dir, "to-ptmx"))
	// A writer waits on the FIFO: had it been opened for reading, even
	// briefly, the writer's open would return.
	opened := make(chan struct{})
	go func() {
		if fd, err := syscall.Open(fifo, syscall.O_WRONLY, 0); err == nil {
			syscall.Close(fd)
		}
		close(opened)
	}()
	for _, p := range []string{"to-fifo", "to-ptmx"} {
		_, err := File(context.Background(), filepath.Join(dir, p))
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("File(%s) = %v, want ErrNotRegular", p, err)
		}
	}
	select {
	case <-opened:
		t.Error("the FIFO behind a link was opened")
	default:
	}
	// Release the writer.
	if fd, err := syscall.Open(fifo, syscall.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
		<-opened
		syscall.Close(fd)
	}
}

func TestBudgets(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "sparse")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 40) // 1 TiB, sparse
	f.Close()
	_, err = FileWith(context.Background(), big, Options{MaxSize: 1 << 30})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "1099511627776 bytes") {
		t.Errorf("FileWith(1 TiB, MaxSize 1 GiB) = %v, want ErrTooLarge with the size", err)
	}
	_, err = FileWith(context.Background(), big, Options{MaxTime: 50 * time.Millisecond})
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("FileWith(1 TiB, MaxTime 50ms) = %v, want ErrTimeout", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err = FileWith(ctx, big, Options{MaxTime: time.Minute}); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Errorf("FileWith(cancelled) = %v, want context.Canceled, not a timeout", err)
	}
	small := filepath.Join(dir, "small")
	write(t, small, "abc")
	if r, err := FileWith(context.Background(), small, Options{MaxSize: 3, MaxTime: time.Minute}); err != nil || r.Digest != sumOf("abc") {
		t.Errorf("FileWith(3 bytes, MaxSize 3) = %v, %v", r.Digest, err)
	}
	// A tree holding a file over the budget is refused with the same error.
	os.Mkdir(filepath.Join(dir, "tree"), 0o755)
	os.Rename(big, filepath.Join(dir, "tree", "sparse"))
	if _, err := TreeWith(context.Background(), filepath.Join(dir, "tree"), Options{MaxSize: 1 << 30}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("TreeWith(tree with 1 TiB file) = %v, want ErrTooLarge", err)
	}
}

// TestDeletedFileIsNotHashed deletes a 1 TiB sparse file while it is read:
// the read stops and the path is reported missing, rather than the whole
// terabyte hashed through the open descriptor (about ten minutes).
func TestDeletedFileIsNotHashed(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "sparse")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(1 << 40)
	f.Close()
	done := make(chan error, 1)
	go func() { _, err := File(context.Background(), big); done <- err }()
	for !openHere(big) {
		select {
		case err := <-done:
			t.Fatalf("File returned before it was deleted: %v", err)
		default:
			time.Sleep(time.Millisecond)
		}
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("File(deleted while read) = %v, want not exist", err)
	}
}

// openHere reports whether this process has path open for reading.
func openHere(path string) bool {
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == path {
			return true
		}
	}
	return false
}

// TestTreeRootLink measures a tree through a symbolic link to it: the tree
// below is measured, as for the directory itself (docs/FORMAT.md, section 3).
func TestTreeRootLink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	os.Mkdir(real, 0o755)
	write(t, filepath.Join(real, "f"), "content")
	os.Symlink("real", filepath.Join(dir, "link"))
	want, err := Tree(context.Background(), real, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Tree(context.Background(), filepath.Join(dir, "link"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want.Digest || len(got.Entries) != 2 || got.Path != filepath.Join(dir, "link") {
		t.Errorf("Tree(link) = %s with %d entries at %s; want %s with 2 entries, under the link's path",
			got.Digest, len(got.Entries), got.Path, want.Digest)
	}
}
