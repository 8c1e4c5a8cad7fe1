package target

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/measure"
	"github.com/rimon-dev/rimon/ociimage"
)

func sum(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func write(t *testing.T, p, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// The podman exports of ociimage/testdata (see its SOURCES.md): the arm64
// image's manifest digest, as podman names it.
const (
	multiArch     = "../../ociimage/testdata/podman/multi-arch-oci"
	arm64Manifest = "sha256:fed4612d88555f2361759bf4c4ae7b47859590e9aefeb7c83897140959ba8a02"
)

func TestMeasureByKind(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := write(t, dir+"/a", "hello")
	write(t, dir+"/tree/x", "x")
	write(t, dir+"/tree/sub/y", "y")

	r, err := Measure(ctx, File, file, Options{})
	if err != nil || r.Kind != File || r.Path != file || r.Digest != sum("hello") || r.Size != 5 || r.Extra != nil {
		t.Errorf("file: %+v, %v", r, err)
	}
	r, err = Measure(ctx, Tree, dir+"/tree", Options{})
	tr, terr := measure.Tree(ctx, dir+"/tree", 0)
	if err != nil || terr != nil || r.Kind != Tree || r.Digest != tr.Digest.String() || r.Size != 4 {
		// x, sub, sub/y and the root itself.
		t.Errorf("tree: %+v, %v (measure.Tree: %s, %d entries, %v)", r, err, tr.Digest, len(tr.Entries), terr)
	}
	r, err = Measure(ctx, Image, multiArch, Options{Image: ociimage.Options{Platform: "linux/arm64/v8"}})
	if err != nil || r.Kind != Image || "sha256:"+r.Digest != arm64Manifest {
		t.Errorf("image, arm64: %+v, %v; want the digest %s", r, err, arm64Manifest)
	}
	if !strings.Contains(fieldsOf(r), "manifest_digest="+arm64Manifest) || !strings.Contains(fieldsOf(r), "image_format=oci-layout") {
		t.Errorf("image fields: %s", fieldsOf(r))
	}
	all, err := Measure(ctx, Image, multiArch, Options{})
	if err != nil || all.Digest == r.Digest {
		t.Errorf("image without a platform: %+v, %v; want another digest than arm64's", all, err)
	}

	// The budgets apply to files, and to each file of a tree.
	big := Options{Budget: measure.Options{MaxSize: 1}}
	if _, err := Measure(ctx, File, file, big); !errors.Is(err, measure.ErrTooLarge) {
		t.Errorf("file over budget: %v", err)
	}
	write(t, dir+"/tree/big", "more than one byte")
	if _, err := Measure(ctx, Tree, dir+"/tree", big); !errors.Is(err, measure.ErrTooLarge) {
		t.Errorf("tree with a file over budget: %v", err)
	}
	// Errors stay unwrapped for callers to branch on.
	if _, err := Measure(ctx, File, dir+"/missing", Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Measure(ctx, Tree, file, Options{}); !errors.Is(err, measure.ErrNotDirectory) {
		t.Errorf("tree of a file: %v", err)
	}
	if _, err := Measure(ctx, "glob", file, Options{}); err == nil || !strings.Contains(err.Error(), `unknown kind "glob"`) {
		t.Errorf("unknown kind: %v", err)
	}
}

func fieldsOf(r Result) string {
	var s []string
	for _, f := range r.Extra {
		s = append(s, f.Key+"="+f.Str)
	}
	return strings.Join(s, " ")
}

func TestAllKeepsOrder(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var ts []Target
	var want []string
	for i := range 5000 { // more than two batches of files
		if i == 2500 {
			write(t, dir+"/tree/f", "f")
			ts = append(ts, Target{Tree, dir + "/tree"})
			want = append(want, "")
		}
		c := fmt.Sprint(i)
		ts = append(ts, Target{File, write(t, fmt.Sprintf("%s/f/%d/%d", dir, i%10, i), c)})
		want = append(want, sum(c))
	}
	ts = append(ts, Target{File, dir + "/missing"})
	var calls []int
	outs := All(ctx, ts, Options{Budget: measure.Options{Workers: 3}}, func(done int) { calls = append(calls, done) })
	if len(outs) != len(ts) {
		t.Fatalf("%d outcomes for %d targets", len(outs), len(ts))
	}
	for i, o := range outs {
		if o.Path != ts[i].Path || o.Kind != ts[i].Kind {
			t.Fatalf("outcome %d is of %s %s, want %s %s", i, o.Kind, o.Path, ts[i].Kind, ts[i].Path)
		}
	}
	for i, w := range want {
		if w != "" && (outs[i].Digest != w || outs[i].Err != nil) {
			t.Fatalf("outcome %d (%s): digest %s, %v; want %s", i, outs[i].Path, outs[i].Digest, outs[i].Err, w)
		}
	}
	if outs[2500].Err != nil || outs[2500].Kind != Tree || outs[2500].Size != 2 {
		t.Errorf("the tree: %+v", outs[2500])
	}
	if o := outs[len(outs)-1]; !errors.Is(o.Err, fs.ErrNotExist) {
		t.Errorf("missing file: %+v", o)
	}
	if got := fmt.Sprint(calls); got != "[2048 4096 5001]" {
		t.Errorf("progress calls %v, want after 2048, 4096 and 5001 files", calls)
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	for i, o := range All(ctx2, ts[:3], Options{}, nil) {
		if !errors.Is(o.Err, context.Canceled) {
			t.Errorf("after the context ended, outcome %d: %+v", i, o)
		}
	}
}
