package policy_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/eventlog/logfile"
	"github.com/rimon-dev/rimon/internal/testtpm"
	"github.com/rimon-dev/rimon/policy"
)

func sha(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }

// roundTrip writes f, parses it back and checks that the reference holds
// exactly the paths of f.Files and f.Images, each with its digests (in any
// order) and each literal: a path with pattern characters matches itself
// and nothing else. It returns the file's text.
func roundTrip(t *testing.T, f policy.RefFile) string {
	t.Helper()
	var b bytes.Buffer
	if err := policy.WriteReference(&b, f); err != nil {
		t.Fatal(err)
	}
	ref, err := policy.ParseReference("generated.yaml", bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	for _, sec := range []struct {
		name    string
		want    map[string][]string
		entries []policy.RefEntry
	}{{"files", f.Files, ref.Files}, {"images", f.Images, ref.Images}} {
		if len(sec.entries) != len(sec.want) {
			t.Errorf("%s: %d entries read back, %d written\n%s", sec.name, len(sec.entries), len(sec.want), b.String())
		}
		for path, want := range sec.want {
			e, ok := policy.Lookup(sec.entries, path)
			if !ok {
				t.Errorf("%s: %q not read back\n%s", sec.name, path, b.String())
				continue
			}
			if e.Pattern != nil && e.Pattern.Match(path+"x") {
				t.Errorf("%s: %q was read back as a pattern that matches %q too", sec.name, path, path+"x")
			}
			if d := cmp.Diff(sorted(want), sorted(e.Allowed)); d != "" {
				t.Errorf("%s: %s: digests (-written +read):\n%s", sec.name, path, d)
			}
		}
	}
	return b.String()
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestReferenceFromLogRoundTrip: a log written through a (simulated) TPM
// becomes a reference file that parses back to what the log records last
// for each present path: a later digest replaces an earlier one, a deleted
// path is gone, a path with pattern characters stays literal, an image
// keeps its manifest and config digests.
func TestReferenceFromLogRoundTrip(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.log")
	w, _, err := logfile.OpenWriter(ctx, path, testtpm.Open(t), logfile.WriterOptions{Banks: []crypto.Hash{crypto.SHA256}, PCR: 23, BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	manifest, config := "sha256:"+sha("manifest"), "sha256:"+sha("config")
	for _, e := range []eventlog.Event{
		{Kind: "file", Path: "/usr/bin/a", SHA256: sha("a1"), Reason: "initial"},
		{Kind: "file", Path: "/usr/bin/b", SHA256: sha("b"), Reason: "initial"},
		{Kind: "file", Path: "/usr/bin/a", SHA256: sha("a2"), Reason: "changed"},
		{Kind: "file", Path: "/usr/bin/b", Reason: "deleted"},
		{Kind: "file", Path: "/opt/odd[1]*.bin", SHA256: sha("odd"), Reason: "initial"},
		{Kind: "image", Path: "/var/lib/images/web.tar", SHA256: sha("tar"), Reason: "initial",
			Extra: []eventlog.Field{{Key: "config_digest", Str: config}, {Key: "manifest_digest", Str: manifest}}},
		// A set of images (two configs) with a sha512 manifest: only the
		// record's sha256 can be listed.
		{Kind: "image", Path: "/var/lib/images/set", SHA256: sha("set"), Reason: "initial",
			Extra: []eventlog.Field{{Key: "config_digest", Str: config + ",sha256:" + sha("c2")}, {Key: "manifest_digest", Str: "sha512:" + strings.Repeat("ab", 64)}}},
		// Not measured: no digest to approve, whatever came before.
		{Kind: "file", Path: "/usr/bin/c", SHA256: sha("c"), Reason: "initial"},
		{Kind: eventlog.KindUnmeasured, Path: "/usr/bin/c", Reason: "changed",
			Extra: []eventlog.Field{{Key: "cause", Str: "unstable"}, {Key: "error", Str: "kept changing"}}},
		{Kind: eventlog.KindUnmeasured, Reason: "created",
			Extra: []eventlog.Field{{Key: "cause", Str: "name_not_utf8"}, {Key: "error", Str: "not UTF-8"}, {Key: "path_escaped", Str: "/usr/bin/evil%FF"}}},
		// Measured again after being unmeasured: approved with its digest.
		{Kind: eventlog.KindUnmeasured, Path: "/usr/bin/d", Reason: "changed",
			Extra: []eventlog.Field{{Key: "cause", Str: "unreadable"}, {Key: "error", Str: "permission denied"}}},
		{Kind: "file", Path: "/usr/bin/d", SHA256: sha("d"), Reason: "changed"},
	} {
		if _, err := w.Append(ctx, 23, e); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	recs, _, err := logfile.Snapshot(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	f := policy.ReferenceFromLog("the log "+path, recs)
	want := policy.RefFile{
		Files:  map[string][]string{"/usr/bin/a": {sha("a2")}, "/opt/odd[1]*.bin": {sha("odd")}, "/usr/bin/d": {sha("d")}},
		Images: map[string][]string{"/var/lib/images/web.tar": {"sha256:" + sha("tar"), manifest, config}, "/var/lib/images/set": {"sha256:" + sha("set")}},
	}
	if d := cmp.Diff(want.Files, f.Files); d != "" {
		t.Errorf("files (-want +got):\n%s", d)
	}
	if d := cmp.Diff(sorted(want.Images["/var/lib/images/web.tar"]), sorted(f.Images["/var/lib/images/web.tar"])); d != "" || len(f.Images) != 2 ||
		!slices.Equal(f.Images["/var/lib/images/set"], want.Images["/var/lib/images/set"]) {
		t.Errorf("images %v, want %v", f.Images, want.Images)
	}
	text := roundTrip(t, f)
	if !strings.HasPrefix(text, "# generated by rimon reference generate from the log "+path+"\n") {
		t.Errorf("comment:\n%s", text)
	}
	for _, c := range []string{"# not approved: /usr/bin/c was not measured (unstable)\n", "# not approved: /usr/bin/evil%FF (escaped) was not measured (name_not_utf8)\n"} {
		if !strings.Contains(text, c) {
			t.Errorf("the reference does not say %q:\n%s", c, text)
		}
	}
}

// TestReferenceFromDirRoundTrip: the regular files below a directory (not
// the directory, not a symbolic link) with their SHA-256 digests parse
// back as written.
func TestReferenceFromDirRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"a": "one", "sub/b": "two", "sub/c?": "three"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	abs, paths, err := policy.RegularFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	digests := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		digests[p] = sha(string(b))
	}
	f := policy.ReferenceFromDigests("the directory "+abs, digests)
	want := map[string][]string{
		filepath.Join(abs, "a"): {sha("one")}, filepath.Join(abs, "sub/b"): {sha("two")}, filepath.Join(abs, "sub/c?"): {sha("three")},
	}
	if d := cmp.Diff(want, f.Files); d != "" || len(f.Images) != 0 {
		t.Errorf("files (-want +got):\n%s\nimages %v", d, f.Images)
	}
	roundTrip(t, f)
	if _, _, err := policy.RegularFiles(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing directory: no error")
	}
}
