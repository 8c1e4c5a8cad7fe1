package agent_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/rimon-dev/rimon/attest/agent"
	"github.com/rimon-dev/rimon/attest/enroll"
)

// BenchmarkEnroll measures one enrollment over HTTP against swtpm (fetch
// the identity, check the chain, make the credential, activate it):
//
//	go test ./attest/agent -run XXX -bench Enroll -benchtime 20x
func BenchmarkEnroll(b *testing.B) {
	for _, tc := range []struct {
		name string
		idx  uint32
	}{{"RSA2048", 0x01C00002}, {"P384", 0x01C00016}} {
		b.Run(tc.name, func(b *testing.B) {
			a := startEKAgent(b)
			ctx := context.Background()
			act := agent.HTTPActivator(http.DefaultClient, a.url)
			for b.Loop() {
				id, err := agent.FetchIdentity(ctx, http.DefaultClient, a.url)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := enroll.Enroll(ctx, id, enroll.Options{EKCAs: a.cas, EKIndex: tc.idx}, act); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
