package attest

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestEscapePathVectors: the path_escaped encoding of docs/FORMAT.md.
func TestEscapePathVectors(t *testing.T) {
	for raw, want := range map[string]string{
		"/bin/evil\xff":     "/bin/evil%FF",
		"/a%b\xff":          "/a%25b%FF",
		"/\xed\xa0\x80":     "/%ED%A0%80", // an encoded surrogate is not UTF-8
		"/caf\xc3\xa9\xfe":  "/caf\xc3\xa9%FE",
		"/\xef\xbf\xbd\x80": "/\xef\xbf\xbd%80", // U+FFFD itself is kept
		"/\xc3":             "/%C3",
	} {
		if got := escapePath(raw); got != want {
			t.Errorf("escapePath(%q) = %q, want %q", raw, got, want)
		}
		if got, err := unmeasuredPath("", want); err != nil || got != raw {
			t.Errorf("unmeasuredPath(%q) = %q, %v; want %q", want, got, err, raw)
		}
	}
}

// FuzzEscapePath: escaping is lossless, its output is UTF-8, and only the
// canonical escape of a name that is not UTF-8 is accepted.
func FuzzEscapePath(f *testing.F) {
	for _, s := range []string{"/a", "/a\xff", "%", "/%FF", "\xed\xa0\x80", "/é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		esc := escapePath(raw)
		if !utf8.ValidString(esc) {
			t.Fatalf("escapePath(%q) = %q is not UTF-8", raw, esc)
		}
		got, err := unmeasuredPath("", esc)
		switch {
		case raw == "":
			if err == nil {
				t.Fatalf("an empty path_escaped was accepted")
			}
		case utf8.ValidString(raw):
			if esc != strings.ReplaceAll(raw, "%", "%25") || err == nil {
				t.Fatalf("UTF-8 %q: escaped %q, accepted as path_escaped: %v", raw, esc, err == nil)
			}
		case err != nil || got != raw:
			t.Fatalf("unmeasuredPath(escapePath(%q)) = %q, %v", raw, got, err)
		}
		// Any accepted path_escaped is canonical: it round-trips.
		if got, err := unmeasuredPath("", raw); err == nil && escapePath(got) != raw {
			t.Fatalf("unmeasuredPath accepted %q, which escapes back to %q", raw, escapePath(got))
		}
	})
}
