package attest

import (
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

func TestCheckContainer(t *testing.T) {
	const l, r, i = "1111111111111111111111111111111111111111111111111111111111111111", "2222222222222222222222222222222222222222222222222222222222222222", "3333333333333333333333333333333333333333333333333333333333333333"
	ref, err := policy.ParseReference("r.yaml", strings.NewReader("containers:\n  web-*:\n    launch: ["+l+"]\n    rootfs: ["+r+"]\n    image: [\"sha256:"+i+"\"]\n  job:\n    launch: ["+l+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	good := eventlog.Container{Name: "web-1", ID: "x", Rootfs: "/r", LaunchSHA256: l, RootfsSHA256: r, ImageID: "sha256:" + i}
	for _, tc := range []struct {
		name    string
		edit    func(c *eventlog.Container)
		verdict string
		problem string
	}{
		{"approved", func(c *eventlog.Container) {}, ContainerApproved, ""},
		{"approved_by_manifest_digest", func(c *eventlog.Container) { c.ImageID, c.ImageDigest = "", "sha256:"+i }, ContainerApproved, ""},
		{"launch", func(c *eventlog.Container) { c.LaunchSHA256 = r }, ContainerNotApproved, "launch digest " + r + " not allowed"},
		{"rootfs", func(c *eventlog.Container) { c.RootfsSHA256 = l }, ContainerNotApproved, "root file system digest"},
		{"rootfs_off", func(c *eventlog.Container) { c.RootfsSHA256 = "" }, ContainerNotApproved, "root file system not measured"},
		{"image_unknown", func(c *eventlog.Container) { c.ImageID = "" }, ContainerNotApproved, "image identity unknown"},
		{"image_other", func(c *eventlog.Container) { c.ImageID = "sha256:" + l }, ContainerNotApproved, "image sha256:" + l + " not allowed"},
		{"unlisted", func(c *eventlog.Container) { c.Name = "db" }, ContainerUnlisted, "not listed"},
		{"launch_only_entry", func(c *eventlog.Container) { c.Name, c.RootfsSHA256, c.ImageID = "job", "", "" }, ContainerApproved, ""},
		{"malformed", func(c *eventlog.Container) { c.LaunchSHA256 = "" }, ContainerNotApproved, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			v, problems := CheckContainer(ref, c)
			if v != tc.verdict || (tc.problem != "" && !strings.Contains(strings.Join(problems, ";"), tc.problem)) || (tc.problem == "" && len(problems) > 0) {
				t.Errorf("CheckContainer = %q, %v; want %q, %q", v, problems, tc.verdict, tc.problem)
			}
		})
	}
	if v, _ := CheckContainer(nil, good); v != ContainerUnchecked {
		t.Errorf("without a reference: %q", v)
	}
}
