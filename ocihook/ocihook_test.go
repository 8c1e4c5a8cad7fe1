package ocihook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/measure"
)

// TestLaunchVectors checks the normal form and the launch digest against
// testdata/vectors/launch.json, which gen.py computed from docs/FORMAT.md
// alone, and that every text gen.py refuses is refused here too.
func TestLaunchVectors(t *testing.T) {
	b, err := os.ReadFile("../testdata/vectors/launch.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []struct {
		Name, ID, Config, Normal string
		LaunchSHA256             string `json:"launch_sha256"`
		Refused                  bool
	}
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 10 {
		t.Fatalf("launch.json has %d vectors, want at least 10", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			cfg, err := ParseConfig("config.json", []byte(v.Config))
			if v.Refused {
				if err == nil || !errors.Is(err, ErrInput) {
					t.Fatalf("ParseConfig = %v, want an error wrapping ErrInput", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			normal, digest := cfg.Launch(v.ID)
			if string(normal) != v.Normal {
				t.Errorf("normal form:\n%s\nwant\n%s", normal, v.Normal)
			}
			if digest != v.LaunchSHA256 {
				t.Errorf("launch digest = %s, want %s", digest, v.LaunchSHA256)
			}
		})
	}
}

// TestLaunchNormalizes: what the runtime generates does not change the
// digest; what decides what the container does does.
func TestLaunchNormalizes(t *testing.T) {
	const id1 = "1111111111111111111111111111111111111111111111111111111111111111"
	const id2 = "2222222222222222222222222222222222222222222222222222222222222222"
	base := func(id string) string {
		return `{"root":{"path":"/storage/` + id + `"},"hostname":"` + id[:12] + `","process":{"args":["/app"],"env":["HOSTNAME=` + id[:12] + `","B=1","A=1"],"consoleSize":{"height":1,"width":2}},` +
			`"mounts":[{"destination":"/etc/hosts","source":"/run/` + id + `/hosts"},{"destination":"/etc/hostname","source":"/run/` + id + `/hostname"}],` +
			`"hooks":{"prestart":[{"path":"/x"}]},"annotations":{"created":"` + id + `"},"linux":{"cgroupsPath":"/x/` + id + `","namespaces":[{"type":"network","path":"/proc/77/ns/net"}]}}`
	}
	digest := func(cfg, id string) string {
		t.Helper()
		c, err := ParseConfig("config.json", []byte(cfg))
		if err != nil {
			t.Fatal(err)
		}
		_, d := c.Launch(id)
		return d
	}
	d1 := digest(base(id1), id1)
	other := strings.NewReplacer(`"B=1","A=1"`, `"A=1","B=1"`, `"/etc/hosts","source":"/run/`+id2+`/hosts"},{"destination":"/etc/hostname","source":"/run/`+id2+`/hostname"}`,
		`"/etc/hostname","source":"/run/`+id2+`/hostname"},{"destination":"/etc/hosts","source":"/run/`+id2+`/hosts"}`, "/proc/77/", "/proc/78/", `"height":1`, `"height":50`).Replace(base(id2))
	if d2 := digest(other, id2); d1 != d2 {
		t.Errorf("another start (id, host name, env order, unrelated mount order, namespace pid, console size): %s, want %s", d2, d1)
	}
	for name, edit := range map[string][2]string{
		"args":           {`"/app"`, `"/app","--debug"`},
		"env":            {`"A=1"`, `"A=2"`},
		"mount":          {`"/etc/hosts","source"`, `"/etc/hosts","options":["rw"],"source"`},
		"namespace_host": {`/proc/77/`, `/proc/1/`},
		"env_dup_order":  {`"B=1","A=1"`, `"A=2","B=1","A=1"`},
	} {
		if d := digest(strings.Replace(base(id1), edit[0], edit[1], 1), id1); d == d1 {
			t.Errorf("%s changed, the launch digest did not", name)
		}
	}
	// A name given twice keeps its order: A=2 then A=1 differs from A=1 then A=2.
	a := digest(strings.Replace(base(id1), `"B=1","A=1"`, `"A=2","A=1"`, 1), id1)
	b := digest(strings.Replace(base(id1), `"B=1","A=1"`, `"A=1","A=2"`, 1), id1)
	if a == b {
		t.Error("the order of two values of one variable does not change the digest")
	}
	// Nested mounts keep their order: which one shadows the other matters.
	n1 := digest(`{"root":{"path":"r"},"mounts":[{"destination":"/a"},{"destination":"/a/b"}]}`, "x")
	n2 := digest(`{"root":{"path":"r"},"mounts":[{"destination":"/a/b"},{"destination":"/a"}]}`, "x")
	if n1 == n2 {
		t.Error("the order of nested mounts does not change the digest")
	}
	// So do mounts whose destinations are spelled unclean ("/a/" is /a).
	u1 := digest(`{"root":{"path":"r"},"mounts":[{"destination":"/a/"},{"destination":"/a/b"}]}`, "x")
	u2 := digest(`{"root":{"path":"r"},"mounts":[{"destination":"/a/b"},{"destination":"/a/"}]}`, "x")
	if u1 == u2 {
		t.Error("the order of nested mounts, one spelled /a/, does not change the digest")
	}
}

// TestLaunchHeader: the digest is SHA-256 of the header and the normal form.
func TestLaunchHeader(t *testing.T) {
	c, err := ParseConfig("c", []byte(`{"root":{"path":"r"}}`))
	if err != nil {
		t.Fatal(err)
	}
	normal, d := c.Launch("x")
	sum := sha256.Sum256(append([]byte(LaunchHeader), normal...))
	if string(normal) != `{"root":{}}` || d != hex.EncodeToString(sum[:]) {
		t.Errorf("Launch = %s, %s", normal, d)
	}
}

// TestRootfsSymlinksOut: a root file system whose links point out of it
// (absolute, and up through ..) is measured with the links as links: its
// digest is rimon measure --tree's, and what the links point to does not
// change it.
func TestRootfsSymlinksOut(t *testing.T) {
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	outside := filepath.Join(bundle, "outside")
	os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
	os.MkdirAll(outside, 0o755)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("one"), 0o600)
	os.WriteFile(filepath.Join(rootfs, "etc", "app.conf"), []byte("x"), 0o644)
	for name, target := range map[string]string{
		"abs":     filepath.Join(outside, "secret"),
		"up":      "../../outside/secret",
		"dir":     outside,
		"etc/esc": "../../../../../../",
	} {
		if err := os.Symlink(target, filepath.Join(rootfs, name)); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := ParseConfig("config.json", []byte(`{"root":{"path":"rootfs"}}`))
	if err != nil {
		t.Fatal(err)
	}
	st := &State{ID: "c1", Bundle: bundle}
	m, err := Measure(context.Background(), st, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := measure.Tree(context.Background(), rootfs, 0)
	if err != nil {
		t.Fatal(err)
	}
	if m.Container.RootfsSHA256 != tr.Digest.String() || m.Container.RootfsEntries != 7 {
		t.Errorf("rootfs digest %s (%d entries), measure.Tree %s (%d)", m.Container.RootfsSHA256, m.Container.RootfsEntries, tr.Digest, len(tr.Entries))
	}
	os.WriteFile(filepath.Join(outside, "secret"), []byte("two"), 0o600)
	os.WriteFile(filepath.Join(outside, "new"), []byte("x"), 0o600)
	m2, err := Measure(context.Background(), st, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Container.RootfsSHA256 != m.Container.RootfsSHA256 {
		t.Errorf("a file outside the root file system, reached through its links, changed its digest")
	}
}

// TestIdentify: names and image identities from CRI-O's and containerd's
// annotations and from podman's storage files.
func TestIdentify(t *testing.T) {
	const imgID = "bba465ca575fc36db901fb5b9c17d2bdfc02f5cf9ebff61377a09f65c0254b45"
	const ctrID = "7626b126f4008ab786bdc58ac33b5792ff478a1af90513dbf12337d1615b8f39"
	const manifest = "sha256:5fe65648ec15a5126001d504c41512396209ae6bbe3973cce532869e1a4ef130"
	graph := t.TempDir()
	bundle := filepath.Join(graph, "overlay-containers", ctrID, "userdata")
	os.MkdirAll(bundle, 0o700)
	os.MkdirAll(filepath.Join(graph, "overlay-images"), 0o700)
	// As podman 4.3 writes them (captured, trimmed).
	os.WriteFile(filepath.Join(graph, "overlay-containers", "containers.json"), []byte(`[{"id":"`+ctrID+`","names":["web2"],"image":"`+imgID+`","layer":"4807cf3d","metadata":"{\"image-name\":\"localhost/hello:1\",\"image-id\":\"`+imgID+`\",\"name\":\"web2\",\"created-at\":1795880537}","created":"2026-11-28T15:42:17.270964536Z","flags":{"MountLabel":"","ProcessLabel":""}}]`), 0o600)
	os.WriteFile(filepath.Join(graph, "overlay-images", "images.json"), []byte(`[{"id":"`+imgID+`","digest":"`+manifest+`","names":["localhost/hello:1"],"layer":"14a3b7b7","created":"2026-11-28T15:41:56.499301858Z"}]`), 0o600)

	for _, tc := range []struct {
		name     string
		st       State
		ann      map[string]string
		wantName string
		want     Image
	}{
		{"crio", State{ID: "abc", Bundle: "/run/x"}, map[string]string{
			"io.kubernetes.container.name": "nginx", annCRIOImageName: "docker.io/library/nginx:1.27", annCRIOImageRef: imgID},
			"nginx", Image{Name: "docker.io/library/nginx:1.27", Ref: imgID, ID: "sha256:" + imgID, Source: "cri-o"}},
		{"containerd", State{ID: "abc", Bundle: "/run/x"}, map[string]string{
			"io.kubernetes.cri.container-name": "redis", annContainerdImage: "docker.io/library/redis:7"},
			"redis", Image{Name: "docker.io/library/redis:7", Source: "containerd"}},
		{"podman", State{ID: ctrID, Bundle: bundle}, map[string]string{"io.container.manager": "libpod"},
			"web2", Image{Name: "localhost/hello:1", ID: "sha256:" + imgID, Digest: manifest, Source: "podman"}},
		{"plain_runc", State{ID: "abc", Bundle: "/tmp/b"}, nil, "abc", Image{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, im, notes := Identify(&tc.st, &Config{Annotations: tc.ann})
			if name != tc.wantName || im != tc.want || len(notes) != 0 {
				t.Errorf("Identify = %q, %+v, %v; want %q, %+v", name, im, notes, tc.wantName, tc.want)
			}
		})
	}
	// An unreadable storage file is a note, not a failure: the identity is absent.
	os.WriteFile(filepath.Join(graph, "overlay-containers", "containers.json"), []byte(`not json`), 0o600)
	name, im, notes := Identify(&State{ID: ctrID, Bundle: bundle}, &Config{})
	if name != ctrID || im != (Image{}) || len(notes) != 1 || !strings.Contains(notes[0], "containers.json") {
		t.Errorf("Identify with a broken containers.json = %q, %+v, %v", name, im, notes)
	}
}
