package sdunit

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// FromBus asks systemd over D-Bus what the unit is made of: the unit file
// and drop-ins it loaded (FragmentPath, DropInPaths) and the ExecStart=
// binaries it would run. This is what systemd actually uses, including
// units generated at boot and changes not yet reloaded.
func FromBus(ctx context.Context, conn *sddbus.Conn, name string) (*Unit, error) {
	name = withSuffix(name)
	props, err := conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%s over D-Bus: %w", name, err)
	}
	if s, _ := props["LoadState"].(string); s == "not-found" {
		return nil, fmt.Errorf("%w: systemd has no unit %s", ErrNotFound, name)
	}
	u := &Unit{Name: name}
	u.File, _ = props["FragmentPath"].(string)
	if u.File == "" {
		return nil, fmt.Errorf("%s: systemd reports no unit file (FragmentPath)", name)
	}
	u.DropIns, _ = props["DropInPaths"].([]string)
	p, err := conn.GetUnitTypePropertyContext(ctx, name, "Service", "ExecStart")
	if err != nil {
		return nil, fmt.Errorf("%s over D-Bus: ExecStart: %w", name, err)
	}
	entries, ok := p.Value.Value().([][]any)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected ExecStart type %s", name, p.Value.Signature())
	}
	for _, e := range entries {
		if len(e) == 0 {
			continue
		}
		bin, ok := e[0].(string)
		if !ok || !filepath.IsAbs(bin) {
			return nil, fmt.Errorf("%s: ExecStart path %v is not absolute", name, e[0])
		}
		u.Exec = append(u.Exec, filepath.Clean(bin))
	}
	if len(u.Exec) == 0 {
		return nil, fmt.Errorf("%s: no ExecStart=", name)
	}
	return u, nil
}

// Lookup asks systemd over the system bus and, when there is no bus (a
// container, an early boot), reads the unit files on disk. It says which
// source answered.
func Lookup(ctx context.Context, name string) (u *Unit, source string, err error) {
	conn, busErr := sddbus.NewSystemConnectionContext(ctx)
	if busErr == nil {
		defer conn.Close()
		u, err := FromBus(ctx, conn, name)
		if err == nil || errors.Is(err, ErrNotFound) {
			return u, "systemd over D-Bus", err
		}
		return nil, "", err
	}
	u, err = Find(name, nil)
	return u, fmt.Sprintf("unit files on disk (no system bus: %v)", busErr), err
}

func withSuffix(name string) string {
	for i := len(name) - 1; i >= 0 && name[i] != '/'; i-- {
		if name[i] == '.' {
			return name
		}
	}
	return name + ".service"
}
