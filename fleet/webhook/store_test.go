package webhook

import (
	"testing"

	"github.com/rimon-dev/rimon/fleet"
)

func newStore(t *testing.T) fleet.Store {
	t.Helper()
	return newMemStore()
}
