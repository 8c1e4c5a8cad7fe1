package sdunit

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func write(t *testing.T, p, s string) string {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFind(t *testing.T) {
	root := t.TempDir()
	etc, lib := filepath.Join(root, "etc"), filepath.Join(root, "lib")
	path := []string{etc, lib}
	unit := write(t, lib+"/web.service", "[Unit]\nDescription=x\n[Service]\nExecStartPre=/bin/true\nExecStart=-/usr/bin/web \\\n  --port 80\n[Install]\nExecStart=/not/this\n")
	a := write(t, lib+"/web.service.d/10-a.conf", "[Service]\nExecStart=\nExecStart=@/opt/web/bin/web-v2 web --x\n")
	write(t, lib+"/web.service.d/20-b.conf", "[Service]\nEnvironment=A=1\n")
	b := write(t, etc+"/web.service.d/20-b.conf", "[Service]\nExecStart=\"/opt/with space/web\" y\n")
	c := write(t, lib+"/service.d/99-all.conf", "[Service]\nLimitNOFILE=1024\n")
	u, err := Find("web", path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Unit{Name: "web.service", File: unit, DropIns: []string{a, b, c}, Exec: []string{"/opt/web/bin/web-v2", "/opt/with space/web"}}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Errorf("Find (-want +got):\n%s", diff)
	}
}

func TestFindErrors(t *testing.T) {
	root := t.TempDir()
	if _, err := Find("none.service", []string{root}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find(missing) = %v, want ErrNotFound", err)
	}
	write(t, root+"/noexec.service", "[Service]\nType=oneshot\n")
	if _, err := Find("noexec.service", []string{root}); err == nil {
		t.Error("Find(unit without ExecStart) succeeded")
	}
	if _, err := Find("../etc/passwd", []string{root}); err == nil {
		t.Error("Find accepted a name with /")
	}
}
