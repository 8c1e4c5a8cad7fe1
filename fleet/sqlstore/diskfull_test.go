package sqlstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rimon-dev/rimon/fleet"
	"golang.org/x/sys/unix"
)

// smallFS mounts a tmpfs of size bytes for the test (skipped when the
// test may not mount), unmounted at the end.
func smallFS(t *testing.T, size int) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			t.Skipf("mounting a tmpfs is not permitted here: %v", err)
		}
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}

// TestDiskFull: with the database's file system full, a result that
// changes the state fails with a clear error and nothing of it is stored
// (no state, no transition, no delivery, no observation); with space
// again, the same result is stored.
func TestDiskFull(t *testing.T) {
	dir := smallFS(t, 4<<20)
	dsn := "sqlite:" + filepath.Join(dir, "verifier.db")
	s := openStore(t, dsn)
	if err := s.SetEndpoints(bg, []string{"https://hooks.example/a"}); err != nil {
		t.Fatal(err)
	}
	a := mustAdd(t, s, "a")
	a = save(t, s, a, fleet.Untrusted)
	h0, _ := s.History(bg, "a", 0)
	d0, _ := s.Deliveries(bg, "", 0)
	o0, _ := s.Observations(bg, a.ID)

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	var obs []fleet.Observation
	for i := 0; i < 2000; i++ {
		obs = append(obs, fleet.Observation{Path: fmt.Sprintf("/usr/lib/some/long/directory/name/file-%04d-%s", i, strings.Repeat("x", 100)),
			Kind: "file", SHA256: fmt.Sprintf("%064x", i), Record: uint64(i), Latest: true})
	}
	at := t0.Add(time.Hour)
	r := fleet.Result{AgentID: a.ID, Version: a.Version, At: at, Status: fleet.Trusted, Reason: "approved",
		NextDue: at.Add(time.Minute), Observations: obs, Boot: &fleet.Boot{Known: true, State: []byte(`{}`)}}
	err := s.SaveResult(bg, r)
	if !errors.Is(err, ErrDiskFull) || !strings.Contains(err.Error(), "disk is full") || !strings.Contains(err.Error(), "nothing of it was stored") {
		t.Fatalf("SaveResult on a full disk = %v, want ErrDiskFull saying nothing was stored", err)
	}
	t.Logf("SaveResult on a full disk: %v", err)
	got := mustAgent(t, s, "a")
	if got.Status != fleet.Untrusted || got.Version != a.Version || got.Boot.Known {
		t.Errorf("after the failed save: state %s version %d (was %d) boot %+v", got.Status, got.Version, a.Version, got.Boot)
	}
	h1, _ := s.History(bg, "a", 0)
	d1, _ := s.Deliveries(bg, "", 0)
	o1, _ := s.Observations(bg, a.ID)
	if len(h1) != len(h0) || len(d1) != len(d0) || len(o1) != len(o0) {
		t.Errorf("the failed save left %d/%d transitions, %d/%d deliveries, %d/%d observations", len(h1), len(h0), len(d1), len(d0), len(o1), len(o0))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveResult(bg, r); err != nil {
		t.Fatalf("SaveResult with space again = %v", err)
	}
	got = mustAgent(t, s, "a")
	if got.Status != fleet.Trusted || !got.Since.Equal(at) {
		t.Errorf("after space returned: %s since %v", got.Status, got.Since)
	}
	if h, _ := s.History(bg, "a", 0); len(h) != len(h0)+1 {
		t.Errorf("history has %d entries, want %d", len(h), len(h0)+1)
	}
	if o, _ := s.Observations(bg, a.ID); len(o) != len(o0)+len(obs) {
		t.Errorf("%d observations, want %d", len(o), len(o0)+len(obs))
	}
	var res string
	if err := s.r.QueryRow(`PRAGMA integrity_check`).Scan(&res); err != nil || res != "ok" {
		t.Errorf("integrity_check = %q, %v", res, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
}
