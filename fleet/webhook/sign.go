// Package webhook signs, verifies and delivers the fleet verifier's alerts
// as Standard Webhooks (https://www.standardwebhooks.com, specification
// 1.0.0): an HTTP POST of a JSON body with the headers webhook-id,
// webhook-timestamp and webhook-signature.
//
// # Signatures
//
// [Sign] computes the symmetric ("v1") signature: the base64 HMAC-SHA256,
// keyed with the endpoint's secret, of "{webhook-id}.{webhook-timestamp}.{body}",
// where the timestamp is the attempt's time in unix seconds. [Verify] is the
// receiver's side: it accepts the message when any "v1" entry of the
// space-separated webhook-signature header matches (compared in constant
// time) and the timestamp is within a tolerance of the receiver's clock,
// which bounds replays. Secrets are written "whsec_" followed by base64
// ([ParseSecret]).
//
// # Delivery
//
// A [Sender] delivers the durable outbox the store keeps
// ([fleet.Store.DueDeliveries]): at least once, with the same webhook-id
// on every retry so that receivers can deduplicate, retried with
// exponential backoff for at least a day, honouring Retry-After, and
// stopping for good at 410 Gone. See [Sender] for the rules.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts a symmetric secret's text form.
const SecretPrefix = "whsec_"

// Secret sizes the specification allows for HMAC-SHA256 keys: at least 24
// bytes (192 bits), at most 64 (512 bits).
const (
	MinSecretSize = 24
	MaxSecretSize = 64
)

// DefaultTolerance is how far a webhook-timestamp may be from the
// receiver's clock when [Verify] is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// ErrSecret reports a secret that cannot be used.
var ErrSecret = errors.New("invalid webhook secret")

// ErrNotVerified is what every [Verify] failure unwraps to; the more
// specific errors below unwrap to it as well.
var ErrNotVerified = errors.New("webhook not verified")

// Reasons a message is refused; each unwraps to [ErrNotVerified].
var (
	// ErrHeader: a required header is missing or malformed.
	ErrHeader = fmt.Errorf("%w: bad header", ErrNotVerified)
	// ErrTimestamp: the webhook-timestamp is too old or in the future.
	ErrTimestamp = fmt.Errorf("%w: timestamp outside the tolerance", ErrNotVerified)
	// ErrSignature: no signature matches.
	ErrSignature = fmt.Errorf("%w: no matching signature", ErrNotVerified)
)

// ParseSecret decodes a secret written "whsec_" followed by standard
// base64 (surrounding white space, such as a file's final newline, is
// ignored). The key must be 24 to 64 bytes long.
func ParseSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	b64, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: it must start with %q followed by base64", ErrSecret, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%w: the part after %q is not standard base64: %v", ErrSecret, SecretPrefix, err)
	}
	if len(key) < MinSecretSize || len(key) > MaxSecretSize {
		return nil, fmt.Errorf("%w: the key is %d bytes; it must be %d to %d bytes (generate one with: printf 'whsec_%%s\\n' \"$(head -c 32 /dev/urandom | base64)\")",
			ErrSecret, len(key), MinSecretSize, MaxSecretSize)
	}
	return key, nil
}

// FormatSecret writes a key in the "whsec_" form [ParseSecret] reads.
func FormatSecret(key []byte) string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

// Sign returns the webhook-signature value ("v1," and the base64
// HMAC-SHA256 of "id.timestamp.body") for a message sent at ts (unix
// seconds; the fraction is dropped, as the header carries whole seconds).
func Sign(secret []byte, id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(secret, id, ts.Unix(), body))
}

func mac(secret []byte, id string, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a received message: the webhook-id, webhook-timestamp and
// webhook-signature headers of h against body, the secret and the
// receiver's clock now. The timestamp must be within tolerance of now in
// either direction (tolerance <= 0 means [DefaultTolerance]); at least one
// "v1" signature of the space-separated list must match; entries of other
// versions are ignored. The error unwraps to [ErrHeader], [ErrTimestamp] or
// [ErrSignature], and so to [ErrNotVerified].
func Verify(secret []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	if len(secret) == 0 {
		return fmt.Errorf("%w: empty secret", ErrNotVerified)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	id := h.Get(HeaderID)
	if id == "" {
		return fmt.Errorf("%w: %s is missing", ErrHeader, HeaderID)
	}
	if strings.Contains(id, ".") {
		return fmt.Errorf("%w: %s contains a full stop", ErrHeader, HeaderID)
	}
	tsText := h.Get(HeaderTimestamp)
	if tsText == "" {
		return fmt.Errorf("%w: %s is missing", ErrHeader, HeaderTimestamp)
	}
	ts, err := parseUnix(tsText)
	if err != nil {
		return fmt.Errorf("%w: %s %q: %v", ErrHeader, HeaderTimestamp, tsText, err)
	}
	sigs := h.Get(HeaderSignature)
	if sigs == "" {
		return fmt.Errorf("%w: %s is missing", ErrHeader, HeaderSignature)
	}
	// The timestamp is checked before the signature is computed, as the
	// reference libraries do; both must pass.
	at := time.Unix(ts, 0)
	if d := now.Sub(at); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s %d is %s from the receiver's clock, beyond %s",
			ErrTimestamp, HeaderTimestamp, ts, d.Round(time.Second), tolerance)
	}
	want := mac(secret, id, ts, body)
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("%w (message %s)", ErrSignature, id)
}

// parseUnix reads a non-negative decimal count of seconds (digits only:
// no sign, no fraction, no spaces).
func parseUnix(s string) (int64, error) {
	if len(s) > 18 {
		return 0, errors.New("too long")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not unix seconds in decimal digits")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}
