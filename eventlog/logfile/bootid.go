package logfile

import (
	"fmt"
	"os"
	"strings"
)

// BootIDFile is where Linux publishes the current boot's random ID.
const BootIDFile = "/proc/sys/kernel/random/boot_id"

// CurrentBootID returns this boot's ID from [BootIDFile].
func CurrentBootID() (string, error) {
	b, err := os.ReadFile(BootIDFile)
	if err != nil {
		return "", fmt.Errorf("read boot ID: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
