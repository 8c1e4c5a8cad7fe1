package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestMeasureImagePlatform records one platform of a single-platform
// export of a multi-platform index (written by podman, see
// ociimage/testdata/SOURCES.md), and refuses the selection flags without
// --image or with a malformed platform, before anything is written.
func TestMeasureImagePlatform(t *testing.T) {
	const manifest = "06c6f0dd4e2bb4cb93a667194155e1ef91532c589bcafdc82568bf3937a1d730"
	img, err := filepath.Abs("../../ociimage/testdata/podman/amd64-only-oci")
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "m.log")
	if r := rimon(t, "measure", "--tpm", "sim", "--log", log, "--image", img); r.code != exitError || !strings.Contains(r.stderr, "--platform") {
		t.Errorf("measure --image (partial index, no --platform): exit %d, %s; want exit %d naming --platform", r.code, r.stderr, exitError)
	}
	out := mustRimon(t, "measure", "--tpm", "sim", "--log", log, "--image", "--platform", "linux/amd64", img)
	if !strings.Contains(out, " image "+manifest+" manual ") {
		t.Errorf("measure --image --platform linux/amd64 printed %q, want manifest %s", out, manifest)
	}
	show := mustRimon(t, "log", "show", "--json", "--log", log)
	if !strings.Contains(show, `"manifest_digest": "sha256:`+manifest) {
		t.Errorf("the record lacks manifest_digest:\n%s", show)
	}
	for _, args := range [][]string{
		{"--platform", "linux/amd64", img},
		{"--image-ref", "x:1", img},
		{"--image", "--platform", "amd64", img},
	} {
		before := snapshotFiles(t, filepath.Dir(log))
		r := rimon(t, append([]string{"measure", "--tpm", "sim", "--log", log}, args...)...)
		if r.code != exitUsage {
			t.Errorf("measure %v: exit %d, %s; want %d", args, r.code, r.stderr, exitUsage)
		}
		if snapshotFiles(t, filepath.Dir(log)) != before {
			t.Errorf("measure %v changed the log", args)
		}
	}
}
