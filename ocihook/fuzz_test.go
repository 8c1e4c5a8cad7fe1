package ocihook

import (
	"bytes"
	"testing"
)

// FuzzParseState: any input is parsed or refused with ErrInput, never a
// panic; a parsed state has a valid id and an absolute bundle.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"ociVersion":"1.0.2","id":"x1","status":"creating","pid":1234,"bundle":"/b","annotations":{"a":"b"}}`))
	f.Add([]byte(`{"id":"a","id":"b","bundle":"/tmp"}`))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte(`{"id":"\udc80","bundle":"/"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b)
		if err != nil {
			return
		}
		if CheckID(st.ID) != nil || st.Bundle == "" || st.Bundle[0] != '/' {
			t.Fatalf("ParseState(%q) = %+v", b, st)
		}
	})
}

// FuzzParseConfig: a parsed config's normal form is deterministic, parses
// again as a config-shaped document, and is its own normal form (the
// normalization is idempotent up to the removed root.path).
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"root":{"path":"r"},"process":{"args":["/a"],"env":["B=1","A=2","A=1"]},"mounts":[{"destination":"/a/b"},{"destination":"/a"},{"destination":"/c"}]}`))
	f.Add([]byte(`{"root":{"path":"r","readonly":true},"hostname":"caf\u00e9\n","x":[1,-2,18446744073709551615,null,true]}`))
	f.Add([]byte(`{"root":{"path":"r"},"linux":{"namespaces":[{"type":"network","path":"/proc/12/ns/net"}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig("config.json", b)
		if err != nil {
			return
		}
		n1, d1 := cfg.Launch("0123456789abcdef0123456789abcdef")
		n2, d2 := cfg.Launch("0123456789abcdef0123456789abcdef")
		if !bytes.Equal(n1, n2) || d1 != d2 {
			t.Fatalf("two normal forms of one config differ:\n%s\n%s", n1, n2)
		}
		v, err := parseJSON("normal", n1)
		if err != nil {
			t.Fatalf("the normal form does not parse: %v\n%s", err, n1)
		}
		again := appendCanonical(nil, v)
		if !bytes.Equal(again, n1) {
			t.Fatalf("canonical JSON is not stable:\n%s\n%s", n1, again)
		}
	})
}
