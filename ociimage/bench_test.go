package ociimage

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkVerifyDockerArchive verifies a docker save archive of 8 layers
// of 3 MiB each; B/op shows what is kept in memory.
func BenchmarkVerifyDockerArchive(b *testing.B) {
	const layers, layerSize = 8, 3 << 20
	p := filepath.Join(b.TempDir(), "big.tar")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	tw := tar.NewWriter(f)
	rng := rand.NewChaCha8([32]byte{})
	var names, diffIDs []string
	for i := range layers {
		data := make([]byte, layerSize)
		rng.Read(data)
		s := sha256.Sum256(data)
		name := fmt.Sprintf("l%d/layer.tar", i)
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: layerSize, Typeflag: tar.TypeReg})
		tw.Write(data)
		names, diffIDs = append(names, name), append(diffIDs, "sha256:"+hex.EncodeToString(s[:]))
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cs := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cs[:]) + ".json"
	man, _ := json.Marshal([]dockerEntry{{Config: cfgName, RepoTags: []string{"big:1"}, Layers: names}})
	for name, data := range map[string][]byte{cfgName: cfg, "manifest.json": man} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	b.SetBytes(layers * layerSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(context.Background(), p); err != nil {
			b.Fatal(err)
		}
	}
}
