package policy

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestExpand(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"etc/app.conf", "bin/b", "bin/a", "bin/sub/c", "bin/x.tmp", "bin/cache/blob",
		"conf.d/one.conf", "conf.d/readme.txt", "static/index.html", "target"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(dir+"/target", dir+"/bin/link"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(dir+"/bin/fifo", 0o644); err != nil {
		t.Fatal(err)
	}
	src := `settings:
  symlinks: SYMLINKS
measure:
  - file: $DIR/etc/app.conf
  - file: $DIR/etc/missing.conf
  - dir: $DIR/bin
    exclude: ["*.tmp", "$DIR/bin/cache/**"]
  - glob: $DIR/conf.d/*.conf
  - tree: $DIR/static
  - image: $DIR/images/web.tar
`
	for _, tc := range []struct {
		symlinks string
		keep     []string
		want     string
	}{
		{"follow", nil, "file /bin/a,file /bin/b,file /bin/link,file /bin/sub/c,file /conf.d/one.conf," +
			"file /etc/app.conf,file /etc/missing.conf,image /images/web.tar,tree /static"},
		{"skip", nil, "file /bin/a,file /bin/b,file /bin/sub/c,file /conf.d/one.conf," +
			"file /etc/app.conf,file /etc/missing.conf,image /images/web.tar,tree /static"},
		// Kept: a deleted file still covered, a file in a tree (the tree
		// is the target), a path no rule covers, an excluded one.
		{"skip", []string{dir + "/bin/gone", dir + "/static/index.html", dir + "/elsewhere", dir + "/bin/old.tmp"},
			"file /bin/a,file /bin/b,file /bin/gone,file /bin/sub/c,file /conf.d/one.conf," +
				"file /etc/app.conf,file /etc/missing.conf,image /images/web.tar,tree /static"},
	} {
		y := strings.NewReplacer("$DIR", dir, "SYMLINKS", tc.symlinks).Replace(src)
		p, err := Parse("test.yaml", strings.NewReader(y))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tg := range Expand(p, tc.keep...) {
			got = append(got, string(tg.Kind)+" "+strings.TrimPrefix(tg.Path, dir))
			if tg.Rule == nil {
				t.Errorf("%s: no rule", tg.Path)
			}
		}
		if g := strings.Join(got, ","); g != tc.want {
			t.Errorf("symlinks %s, keep %v:\n got %s\nwant %s", tc.symlinks, tc.keep, g, tc.want)
		}
	}
}
