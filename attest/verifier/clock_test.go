package verifier_test

import (
	"context"
	"testing"

	"github.com/rimon-dev/rimon/attest/verifier"
)

// TestClock: a verdict carries the quote's clock information as the TPM
// signed it; evidence whose quote fails its own checks carries none.
func TestClock(t *testing.T) {
	a := newAttested(t)
	res, err := verifier.Verify(context.Background(), a.input(), verifier.Options{AK: a.ak, Nonce: nonce})
	if err != nil {
		t.Fatal(err)
	}
	if res.Clock == nil || res.Clock.Clock == 0 {
		t.Fatalf("Clock = %+v, want the quote's clock", res.Clock)
	}
	res, err = verifier.Verify(context.Background(), a.input(), verifier.Options{AK: a.ak, Nonce: []byte("another-nonce-here")})
	if err == nil || res.Clock != nil {
		t.Errorf("another nonce: %v, Clock %+v; want an error and no clock", err, res.Clock)
	}
}
