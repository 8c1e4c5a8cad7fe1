package tpm

import "time"

// SetFirstTimeout shortens the first command's deadline for a test.
func SetFirstTimeout(d time.Duration) (restore func()) {
	old := firstTimeout
	firstTimeout = d
	return func() { firstTimeout = old }
}
