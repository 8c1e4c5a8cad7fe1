package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/rimon-dev/rimon/fleet/api"
)

// CookieName is the session cookie's name. The __Host- prefix makes a
// browser keep it only when it is Secure, for this host alone and for
// the path /.
const CookieName = "__Host-rimon_session"

// sessionVersion starts every cookie value: another format is refused.
const sessionVersion = "v1"

// session is what a signed cookie says.
type session struct {
	expires time.Time
	role    api.Role
	line    int
	id      [16]byte
}

const sessionLen = 8 + 1 + 4 + 16

var errSession = errors.New("not a valid session")

// sessions signs and checks session cookies and remembers the ids signed
// out until they would expire.
type sessions struct {
	key []byte
	mu  sync.Mutex
	out map[[16]byte]time.Time
}

func newSessions(key []byte) *sessions {
	if len(key) == 0 {
		key = make([]byte, 32)
		rand.Read(key) // never fails (crypto/rand since Go 1.24)
	}
	return &sessions{key: key, out: map[[16]byte]time.Time{}}
}

func (s *sessions) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte("rimon ui session\x00" + sessionVersion + "." + payload))
	return m.Sum(nil)
}

// issue makes a new session's cookie value.
func (s *sessions) issue(role api.Role, line int, expires time.Time) string {
	var b [sessionLen]byte
	binary.BigEndian.PutUint64(b[0:8], uint64(expires.Unix()))
	b[8] = byte(role)
	binary.BigEndian.PutUint32(b[9:13], uint32(line))
	rand.Read(b[13:])
	payload := base64.RawURLEncoding.EncodeToString(b[:])
	return sessionVersion + "." + payload + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

// check verifies a cookie value's signature (in constant time), its
// expiry and that it was not signed out.
func (s *sessions) check(value string, now time.Time) (session, error) {
	var zero session
	parts := strings.Split(value, ".")
	if len(parts) != 3 || parts[0] != sessionVersion || len(value) > 256 {
		return zero, errSession
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, s.mac(parts[1])) {
		return zero, errSession
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || len(b) != sessionLen {
		return zero, errSession
	}
	se := session{expires: time.Unix(int64(binary.BigEndian.Uint64(b[0:8])), 0), role: api.Role(b[8]), line: int(binary.BigEndian.Uint32(b[9:13]))}
	copy(se.id[:], b[13:])
	if !now.Before(se.expires) || (se.role != api.RoleRead && se.role != api.RoleAdmin) {
		return zero, errSession
	}
	s.mu.Lock()
	_, gone := s.out[se.id]
	s.mu.Unlock()
	if gone {
		return zero, errSession
	}
	return se, nil
}

// revoke forgets a session until it would have expired.
func (s *sessions) revoke(se session, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, exp := range s.out {
		if !now.Before(exp) {
			delete(s.out, id)
		}
	}
	s.out[se.id] = se.expires
}
