package eventlog

import (
	"crypto"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// TestContainerVectors: container records built from their fields encode
// as gen.py computed from docs/FORMAT.md, and read back to the same fields.
func TestContainerVectors(t *testing.T) {
	b, err := os.ReadFile("../testdata/vectors/container.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []struct {
		Content      map[string]any    `json:"content"`
		CanonicalHex string            `json:"canonical_hex"`
		Digests      map[string]string `json:"digests"`
	}
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 {
		t.Fatalf("%d vectors, want 2", len(vs))
	}
	for _, v := range vs {
		str := func(k string) string { s, _ := v.Content[k].(string); return s }
		size, _ := v.Content["size"].(float64)
		c := Container{Name: str("name"), ID: str("container_id"), Rootfs: str("path"), RootfsSHA256: str("sha256"),
			RootfsEntries: uint64(size), LaunchSHA256: str("launch_sha256"), ImageName: str("image_name"),
			ImageID: str("image_id"), ImageDigest: str("image_digest"), ImageSource: str("image_source")}
		ev, err := c.Event()
		if err != nil {
			t.Fatal(err)
		}
		ev.Time, ev.BootID = str("time"), str("boot_id")
		content, err := ev.Content()
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(content.Canonical()); got != v.CanonicalHex {
			t.Errorf("%s: canonical encoding\n%s\nwant\n%s", c.Name, got, v.CanonicalHex)
		}
		for _, d := range content.Digests([]crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}) {
			if got := hex.EncodeToString(d.Value); got != v.Digests[BankName(d.Alg)] {
				t.Errorf("%s: %s digest %s, want %s", c.Name, BankName(d.Alg), got, v.Digests[BankName(d.Alg)])
			}
		}
		if back := ContainerFromContent(content); back != c {
			t.Errorf("ContainerFromContent = %+v, want %+v", back, c)
		}
	}
	for _, bad := range []Container{
		{Name: "", ID: "x", Rootfs: "/r", LaunchSHA256: vs[0].Content["launch_sha256"].(string)},
		{Name: "a\nb", ID: "x", Rootfs: "/r", LaunchSHA256: vs[0].Content["launch_sha256"].(string)},
		{Name: "a", ID: "x", Rootfs: "rel", LaunchSHA256: vs[0].Content["launch_sha256"].(string)},
		{Name: "a", ID: "x", Rootfs: "/r", LaunchSHA256: "ABC"},
	} {
		if _, err := bad.Event(); err == nil {
			t.Errorf("Event(%+v) = nil error", bad)
		}
	}
}
