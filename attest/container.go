package attest

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/policy"
)

// KindContainer is a container start, recorded by the OCI hook.
const KindContainer = eventlog.KindContainer

// Verdicts of a container start.
const (
	// ContainerApproved: the reference lists the container and allows
	// every digest it lists for it.
	ContainerApproved = "approved"
	// ContainerNotApproved: a digest is not allowed, or missing.
	ContainerNotApproved = "not approved"
	// ContainerUnlisted: no entry of the reference covers its name (a
	// failure, or a warning with "unlisted: warn").
	ContainerUnlisted = "unlisted"
	// ContainerUnchecked: there is no reference to check it with.
	ContainerUnchecked = "unchecked"
)

// ContainerStart is one container start a trusted record reports, with
// its verdict.
type ContainerStart struct {
	Index    int                `json:"record"`
	Record   eventlog.Container `json:"container"`
	Verdict  string             `json:"verdict"`
	Problems []string           `json:"problems,omitempty"`
}

// CheckContainer checks a container start against the reference's
// containers section: the entry for its name (an exact name first, then
// the first pattern that matches) must allow its launch digest, its root
// file system digest and its image (its image id or manifest digest), for
// each of them that the entry lists. A start whose root file system or
// image identity was not recorded fails an entry that lists them.
func CheckContainer(ref *policy.Reference, c eventlog.Container) (verdict string, problems []string) {
	if ref == nil {
		return ContainerUnchecked, nil
	}
	if eventlog.CheckContainerName(c.Name) != nil || c.LaunchSHA256 == "" {
		return ContainerNotApproved, []string{"malformed container record: it needs a valid name and a launch digest"}
	}
	e, ok := policy.LookupContainer(ref.Containers, c.Name)
	if !ok {
		return ContainerUnlisted, []string{"container not listed in the reference"}
	}
	if len(e.Launch) > 0 && !slices.Contains(e.Launch, c.LaunchSHA256) {
		problems = append(problems, fmt.Sprintf("launch digest %s not allowed by %s", c.LaunchSHA256, e))
	}
	switch {
	case len(e.Rootfs) == 0:
	case c.RootfsSHA256 == "":
		problems = append(problems, fmt.Sprintf("root file system not measured, and %s lists its digests", e))
	case !slices.Contains(e.Rootfs, c.RootfsSHA256):
		problems = append(problems, fmt.Sprintf("root file system digest %s not allowed by %s", c.RootfsSHA256, e))
	}
	switch {
	case len(e.Image) == 0:
	case c.ImageID == "" && c.ImageDigest == "":
		problems = append(problems, fmt.Sprintf("image identity unknown, and %s lists images", e))
	case !contains(e.Image, c.ImageID) && !contains(e.Image, c.ImageDigest):
		problems = append(problems, fmt.Sprintf("image %s not allowed by %s", strings.Trim(c.ImageID+" "+c.ImageDigest, " "), e))
	}
	if len(problems) > 0 {
		return ContainerNotApproved, problems
	}
	return ContainerApproved, nil
}

// container checks a container record as it streams by: a start the
// reference does not approve is a failure (an unlisted one a warning when
// the reference says "unlisted: warn").
func (c *refChecker) container(i int, v fields) {
	if c.ref == nil {
		return
	}
	ct := containerFromView(v)
	verdict, problems := CheckContainer(c.ref, ct)
	if verdict == ContainerApproved {
		return
	}
	c.add(verdict == ContainerUnlisted && !c.ref.FailUnlisted, func() Finding {
		return Finding{Measured: Measured{Index: i, Kind: KindContainer, Path: ct.Name, Reason: v.Str("reason")},
			Problem: strings.Join(problems, "; ")}
	})
}

func containerFromView(v fields) eventlog.Container {
	return eventlog.Container{
		Name: v.Str("name"), ID: v.Str("container_id"), Rootfs: v.Str("path"), RootfsSHA256: v.Str("sha256"),
		LaunchSHA256: v.Str("launch_sha256"), ImageName: v.Str("image_name"), ImageRef: v.Str("image_ref"),
		ImageID: v.Str("image_id"), ImageDigest: v.Str("image_digest"), ImageSource: v.Str("image_source"),
	}
}

// ContainerStarts reads a log (RFC 7464 records, numbered from first) and
// returns every container start among the records before covered (the
// prefix a verification trusted), each checked with [CheckContainer]. It
// reads only: the records' digests were verified when the log was matched
// to the quote, and a caller must pass the same log.
func ContainerStarts(log io.Reader, first, covered int, ref *policy.Reference) ([]ContainerStart, error) {
	rd := eventlog.NewReader(log, 0)
	var out []ContainerStart
	for i := first; i < covered; i++ {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("record %d: %w", i, err)
		}
		if rec.ContentType != eventlog.ContentTypeRimon || rec.Content.Str("kind") != KindContainer {
			continue
		}
		ct := eventlog.ContainerFromContent(rec.Content)
		verdict, problems := CheckContainer(ref, ct)
		out = append(out, ContainerStart{Index: i, Record: ct, Verdict: verdict, Problems: problems})
	}
	return out, nil
}
