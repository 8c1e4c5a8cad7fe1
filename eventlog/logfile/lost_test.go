package logfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriterNoticesLostLog deletes or replaces the log under an open
// writer: the writer must refuse to append to a file nobody can read,
// where it used to carry on and report that log and TPM agree.
func TestWriterNoticesLostLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, path string)
		want string
	}{
		{"deleted", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "was deleted"},
		{"replaced", func(t *testing.T, path string) {
			other := path + ".new"
			if err := os.WriteFile(other, nil, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}, "was replaced"},
		{"deleted_and_recreated", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, nil, 0o640); err != nil {
				t.Fatal(err)
			}
		}, "was replaced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "m.log")
			f := newFake()
			w, _ := openW(t, path, f)
			if _, err := w.Append(ctx, 23, ev("/a")); err != nil {
				t.Fatal(err)
			}
			tc.lose(t, path)
			extends := f.extends
			_, err := w.Append(ctx, 23, ev("/b"))
			if !errors.Is(err, ErrLogLost) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("Append after the log %s = %v, want ErrLogLost saying %q and naming %s", tc.name, err, tc.want, path)
			}
			if f.extends != extends {
				t.Errorf("Append to a lost log extended the PCR")
			}
			if err := w.Verify(ctx); !errors.Is(err, ErrLogLost) {
				t.Errorf("Verify after the log %s = %v, want ErrLogLost", tc.name, err)
			}
		})
	}
}
