package measure

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFileDigest(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 1, 4095, 1 << 20, 3<<20 + 7} {
		p := filepath.Join(dir, "f")
		data := strings.Repeat("x", size)
		write(t, p, data)
		r, err := File(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256([]byte(data)); r.Digest != want || r.Size != int64(size) {
			t.Errorf("File(%d bytes) = %s, %d; want %x, %d", size, r.Digest, r.Size, want, size)
		}
	}
}

func TestFileMatchesSha256sum(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	write(t, p, "hello\n")
	out, err := exec.Command("sha256sum", p).Output()
	if err != nil {
		t.Skipf("sha256sum: %v", err)
	}
	r, err := File(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out))[0]; got != r.Digest.String() {
		t.Errorf("File = %s, sha256sum = %s", r.Digest, got)
	}
}

func TestFileRefuses(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		is         error
		text       string
	}{
		{"missing", filepath.Join(dir, "nope"), os.ErrNotExist, "no such file"},
		{"directory", dir, ErrNotRegular, "it is a directory"},
		{"fifo_without_writer", fifo, ErrNotRegular, "it is a FIFO"},
		{"device", "/dev/null", ErrNotRegular, "character device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := File(context.Background(), tc.path); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.text) || !strings.Contains(err.Error(), tc.path) {
					t.Errorf("File(%s) = %v, want %v mentioning %q and the path", tc.path, err, tc.is, tc.text)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("File(%s) blocked", tc.path)
			}
		})
	}
}

// TestFileChangingUnderRead appends to a file while it is hashed; File must
// never return a digest of a state the file was not in.
func TestFileChangingUnderRead(t *testing.T) {
	p := filepath.Join(t.TempDir(), "growing")
	write(t, p, strings.Repeat("a", 8<<20))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		for {
			select {
			case <-stop:
				return
			default:
				f.Write([]byte("b"))
			}
		}
	}()
	r, err := File(context.Background(), p)
	close(stop)
	<-done
	if err != nil {
		if !errors.Is(err, ErrUnstable) {
			t.Fatalf("File on a growing file = %v, want success or ErrUnstable", err)
		}
		return
	}
	// Whatever it returned must be the digest of the file's first r.Size bytes.
	data, _ := os.ReadFile(p)
	if int64(len(data)) < r.Size {
		t.Fatalf("File reported %d bytes, the file has %d", r.Size, len(data))
	}
	if want := sha256.Sum256(data[:r.Size]); r.Digest != want {
		t.Errorf("digest of a file that changed during the read is not the digest of any state it was in")
	}
}

func TestFilesKeepsOrder(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for i := 0; i < 50; i++ {
		p := filepath.Join(dir, strings.Repeat("n", i+1))
		write(t, p, p)
		paths = append(paths, p)
	}
	paths = append(paths, filepath.Join(dir, "missing"))
	out := Files(context.Background(), paths, 4)
	for i, o := range out[:50] {
		if o.Err != nil || o.Path != paths[i] || o.Digest != sha256.Sum256([]byte(paths[i])) {
			t.Errorf("outcome %d = %+v, want the digest of %s", i, o, paths[i])
		}
	}
	if out[50].Err == nil {
		t.Error("a missing file measured without error")
	}
}

type treeVector struct {
	Entries []struct {
		Rel        string  `json:"rel"`
		Type       string  `json:"type"`
		Perm       uint32  `json:"perm"`
		ContentHex *string `json:"content_hex"`
		Target     *string `json:"target"`
	} `json:"entries"`
	EncodingHex string `json:"encoding_hex"`
	Digest      string `json:"digest"`
}

// TestTreeKnownAnswer builds the tree of testdata/vectors/tree.json on disk
// and checks Tree against the digest computed by gen.py.
func TestTreeKnownAnswer(t *testing.T) {
	b, err := os.ReadFile("../testdata/vectors/tree.json")
	if err != nil {
		t.Fatal(err)
	}
	var v treeVector
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root")
	var chmods []func()
	for _, e := range v.Entries {
		p := filepath.Join(root, filepath.FromSlash(e.Rel))
		mode := os.FileMode(e.Perm & 0o777)
		switch e.Type {
		case "d":
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case "f":
			data, _ := hex.DecodeString(*e.ContentHex)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
		case "l":
			if err := os.Symlink(*e.Target, p); err != nil {
				t.Fatal(err)
			}
			continue
		case "p":
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		perm := e.Perm
		chmods = append(chmods, func() {
			m := mode
			if perm&0o4000 != 0 {
				m |= os.ModeSetuid
			}
			if perm&0o1000 != 0 {
				m |= os.ModeSticky
			}
			if err := os.Chmod(p, m); err != nil {
				t.Fatal(err)
			}
		})
	}
	for i := len(chmods) - 1; i >= 0; i-- {
		chmods[i]()
	}
	r, err := Tree(context.Background(), root, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(EncodeTree(r.Entries)); got != v.EncodingHex {
		gotB, _ := hex.DecodeString(got)
		wantB, _ := hex.DecodeString(v.EncodingHex)
		t.Errorf("tree encoding:\n%s\nwant:\n%s", gotB, wantB)
	}
	if r.Digest.String() != v.Digest {
		t.Errorf("Tree digest = %s, want %s", r.Digest, v.Digest)
	}
}

func TestTreeDetectsChanges(t *testing.T) {
	mk := func() string {
		root := t.TempDir()
		os.Mkdir(filepath.Join(root, "d"), 0o755)
		write(t, filepath.Join(root, "d", "f"), "content")
		os.Symlink("d/f", filepath.Join(root, "link"))
		return root
	}
	base := func(root string) Digest {
		r, err := Tree(context.Background(), root, 0)
		if err != nil {
			t.Fatal(err)
		}
		return r.Digest
	}
	ref := base(mk())
	if again := base(mk()); again != ref {
		t.Fatal("two identical trees have different digests")
	}
	for _, tc := range []struct {
		name string
		edit func(root string)
	}{
		{"content", func(r string) { write(t, filepath.Join(r, "d", "f"), "Content") }},
		{"mode", func(r string) { os.Chmod(filepath.Join(r, "d", "f"), 0o755) }},
		{"rename", func(r string) { os.Rename(filepath.Join(r, "d", "f"), filepath.Join(r, "d", "g")) }},
		{"new_empty_file", func(r string) { write(t, filepath.Join(r, "new"), "") }},
		{"new_empty_dir", func(r string) { os.Mkdir(filepath.Join(r, "e"), 0o755) }},
		{"link_target", func(r string) { os.Remove(filepath.Join(r, "link")); os.Symlink("d/g", filepath.Join(r, "link")) }},
		{"link_to_file", func(r string) { os.Remove(filepath.Join(r, "link")); write(t, filepath.Join(r, "link"), "d/f") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := mk()
			tc.edit(root)
			if base(root) == ref {
				t.Errorf("tree digest unchanged after %s", tc.name)
			}
		})
	}
}

func TestTreeRefusesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	write(t, p, "x")
	if _, err := Tree(context.Background(), p, 0); !errors.Is(err, ErrNotDirectory) {
		t.Errorf("Tree(file) = %v, want ErrNotDirectory", err)
	}
}
