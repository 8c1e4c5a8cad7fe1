package ocihook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/rimon-dev/rimon/eventlog"
)

// maxDepth bounds the nesting of the JSON documents the hook reads: a
// config.json nests about five levels deep.
const maxDepth = 64

// object is a JSON object as read: its members by key.
type object map[string]any

// parseJSON reads one JSON document strictly: valid UTF-8 with no unpaired
// surrogate escape, no key twice in an object, integers only (no fraction
// or exponent, from -2^63 to 2^64-1), nesting at most [maxDepth] deep, and
// nothing after the value. Objects become [object], arrays []any, strings
// string, numbers json.Number, and true, false and null bool and nil.
// name is used in errors.
func parseJSON(name string, b []byte) (any, error) {
	if err := eventlog.CheckJSONText(b); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeValue(dec, name, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: data after the JSON value", name)
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, at string, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: invalid JSON: %w", at, err)
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth >= maxDepth {
			return nil, fmt.Errorf("%s: nested more than %d levels deep", at, maxDepth)
		}
		if t == '[' {
			list := []any{}
			for dec.More() {
				v, err := decodeValue(dec, fmt.Sprintf("%s[%d]", at, len(list)), depth+1)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("%s: invalid JSON: %w", at, err)
			}
			return list, nil
		}
		obj := object{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, fmt.Errorf("%s: invalid JSON: %w", at, err)
			}
			key, _ := kt.(string)
			field := at + "." + key
			if _, dup := obj[key]; dup {
				return nil, fmt.Errorf("%s: appears twice", field)
			}
			v, err := decodeValue(dec, field, depth+1)
			if err != nil {
				return nil, err
			}
			obj[key] = v
		}
		if _, err := dec.Token(); err != nil {
			return nil, fmt.Errorf("%s: invalid JSON: %w", at, err)
		}
		return obj, nil
	case json.Number:
		if _, err := canonicalInt(t); err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		return t, nil
	default:
		return t, nil // string, bool or nil
	}
}

// canonicalInt returns the decimal form of an integer number, refusing
// fractions, exponents and integers out of range.
func canonicalInt(n json.Number) (string, error) {
	s := string(n)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return strconv.FormatInt(i, 10), nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return strconv.FormatUint(u, 10), nil
	}
	return "", fmt.Errorf("number %s: want an integer from -9223372036854775808 to 18446744073709551615, without fraction or exponent", s)
}

// appendCanonical appends the canonical JSON of v (docs/FORMAT.md, "The
// launch description"): no whitespace, object keys in ascending bytewise
// order, integers in plain decimal, strings with only '"', '\\' and the
// control characters escaped (\n, \r, \t, else \u00xx in lower-case hex).
func appendCanonical(b []byte, v any) []byte {
	switch v := v.(type) {
	case object:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = eventlog.AppendJSONString(b, k)
			b = append(b, ':')
			b = appendCanonical(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonical(b, e)
		}
		return append(b, ']')
	case string:
		return eventlog.AppendJSONString(b, v)
	case json.Number:
		s, _ := canonicalInt(v) // checked when read
		return append(b, s...)
	case bool:
		if v {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	}
	return append(b, "null"...) // nil: parseJSON makes no other value
}

func typeName(v any) string {
	switch v.(type) {
	case object:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
