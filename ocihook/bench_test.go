package ocihook

import (
	"os"
	"testing"
)

// BenchmarkParseNormalize: reading podman's config.json of a container
// (captured, with its seccomp profile) and computing its launch digest.
func BenchmarkParseNormalize(b *testing.B) {
	raw, err := os.ReadFile("testdata/podman-config.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	for i := 0; i < b.N; i++ {
		cfg, err := ParseConfig("config.json", raw)
		if err != nil {
			b.Fatal(err)
		}
		cfg.Launch("cc2a8dd0f4b588b802011040cfbccdf795bf95db49868fd2314b11e096b447db")
	}
}
