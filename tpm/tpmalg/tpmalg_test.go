package tpmalg

import (
	"crypto"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestRoundTrip: every bank maps to its TPM_ALG_ID (TPM 2.0 Part 2, 6.3)
// and back; other hashes and IDs map to nothing.
func TestRoundTrip(t *testing.T) {
	for h, want := range map[crypto.Hash]tpm2.TPMAlgID{crypto.SHA1: 0x0004, crypto.SHA256: 0x000B, crypto.SHA384: 0x000C, crypto.SHA512: 0x000D} {
		if a, ok := ID(h); !ok || a != want {
			t.Errorf("ID(%v) = %#x, %v; want %#x", h, a, ok, want)
		}
		if back, ok := Hash(want); !ok || back != h {
			t.Errorf("Hash(%#x) = %v, %v; want %v", want, back, ok, h)
		}
	}
	if _, ok := ID(crypto.MD5); ok {
		t.Error("ID(MD5) found")
	}
	if _, ok := Hash(tpm2.TPMAlgSM3256); ok {
		t.Error("Hash(SM3_256) found")
	}
}
