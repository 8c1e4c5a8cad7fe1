package webhook

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The known-answer vector of the Standard Webhooks reference libraries:
// standard-webhooks/standard-webhooks, libraries/go/webhook_test.go
// (TestWebhookSign) and libraries/python/tests/test_webhooks.py
// (test_sign_function) publish the same values.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	// Signatures from the same tests that must not verify: a wrong MAC,
	// and the right bytes under an unknown version.
	vectorWrong     = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
	vectorOneBitOff = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
)

func vectorKey(t *testing.T) []byte {
	t.Helper()
	key, err := ParseSecret(vectorSecret)
	if err != nil {
		t.Fatalf("ParseSecret(%q) = %v", vectorSecret, err)
	}
	return key
}

func TestSignVector(t *testing.T) {
	got := Sign(vectorKey(t), vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody))
	if got != vectorSignature {
		t.Errorf("Sign(vector) = %s, want %s", got, vectorSignature)
	}
	// The header carries whole seconds: a fraction must not change it.
	got = Sign(vectorKey(t), vectorID, time.Unix(vectorTimestamp, 999_999_999), []byte(vectorBody))
	if got != vectorSignature {
		t.Errorf("Sign(vector + 0.999s) = %s, want %s", got, vectorSignature)
	}
}

func vectorHeader(sig string) http.Header {
	h := http.Header{}
	h.Set(HeaderID, vectorID)
	h.Set(HeaderTimestamp, strconv.Itoa(vectorTimestamp))
	h.Set(HeaderSignature, sig)
	return h
}

func TestVerify(t *testing.T) {
	key := vectorKey(t)
	at := time.Unix(vectorTimestamp, 0)
	body := []byte(vectorBody)
	tests := []struct {
		name    string
		header  func() http.Header
		body    []byte
		now     time.Time
		tol     time.Duration
		wantErr error
	}{
		{name: "published vector", header: func() http.Header { return vectorHeader(vectorSignature) }},
		{name: "vector among others (rotation)", header: func() http.Header {
			return vectorHeader(strings.Join([]string{vectorWrong, "v2," + vectorSignature[3:], vectorSignature, vectorWrong}, " "))
		}},
		{name: "wrong mac", header: func() http.Header { return vectorHeader(vectorWrong) }, wantErr: ErrSignature},
		{name: "one bit off", header: func() http.Header { return vectorHeader(vectorOneBitOff) }, wantErr: ErrSignature},
		{name: "right mac under another version", header: func() http.Header { return vectorHeader("v1a," + vectorSignature[3:]) }, wantErr: ErrSignature},
		{name: "no comma", header: func() http.Header { return vectorHeader("v1" + vectorSignature[3:]) }, wantErr: ErrSignature},
		{name: "body changed", header: func() http.Header { return vectorHeader(vectorSignature) }, body: []byte(`{"test": 2432232315}`), wantErr: ErrSignature},
		{name: "id changed", header: func() http.Header {
			h := vectorHeader(vectorSignature)
			h.Set(HeaderID, "msg_p5jXN8AQM9LWM0D4loKWxJeK")
			return h
		}, wantErr: ErrSignature},
		{name: "timestamp moved one second", header: func() http.Header {
			h := vectorHeader(vectorSignature)
			h.Set(HeaderTimestamp, strconv.Itoa(vectorTimestamp+1))
			return h
		}, wantErr: ErrSignature},
		{name: "missing id", header: func() http.Header { h := vectorHeader(vectorSignature); h.Del(HeaderID); return h }, wantErr: ErrHeader},
		{name: "missing timestamp", header: func() http.Header { h := vectorHeader(vectorSignature); h.Del(HeaderTimestamp); return h }, wantErr: ErrHeader},
		{name: "missing signature", header: func() http.Header { h := vectorHeader(vectorSignature); h.Del(HeaderSignature); return h }, wantErr: ErrHeader},
		{name: "timestamp not a number", header: func() http.Header {
			h := vectorHeader(vectorSignature)
			h.Set(HeaderTimestamp, "hello")
			return h
		}, wantErr: ErrHeader},
		{name: "timestamp with sign", header: func() http.Header {
			h := vectorHeader(vectorSignature)
			h.Set(HeaderTimestamp, "+"+strconv.Itoa(vectorTimestamp))
			return h
		}, wantErr: ErrHeader},
		{name: "id with a full stop", header: func() http.Header {
			h := vectorHeader(vectorSignature)
			h.Set(HeaderID, "msg.1")
			return h
		}, wantErr: ErrHeader},
		{name: "at the edge of the tolerance, old", header: func() http.Header { return vectorHeader(vectorSignature) }, now: at.Add(5 * time.Minute)},
		{name: "at the edge of the tolerance, new", header: func() http.Header { return vectorHeader(vectorSignature) }, now: at.Add(-5 * time.Minute)},
		{name: "too old", header: func() http.Header { return vectorHeader(vectorSignature) }, now: at.Add(5*time.Minute + time.Second), wantErr: ErrTimestamp},
		{name: "from the future", header: func() http.Header { return vectorHeader(vectorSignature) }, now: at.Add(-5*time.Minute - time.Second), wantErr: ErrTimestamp},
		{name: "custom tolerance", header: func() http.Header { return vectorHeader(vectorSignature) }, now: at.Add(11 * time.Second), tol: 10 * time.Second, wantErr: ErrTimestamp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = at
			}
			b := tc.body
			if b == nil {
				b = body
			}
			err := Verify(key, tc.header(), b, now, tc.tol)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrNotVerified) {
				t.Fatalf("Verify = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestVerifyOtherSecret(t *testing.T) {
	other, err := ParseSecret(FormatSecret([]byte("another secret of 24 byt")))
	if err != nil {
		t.Fatal(err)
	}
	err = Verify(other, vectorHeader(vectorSignature), []byte(vectorBody), time.Unix(vectorTimestamp, 0), 0)
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("Verify with another secret = %v, want %v", err, ErrSignature)
	}
	if err := Verify(nil, vectorHeader(vectorSignature), []byte(vectorBody), time.Unix(vectorTimestamp, 0), 0); !errors.Is(err, ErrNotVerified) {
		t.Fatalf("Verify with no secret = %v, want %v", err, ErrNotVerified)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	key := vectorKey(t)
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	body := []byte(`{"type":"agent.state_changed"}`)
	h := http.Header{}
	h.Set(HeaderID, "msg_abc")
	h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(HeaderSignature, Sign(key, "msg_abc", now, body))
	if err := Verify(key, h, body, now.Add(time.Minute), 0); err != nil {
		t.Fatalf("Verify(Sign(...)) = %v", err)
	}
}

func TestParseSecret(t *testing.T) {
	tests := []struct {
		in      string
		wantLen int
		wantErr bool
	}{
		{in: vectorSecret, wantLen: 24},
		{in: vectorSecret + "\n", wantLen: 24},
		{in: FormatSecret(make([]byte, 64)), wantLen: 64},
		{in: "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", wantErr: true},            // no prefix
		{in: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", wantErr: true},      // not base64
		{in: "whsec_" + FormatSecret(make([]byte, 23))[6:], wantErr: true}, // too short
		{in: FormatSecret(make([]byte, 65)), wantErr: true},                // too long
		{in: "whsec_", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		key, err := ParseSecret(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrSecret) {
				t.Errorf("ParseSecret(%q) = %v, want %v", tc.in, err, ErrSecret)
			}
			continue
		}
		if err != nil || len(key) != tc.wantLen {
			t.Errorf("ParseSecret(%q) = %d bytes, %v; want %d bytes", tc.in, len(key), err, tc.wantLen)
		}
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(vectorID, strconv.Itoa(vectorTimestamp), vectorSignature, []byte(vectorBody))
	f.Add("msg_1", "1", "v1,AAAA v1a,BBBB", []byte("{}"))
	key := []byte("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderID, id)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		n, perr := strconv.ParseInt(ts, 10, 64)
		err := Verify(key, h, body, time.Unix(n, 0), time.Hour)
		if err == nil {
			// Only a real signature of exactly these values verifies.
			want := Sign(key, id, time.Unix(n, 0), body)[3:]
			found := false
			for _, f := range strings.Fields(sig) {
				v, b, _ := strings.Cut(f, ",")
				got, derr := base64.StdEncoding.DecodeString(b)
				wantRaw, _ := base64.StdEncoding.DecodeString(want)
				if v == "v1" && derr == nil && bytes.Equal(got, wantRaw) {
					found = true
				}
			}
			if perr != nil || !found {
				t.Fatalf("Verify accepted id %q ts %q sig %q", id, ts, sig)
			}
		}
	})
}
