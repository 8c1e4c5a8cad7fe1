package eventlog

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// KindContainer records a container measured by the OCI runtime hook
// before its process ran (docs/FORMAT.md, "Container records").
const KindContainer = "container"

// ReasonContainer opens the reason of a container record: the container's
// name follows it ("launch:container:web").
const ReasonContainer = ReasonLaunch + ":container:"

// Container is the typed view of a container record. The record's path is
// the root file system, its sha256 and size the root file system's tree
// digest and number of entries (empty and 0 when the policy turns the root
// file system's measurement off).
type Container struct {
	// Name is the container's name (from annotations or the container
	// manager's storage, else its id).
	Name string `json:"name"`
	// ID is the runtime's container id.
	ID string `json:"container_id"`
	// Rootfs is the root file system's absolute path.
	Rootfs string `json:"rootfs"`
	// RootfsSHA256 is its tree digest (lowercase hex), "" when not measured.
	RootfsSHA256 string `json:"rootfs_sha256,omitempty"`
	// RootfsEntries is the number of entries of the tree.
	RootfsEntries uint64 `json:"rootfs_entries,omitempty"`
	// LaunchSHA256 is the launch digest (lowercase hex).
	LaunchSHA256 string `json:"launch_sha256"`
	// Image identity, each "" when unknown: the image's name (a tag),
	// the reference CRI-O gives, the image id ("sha256:" and the config's
	// digest), the manifest digest, and who said so (cri-o, containerd,
	// podman).
	ImageName   string `json:"image_name,omitempty"`
	ImageRef    string `json:"image_ref,omitempty"`
	ImageID     string `json:"image_id,omitempty"`
	ImageDigest string `json:"image_digest,omitempty"`
	ImageSource string `json:"image_source,omitempty"`
}

// Field names of a container record's content.
const (
	fieldName        = "name"
	fieldContainerID = "container_id"
	fieldLaunch      = "launch_sha256"
	fieldImageName   = "image_name"
	fieldImageRef    = "image_ref"
	fieldImageID     = "image_id"
	fieldImageDigest = "image_digest"
	fieldImageSource = "image_source"
)

// CheckContainerName accepts a container name a record can carry in its
// reason: 1 to 253 bytes of UTF-8 without control characters.
func CheckContainerName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("container name %q: want 1 to 253 bytes", name)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("container name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("container name %q holds a control character", name)
		}
	}
	return nil
}

// Event returns the record of the container start, checked.
func (c Container) Event() (Event, error) {
	if err := CheckContainerName(c.Name); err != nil {
		return Event{}, err
	}
	if c.ID == "" || !strings.HasPrefix(c.Rootfs, "/") {
		return Event{}, fmt.Errorf("container %s: needs an id and an absolute root file system path (have %q, %q)", c.Name, c.ID, c.Rootfs)
	}
	if !isLowerHex(c.LaunchSHA256, 64) || (c.RootfsSHA256 != "" && !isLowerHex(c.RootfsSHA256, 64)) {
		return Event{}, fmt.Errorf("container %s: launch and root file system digests must be 64 lowercase hex characters", c.Name)
	}
	extra := []Field{
		{Key: fieldName, Str: c.Name},
		{Key: fieldContainerID, Str: c.ID},
		{Key: fieldLaunch, Str: c.LaunchSHA256},
	}
	for _, f := range []Field{
		{Key: fieldImageName, Str: c.ImageName}, {Key: fieldImageRef, Str: c.ImageRef},
		{Key: fieldImageID, Str: c.ImageID}, {Key: fieldImageDigest, Str: c.ImageDigest},
		{Key: fieldImageSource, Str: c.ImageSource},
	} {
		if f.Str != "" {
			extra = append(extra, f)
		}
	}
	return Event{Kind: KindContainer, Path: c.Rootfs, SHA256: c.RootfsSHA256, Size: c.RootfsEntries,
		Reason: ReasonContainer + c.Name, Extra: extra}, nil
}

// ContainerFromContent reads a container record's content.
func ContainerFromContent(c Content) Container {
	return Container{
		Name: c.Str(fieldName), ID: c.Str(fieldContainerID), Rootfs: c.Str("path"),
		RootfsSHA256: c.Str("sha256"), RootfsEntries: c.Num("size"), LaunchSHA256: c.Str(fieldLaunch),
		ImageName: c.Str(fieldImageName), ImageRef: c.Str(fieldImageRef), ImageID: c.Str(fieldImageID),
		ImageDigest: c.Str(fieldImageDigest), ImageSource: c.Str(fieldImageSource),
	}
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}
