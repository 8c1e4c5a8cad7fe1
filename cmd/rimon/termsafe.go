package main

import (
	"fmt"
	"io"
	"unicode/utf8"
)

// termSafe writes text with the characters a terminal acts on escaped:
// C0 controls but tab and newline, DEL, C1 controls and the bidirectional
// controls, each as \uXXXX (a byte that is not UTF-8 as \xXX). File names
// and reasons come from monitored machines: a name holding "\r\033[2K"
// must not erase or repaint the line that reports it. The \u form is what
// JSON itself would write, so JSON output stays the same JSON.
type termSafe struct {
	w     io.Writer
	carry []byte // the start of a UTF-8 sequence split across writes
}

// newTermSafe wraps w (once).
func newTermSafe(w io.Writer) io.Writer {
	if _, ok := w.(*termSafe); ok {
		return w
	}
	return &termSafe{w: w}
}

// unsafeRune reports whether a terminal acts on r rather than showing it.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20:
		return r != '\n' && r != '\t'
	case r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

func (t *termSafe) Write(p []byte) (int, error) {
	buf := p
	if len(t.carry) > 0 {
		buf = append(t.carry, p...)
		t.carry = nil
	}
	out := make([]byte, 0, len(buf))
	for i := 0; i < len(buf); {
		if c := buf[i]; c < utf8.RuneSelf {
			if unsafeRune(rune(c)) {
				out = fmt.Appendf(out, `\u%04x`, c)
			} else {
				out = append(out, c)
			}
			i++
			continue
		}
		if !utf8.FullRune(buf[i:]) {
			t.carry = append([]byte(nil), buf[i:]...)
			break
		}
		r, size := utf8.DecodeRune(buf[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = fmt.Appendf(out, `\x%02x`, buf[i])
		case unsafeRune(r):
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, buf[i:i+size]...)
		}
		i += size
	}
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
