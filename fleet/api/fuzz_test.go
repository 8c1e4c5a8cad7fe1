package api_test

import (
	"bufio"
	"strings"
	"testing"

	"github.com/rimon-dev/rimon/fleet/api"
)

// FuzzReadTokens: a token file either parses, and then every token on it
// is accepted with the role its line gives and nothing else of the file
// is, or is refused with an error that quotes none of its lines.
func FuzzReadTokens(f *testing.F) {
	for _, s := range []string{
		"# c\n0123456789abcdef0123\nfedcba9876543210fedc read\n",
		"0123456789abcdef0123 admin\n\n\n",
		"0123456789abcdef0123 write\n",
		"short\n",
		"0123456789abcdef0123\n0123456789abcdef0123\n",
		"",
		"\xff\xfe0123456789abcdef\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		toks, err := api.ReadTokens(strings.NewReader(content))
		if err != nil {
			for _, line := range strings.Split(content, "\n") {
				if f := strings.Fields(line); len(f) > 0 && len(f[0]) >= api.MinTokenLength && strings.Contains(err.Error(), f[0]) {
					t.Fatalf("the error %q quotes a line's token %q", err, f[0])
				}
			}
			return
		}
		n := 0
		sc := bufio.NewScanner(strings.NewReader(content))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			n++
			fs := strings.Fields(line)
			want := api.RoleAdmin
			if len(fs) == 2 && fs[1] == "read" {
				want = api.RoleRead
			}
			if role, _ := toks.Check(fs[0]); role != want {
				t.Fatalf("Check(token of %q) = %v, want %v", line, role, want)
			}
			if role, _ := toks.Check(fs[0] + "x"); role != api.RoleNone && !strings.Contains(content, fs[0]+"x") {
				t.Fatalf("Check(%q + \"x\") = %v", fs[0], role)
			}
		}
		if toks.Len() != n {
			t.Fatalf("%d tokens from %d token lines", toks.Len(), n)
		}
	})
}
