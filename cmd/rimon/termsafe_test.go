package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestTermSafe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"app1/zz\x1b[2K\r\x1b[1;32mall fine\x1b[0m\n", `app1/zz\u001b[2K\u000d\u001b[1;32mall fine\u001b[0m` + "\n"},
		{"tab\tand newline\n", "tab\tand newline\n"},
		{"é ✓ 漢字", "é ✓ 漢字"},
		{"c1 \u009b31m and bidi \u202eevil\u202c", `c1 \u009b31m and bidi \u202eevil\u202c`},
		{"del \x7f and not utf-8 \xff", `del \u007f and not utf-8 \xff`},
	} {
		var b bytes.Buffer
		w := newTermSafe(&b)
		// Byte by byte: a UTF-8 sequence split across writes is kept whole.
		for i := 0; i < len(tc.in); i++ {
			if n, err := w.Write([]byte{tc.in[i]}); n != 1 || err != nil {
				t.Fatalf("Write = %d, %v", n, err)
			}
		}
		if b.String() != tc.want {
			t.Errorf("%q: wrote %q, want %q", tc.in, b.String(), tc.want)
		}
	}
	// JSON through it decodes to the same value.
	in := map[string]string{"path": "a\u202eb\u009bc\x1bd"}
	js, _ := json.Marshal(in)
	var b bytes.Buffer
	newTermSafe(&b).Write(js)
	var out map[string]string
	if err := json.Unmarshal(b.Bytes(), &out); err != nil || out["path"] != in["path"] {
		t.Errorf("JSON through termSafe: %s -> %v, %v", b.Bytes(), out, err)
	}
}

// TestTermSafeOutput: a file name that would repaint the terminal reaches
// rimon log show's output and a refusal's message escaped.
func TestTermSafeOutput(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "m.log")
	name := writeFile(t, filepath.Join(dir, "zz\x1b[2K\r\x1b[1;32mall fine\x1b[0m"), "x")
	mustRimon(t, "measure", "--tpm", "sim", "--log", log, name)
	r := rimon(t, "log", "show", "--log", log)
	if r.code != 0 || strings.ContainsAny(r.stdout, "\x1b\r") || !strings.Contains(r.stdout, "zz") {
		t.Errorf("log show: exit %d, %q", r.code, r.stdout)
	}
	r = rimon(t, "measure", "--tpm", "sim", "--log", log, name+"\x1b[Kmissing")
	if r.code == 0 || strings.ContainsAny(r.stderr, "\x1b\r") || !strings.Contains(r.stderr, `\u001b[K`) {
		t.Errorf("measure of a missing file: exit %d, %q", r.code, r.stderr)
	}
}
