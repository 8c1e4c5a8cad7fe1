package logfile

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// smallFS mounts a 64 KiB tmpfs for the test (root only) and returns its path.
func smallFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file into dir until the file system is full, and returns it.
func fill(t *testing.T, dir string) string {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 100)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return name
		}
	}
}

func tornFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.torn-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestWriterDiskFull appends until a real file system is full: the error
// says so, no half-written record stays in the log, no empty .torn-* file
// is left behind, and once there is room again the writer carries on.
func TestWriterDiskFull(t *testing.T) {
	ctx := context.Background()
	dir := smallFS(t)
	path := filepath.Join(dir, "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	// Leave room for a few records: fill, then free a little.
	filler := fill(t, dir)
	fi, _ := os.Stat(filler)
	if err := os.Truncate(filler, fi.Size()-6000); err != nil {
		t.Fatal(err)
	}
	var err error
	written := 0
	for i := 0; i < 1000; i++ {
		if _, err = w.Append(ctx, 23, ev("/"+strings.Repeat("x", 40)+string(rune('a'+i%26)))); err != nil {
			break
		}
		written++
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "full") {
		t.Fatalf("Append on a full disk = %v, want ENOSPC naming %s and saying the file system is full", err, path)
	}
	if written == 0 {
		t.Fatal("no record fitted: the test leaves too little room")
	}
	// Again, while still full: the same clear error, and nothing left behind.
	if _, err := w.Append(ctx, 23, ev("/again")); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("second Append on a full disk = %v, want ENOSPC", err)
	}
	if m := tornFiles(t, dir); len(m) != 0 {
		t.Errorf("left behind %v", m)
	}
	res, err := Check(ctx, path, f, allBanks, 23, "boot-a")
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != written || res.TornBytes != 0 || len(res.Pending) != 0 {
		t.Errorf("Check = %d records, %d torn bytes, pending %v; want the %d written, nothing torn or pending", res.Records, res.TornBytes, res.Pending, written)
	}
	// Room again: the writer carries on.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, 23, ev("/after")); err != nil {
		t.Fatalf("Append after freeing space: %v", err)
	}
	checkAgrees(t, path, f, written+1)
}

// TestTornTailOnFullDisk opens a log that ends in a torn record on a full
// file system: moving it aside fails with a clear error, and no empty
// .torn-* file is left behind.
func TestTornTailOnFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := smallFS(t)
	path := filepath.Join(dir, "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	if _, err := w.Append(ctx, 23, ev("/a")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	lf, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	lf.WriteString("\x1e{\"recnum\":1,\"pcr\":23,\"dig")
	lf.Close()
	fill(t, dir)
	_, _, err = OpenWriter(ctx, path, f, WriterOptions{Banks: allBanks, BootID: "boot-a", PCR: 23})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "torn record") {
		t.Errorf("OpenWriter with a torn tail on a full disk = %v, want ENOSPC about the torn record", err)
	}
	if m := tornFiles(t, dir); len(m) != 0 {
		t.Errorf("left behind %v", m)
	}
}

// TestWriterImmutableLog makes the log immutable (chattr +i) under an open
// writer: Append fails loudly, says why, and extends nothing.
func TestWriterImmutableLog(t *testing.T) {
	if _, err := exec.LookPath("chattr"); err != nil {
		t.Skip("chattr not installed")
	}
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.log")
	f := newFake()
	w, _ := openW(t, path, f)
	if _, err := w.Append(ctx, 23, ev("/a")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		t.Skipf("chattr +i (needs CAP_LINUX_IMMUTABLE and a file system with the flag): %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", path).Run() })
	extends := f.extends
	_, err := w.Append(ctx, 23, ev("/b"))
	if !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "immutable") || !strings.Contains(err.Error(), "nothing was recorded") {
		t.Errorf("Append to an immutable log = %v, want EPERM saying the log is immutable and nothing was recorded", err)
	}
	if f.extends != extends {
		t.Error("Append to an immutable log extended the PCR")
	}
	if err := exec.Command("chattr", "-i", path).Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, 23, ev("/b")); err != nil {
		t.Errorf("Append once the log is writable again: %v", err)
	}
	checkAgrees(t, path, f, 2)
}
