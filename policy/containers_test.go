package policy

import (
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
)

func TestContainersPolicy(t *testing.T) {
	pol, err := Parse("p.yaml", strings.NewReader(`containers:
  when:
    annotations:
      '^io\.kubernetes\.pod\.namespace$': '^prod-'
    commands: ['^/usr/sbin/nginx$']
  rootfs: false
  on_error: allow
`))
	if err != nil {
		t.Fatal(err)
	}
	c := pol.Containers
	if c == nil || c.Rootfs || c.OnError != Allow || len(pol.Rules) != 0 {
		t.Fatalf("containers = %+v, rules %v", c, pol.Rules)
	}
	for _, tc := range []struct {
		ann  map[string]string
		cmd  string
		want bool
	}{
		{map[string]string{"io.kubernetes.pod.namespace": "prod-eu"}, "/bin/sh", true},
		{map[string]string{"io.kubernetes.pod.namespace": "dev"}, "/bin/sh", false},
		{nil, "/usr/sbin/nginx", true},
		{nil, "/usr/sbin/nginx-debug", false},
	} {
		if got := c.Selects(tc.ann, tc.cmd); got != tc.want {
			t.Errorf("Selects(%v, %q) = %v, want %v", tc.ann, tc.cmd, got, tc.want)
		}
	}
	if d := DefaultContainers(); !d.Selects(nil, "") || !d.Rootfs || d.OnError != Deny {
		t.Errorf("DefaultContainers = %+v", d)
	}
	for _, tc := range []struct{ doc, want string }{
		{"containers:\n  on_error: maybe\n", "containers.on_error: want deny or allow"},
		{"containers:\n  rootfs: yes-please\n", "containers.rootfs: want true or false"},
		{"containers:\n  when:\n    commands: ['(']\n", "is not a regular expression"},
		{"containers:\n  when: {}\n", "selects no container"},
		{"containers:\n  when:\n    hasBindMounts: true\n", "unknown key"},
		{"containers:\n  extra: 1\n", "unknown key (want when, rootfs or on_error)"},
		{"measure: []\ncontainers:\n  rootfs: true\n", "measure: missing or empty"},
		{"settings:\n  pcr: 23\n", "measure: missing or empty"},
	} {
		if _, err := Parse("p.yaml", strings.NewReader(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestContainerReferences(t *testing.T) {
	const d1, d2 = "1111111111111111111111111111111111111111111111111111111111111111", "2222222222222222222222222222222222222222222222222222222222222222"
	ref, err := ParseReference("r.yaml", strings.NewReader(`containers:
  "web-*":
    launch: [`+d1+`]
  web-admin:
    rootfs: [`+d2+`]
    image: ["sha256:`+d1+`"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := LookupContainer(ref.Containers, "web-admin"); !ok || e.Name != "web-admin" || e.Image[0] != "sha256:"+d1 {
		t.Errorf("web-admin: %+v, %v (an exact name comes before a pattern)", e, ok)
	}
	if e, ok := LookupContainer(ref.Containers, "web-1"); !ok || e.Name != "web-*" || e.Launch[0] != d1 {
		t.Errorf("web-1: %+v, %v", e, ok)
	}
	if _, ok := LookupContainer(ref.Containers, "db"); ok {
		t.Error("db is covered")
	}
	for _, tc := range []struct{ doc, want string }{
		{"containers:\n  web:\n    launch: [abc]\n", "is not a SHA-256 digest"},
		{"containers:\n  web: {}\n", "lists no digest"},
		{"containers:\n  web:\n    cmd: [x]\n", "unknown key (want launch, rootfs or image)"},
		{"containers:\n  \"[\":\n    launch: [" + d1 + "]\n", "not a valid pattern"},
	} {
		if _, err := ParseReference("r.yaml", strings.NewReader(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseReference(%q) = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

// TestReferenceFromLogContainers: a generated reference approves every
// digest each container started with, and reads back.
func TestReferenceFromLogContainers(t *testing.T) {
	const l, r1, r2 = "1111111111111111111111111111111111111111111111111111111111111111", "2222222222222222222222222222222222222222222222222222222222222222", "3333333333333333333333333333333333333333333333333333333333333333"
	var recs []eventlog.Record
	for _, c := range []eventlog.Container{
		{Name: "web[1]", ID: "a", Rootfs: "/r/a", RootfsSHA256: r1, LaunchSHA256: l, ImageID: "sha256:" + r2},
		{Name: "web[1]", ID: "b", Rootfs: "/r/b", RootfsSHA256: r2, LaunchSHA256: l, ImageID: "sha256:" + r2},
	} {
		ev, err := c.Event()
		if err != nil {
			t.Fatal(err)
		}
		content, err := ev.Content()
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventlog.Record{ContentType: eventlog.ContentTypeRimon, Content: content})
	}
	var b strings.Builder
	if err := WriteReference(&b, ReferenceFromLog("the log", recs)); err != nil {
		t.Fatal(err)
	}
	ref, err := ParseReference("gen.yaml", strings.NewReader(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	e, ok := LookupContainer(ref.Containers, "web[1]")
	if !ok || len(e.Launch) != 1 || len(e.Rootfs) != 2 || len(e.Image) != 1 || len(ref.Files) != 0 {
		t.Errorf("generated:\n%s\nentry %+v, %v; files %v", b.String(), e, ok, ref.Files)
	}
	if _, ok := LookupContainer(ref.Containers, "web1"); ok {
		t.Errorf("the escaped name web\\[1] matches web1")
	}
}
