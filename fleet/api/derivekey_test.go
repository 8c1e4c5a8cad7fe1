package api

import (
	"bytes"
	"strings"
	"testing"
)

func TestDeriveKey(t *testing.T) {
	read := func(s string) *Tokens {
		t.Helper()
		tk, err := ReadTokens(strings.NewReader(s))
		if err != nil {
			t.Fatal(err)
		}
		return tk
	}
	const a, b = "token-a-0123456789abcdef", "token-b-0123456789abcdef"
	base := read(a + "\n" + b + " read\n")
	k := base.DeriveKey("p")
	if len(k) != 32 {
		t.Fatalf("DeriveKey: %d bytes, want 32", len(k))
	}
	if !bytes.Equal(k, read("# a comment\n"+a+" admin\n\n"+b+" read\n").DeriveKey("p")) {
		t.Errorf("the same tokens in another file give another key")
	}
	for name, other := range map[string][]byte{
		"purpose":  base.DeriveKey("q"),
		"removed":  read(a + "\n").DeriveKey("p"),
		"role":     read(a + "\n" + b + "\n").DeriveKey("p"),
		"added":    read(a + "\n" + b + " read\ntoken-c-0123456789abcdef\n").DeriveKey("p"),
		"replaced": read(a + "\ntoken-c-0123456789abcdef read\n").DeriveKey("p"),
	} {
		if bytes.Equal(k, other) {
			t.Errorf("%s: the same key", name)
		}
	}
	var none *Tokens
	if none.DeriveKey("p") != nil {
		t.Errorf("DeriveKey of no tokens is not nil")
	}
}
