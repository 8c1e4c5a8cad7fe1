package ocihook

import (
	"context"
	"fmt"

	"github.com/rimon-dev/rimon/eventlog"
	"github.com/rimon-dev/rimon/measure"
)

// Options say what [Measure] measures.
type Options struct {
	// SkipRootfs leaves the root file system out (the policy's
	// containers.rootfs: false); by default it is measured.
	SkipRootfs bool
	// Budget bounds the work on each file of the root file system and how
	// many are hashed at once (0 workers: one per core).
	Budget measure.Options
}

// Measurement is a container start, measured.
type Measurement struct {
	// Container is what the record holds.
	Container eventlog.Container
	// Normal is the launch description's normal form.
	Normal []byte
	// Notes are things the caller may want to tell a person: what could
	// not be found (the image identity when podman's storage files cannot
	// be read).
	Notes []string
}

// Name returns the container's name: from the annotations of Kubernetes
// runtimes and nerdctl, else podman's storage (podmanName, "" when
// unknown), else its id.
func name(st *State, cfg *Config, podmanName string) string {
	if n := nameFromAnnotations(cfg.Annotations); n != "" {
		return n
	}
	if n := nameFromAnnotations(st.Annotations); n != "" {
		return n
	}
	if podmanName != "" {
		return podmanName
	}
	return st.ID
}

// Identify returns the container's name and image identity, with notes on
// what could not be read.
func Identify(st *State, cfg *Config) (string, Image, []string) {
	var notes []string
	im, ok := imageFromAnnotations(cfg.Annotations)
	if !ok {
		im, ok = imageFromAnnotations(st.Annotations)
	}
	pname := ""
	if !ok {
		n, pim, isPodman, err := podmanStorage(st.Bundle, st.ID)
		switch {
		case err != nil:
			notes = append(notes, fmt.Sprintf("image identity unknown: podman storage: %v", err))
		case isPodman:
			pname, im = n, pim
		}
	}
	return name(st, cfg, pname), im, notes
}

// Measure measures the container that st and cfg describe: its launch
// description, its root file system (unless o.SkipRootfs) and its image
// identity. Nothing is returned when any measurement fails.
func Measure(ctx context.Context, st *State, cfg *Config, o Options) (*Measurement, error) {
	rootfs, err := cfg.Rootfs(st.Bundle)
	if err != nil {
		return nil, err
	}
	name, im, notes := Identify(st, cfg)
	if err := eventlog.CheckContainerName(name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	normal, launch := cfg.Launch(st.ID)
	m := &Measurement{Normal: normal, Notes: notes, Container: eventlog.Container{
		Name: name, ID: st.ID, Rootfs: rootfs, LaunchSHA256: launch,
		ImageName: im.Name, ImageRef: im.Ref, ImageID: im.ID, ImageDigest: im.Digest, ImageSource: im.Source,
	}}
	if !o.SkipRootfs {
		tr, err := measure.TreeWith(ctx, rootfs, o.Budget)
		if err != nil {
			return nil, fmt.Errorf("container %s: root file system: %w", name, err)
		}
		m.Container.RootfsSHA256, m.Container.RootfsEntries = tr.Digest.String(), uint64(len(tr.Entries))
	}
	return m, nil
}
