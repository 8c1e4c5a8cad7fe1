package api

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Role is what a request may do.
type Role int

// The roles.
const (
	// RoleNone: not authenticated.
	RoleNone Role = iota
	// RoleRead may only read (GET and HEAD).
	RoleRead
	// RoleAdmin may do everything.
	RoleAdmin
)

// String names the role for logs.
func (r Role) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// MinTokenLength is the shortest API token accepted (16 characters: 64
// bits of entropy at hex, more in practice; `openssl rand -hex 32` makes a
// good one).
const MinTokenLength = 16

// MaxTokenLength bounds a token (and what a request may present).
const MaxTokenLength = 512

// Tokens is the set of API tokens read from a token file. Only their
// SHA-256 digests are held; a token presented is compared in constant
// time against every one of them, so that neither which token matched nor
// how much of one matched shows in the time taken.
type Tokens struct {
	entries []tokenEntry
}

type tokenEntry struct {
	digest [sha256.Size]byte
	role   Role
	line   int // the token file's line: what logs name instead of the token
}

// ErrNoTokens: a token file without a single token.
var ErrNoTokens = errors.New("no tokens")

// ParseTokens reads a token file: one token per line, optionally followed
// by "read" (a read-only token) or "admin" (the default); blank lines and
// lines starting with # are ignored. A malformed line is named by its
// number; the error never quotes a token.
func ParseTokens(path string) (*Tokens, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t, err := ReadTokens(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	return t, nil
}

// ReadTokens parses a token file's content as [ParseTokens] does.
func ReadTokens(r io.Reader) (*Tokens, error) {
	t := &Tokens{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	seen := map[[sha256.Size]byte]int{}
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		role := RoleAdmin
		switch {
		case len(f) == 2 && f[1] == "read":
			role = RoleRead
		case len(f) == 2 && f[1] == "admin":
		case len(f) == 1:
		default:
			return nil, fmt.Errorf("line %d: want TOKEN, TOKEN read or TOKEN admin", n)
		}
		tok := f[0]
		if len(tok) < MinTokenLength || len(tok) > MaxTokenLength {
			return nil, fmt.Errorf("line %d: a token has %d to %d characters (make one with: openssl rand -hex 32)", n, MinTokenLength, MaxTokenLength)
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c < 0x21 || c > 0x7e {
				return nil, fmt.Errorf("line %d: a token is printable ASCII without spaces", n)
			}
		}
		d := sha256.Sum256([]byte(tok))
		if first, dup := seen[d]; dup {
			return nil, fmt.Errorf("line %d: the same token as line %d", n, first)
		}
		seen[d] = n
		t.entries = append(t.entries, tokenEntry{digest: d, role: role, line: n})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: too long", n+1)
		}
		return nil, err
	}
	if len(t.entries) == 0 {
		return nil, ErrNoTokens
	}
	return t, nil
}

// Check returns the role of a presented token (RoleNone when it is none of
// them) and the token file's line that holds it (0 when none). Every
// token is compared, each in constant time, whatever matched before.
func (t *Tokens) Check(presented string) (Role, int) {
	if t == nil || presented == "" || len(presented) > MaxTokenLength {
		return RoleNone, 0
	}
	d := sha256.Sum256([]byte(presented))
	role, line := RoleNone, 0
	for _, e := range t.entries {
		eq := subtle.ConstantTimeCompare(d[:], e.digest[:])
		role = Role(subtle.ConstantTimeSelect(eq, int(e.role), int(role)))
		line = subtle.ConstantTimeSelect(eq, e.line, line)
	}
	return role, line
}

// Len is the number of tokens.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.entries)
}

// DeriveKey derives a 32-byte key for purpose from every token held (their
// digests and roles, in the file's order): the same in every process that
// read the same tokens, another one as soon as a token is added, removed
// or changes role. Package fleet/web signs its sessions with it. Nil when
// there are no tokens.
func (t *Tokens) DeriveKey(purpose string) []byte {
	if t.Len() == 0 {
		return nil
	}
	var secret []byte
	for _, e := range t.entries {
		secret = append(secret, e.digest[:]...)
		secret = append(secret, byte(e.role))
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("rimon token-derived key\x00" + purpose))
	return m.Sum(nil)
}
