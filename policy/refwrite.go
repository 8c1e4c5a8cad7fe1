package policy

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// RefFile is what [WriteReference] writes: a starting reference file.
type RefFile struct {
	// Comments become "#" lines at the top.
	Comments []string
	// Files and Images map literal absolute paths (not patterns) to their
	// allowed digests.
	Files, Images map[string][]string
	// Ignore are rimon patterns, written as they are.
	Ignore []string
	// Containers map container names (not patterns) to their digests.
	Containers map[string]*ContainerDigests
}

// WriteReference writes f as a reference file that [ParseReference] reads
// back to the same values: paths holding pattern characters are escaped
// so that they stay literal, and a path that is not valid UTF-8 (which
// YAML cannot hold) is an error.
func WriteReference(w io.Writer, f RefFile) error {
	var b strings.Builder
	for _, c := range f.Comments {
		for _, l := range strings.Split(c, "\n") {
			fmt.Fprintf(&b, "# %s\n", l)
		}
	}
	b.WriteString("version: 1\nunlisted: fail\ndeletions: allow\n")
	for _, sec := range []struct {
		name string
		m    map[string][]string
	}{{"files", f.Files}, {"images", f.Images}} {
		if len(sec.m) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s:\n", sec.name)
		keys := make([]string, 0, len(sec.m))
		for k := range sec.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !utf8.ValidString(k) {
				return fmt.Errorf("reference: the path %q is not valid UTF-8, which a reference file cannot hold", k)
			}
			key := strconv.Quote(EscapePath(k))
			if len(key) > maxImplicitKey {
				// YAML reads a key of more than 1024 characters only in the
				// explicit form.
				fmt.Fprintf(&b, "  ? %s\n  :\n", key)
			} else {
				fmt.Fprintf(&b, "  %s:\n", key)
			}
			ds := append([]string(nil), sec.m[k]...)
			sort.Strings(ds)
			for _, d := range ds {
				fmt.Fprintf(&b, "    - %s\n", strconv.Quote(d))
			}
		}
	}
	if err := writeContainers(&b, f.Containers); err != nil {
		return err
	}
	if len(f.Ignore) > 0 {
		b.WriteString("ignore:\n")
		for _, p := range f.Ignore {
			if !utf8.ValidString(p) {
				return fmt.Errorf("reference: the pattern %q is not valid UTF-8, which a reference file cannot hold", p)
			}
			fmt.Fprintf(&b, "  - %s\n", strconv.Quote(p))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// maxImplicitKey is the longest key written in the implicit "key:" form
// (YAML allows 1024 characters).
const maxImplicitKey = 1000

// EscapePath writes a literal path so that a reference file reads it as
// that path: a path holding *, ? or [ would be read as a pattern, so then
// each of * ? [ and \ gets a backslash.
func EscapePath(p string) string {
	if !strings.ContainsAny(p, "*?[") {
		return p
	}
	var b strings.Builder
	for _, r := range p {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
