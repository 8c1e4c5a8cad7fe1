package eventlog

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Kinds of measured objects.
const (
	KindFile  = "file"
	KindTree  = "tree"
	KindImage = "image"
	// KindUnmeasured records a change that could not be measured: its
	// content has no sha256 or size, but a cause and an error, and the path
	// in path or, when it is not UTF-8, path_escaped (docs/FORMAT.md).
	KindUnmeasured = "unmeasured"
)

// Reasons a record is written. A reason may carry a suffix after a colon,
// such as "launch:nginx.service".
const (
	ReasonInitial = "initial"
	ReasonChanged = "changed"
	ReasonDeleted = "deleted"
	ReasonLaunch  = "launch"
	ReasonManual  = "manual"
)

// Event is the typed view of a rimon record's content. Every field, including
// Extra, is bound into the PCR by the canonical encoding.
type Event struct {
	Kind string
	Path string
	// SHA256 is the lowercase hex SHA-256 of the file (or tree digest); empty for a deletion.
	SHA256 string
	// Size is the file's size in bytes (for a tree: the number of entries).
	Size   uint64
	Reason string
	// Time is when the measurement was taken, RFC 3339 in UTC.
	Time   string
	BootID string
	// Extra holds fields this version does not name.
	Extra []Field
}

// Content returns the event as record content, checked by [NewContent].
func (e Event) Content() (Content, error) {
	if e.Kind == KindUnmeasured {
		return e.unmeasuredContent()
	}
	if e.Kind == "" || e.Path == "" || e.Reason == "" {
		return nil, fmt.Errorf("event needs kind, path and reason (have %q, %q, %q)", e.Kind, e.Path, e.Reason)
	}
	fields := []Field{
		{Key: "kind", Str: e.Kind},
		{Key: "path", Str: e.Path},
		{Key: "reason", Str: e.Reason},
		{Key: "sha256", Str: e.SHA256},
		{Key: "size", Num: e.Size, IsNum: true},
		{Key: "time", Str: e.Time},
		{Key: "boot_id", Str: e.BootID},
	}
	return NewContent(append(fields, e.Extra...)...)
}

func (e Event) unmeasuredContent() (Content, error) {
	escaped := false
	for _, f := range e.Extra {
		escaped = escaped || f.Key == "path_escaped"
	}
	if e.Reason == "" || (e.Path == "") == !escaped {
		return nil, fmt.Errorf("unmeasured event needs a reason and exactly one of path and path_escaped (have %q, %q)", e.Path, e.Reason)
	}
	fields := []Field{
		{Key: "kind", Str: e.Kind},
		{Key: "reason", Str: e.Reason},
		{Key: "time", Str: e.Time},
		{Key: "boot_id", Str: e.BootID},
	}
	if e.Path != "" {
		fields = append(fields, Field{Key: "path", Str: e.Path})
	}
	return NewContent(append(fields, e.Extra...)...)
}

// EventFromContent is the inverse of [Event.Content].
func EventFromContent(c Content) Event {
	var e Event
	for _, f := range c {
		switch f.Key {
		case "kind":
			e.Kind = f.Str
		case "path":
			e.Path = f.Str
		case "reason":
			e.Reason = f.Str
		case "sha256":
			e.SHA256 = f.Str
		case "size":
			e.Size = f.Num
		case "time":
			e.Time = f.Str
		case "boot_id":
			e.BootID = f.Str
		default:
			e.Extra = append(e.Extra, f)
		}
	}
	return e
}

// FormatTime formats t as rimon records it: RFC 3339 in UTC with nanoseconds.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// EscapePath writes a path that is not valid UTF-8 as an unmeasured
// record's path_escaped field (docs/FORMAT.md): every byte that is '%' or
// not part of a valid UTF-8 sequence becomes %XX (upper-case hex), every
// other byte stays as is. It is lossless.
func EscapePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRuneInString(p[i:])
		if p[i] == '%' || (r == utf8.RuneError && n <= 1) {
			fmt.Fprintf(&b, "%%%02X", p[i])
			i++
			continue
		}
		b.WriteString(p[i : i+n])
		i += n
	}
	return b.String()
}
