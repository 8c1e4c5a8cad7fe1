package sdunit

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
	"github.com/google/go-cmp/cmp"
)

// privateBus starts a dbus-daemon for the test and returns its address.
func privateBus(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Fatalf("dbus-daemon is not installed (apt-get install dbus): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "--session", "--address=unix:path="+filepath.Join(dir, "bus"), "--nofork", "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon printed no address: %v", err)
	}
	return strings.TrimSpace(addr)
}

func dial(addr string) (*dbus.Conn, error) {
	c, err := dbus.Dial(addr)
	if err != nil {
		return nil, err
	}
	if err := c.Auth(nil); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Hello(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// execEntry is one entry of systemd's ExecStart property, a(sasbttttuii).
type execEntry struct {
	Path           string
	Args           []string
	Ignore         bool
	T1, T2, T3, T4 uint64
	Pid            uint32
	Code, Status   int32
}

// fakeSystemd serves the properties systemd would for one service.
func fakeSystemd(t *testing.T, addr, name, fragment string, dropins []string, execs []execEntry) {
	t.Helper()
	c, err := dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if r, err := c.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", r, err)
	}
	path := dbus.ObjectPath("/org/freedesktop/systemd1/unit/" + sddbus.PathBusEscape(name))
	_, err = prop.Export(c, path, prop.Map{
		"org.freedesktop.systemd1.Unit": {
			"LoadState":    {Value: "loaded"},
			"FragmentPath": {Value: fragment},
			"DropInPaths":  {Value: dropins},
		},
		"org.freedesktop.systemd1.Service": {
			"ExecStart": {Value: execs},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFromBus(t *testing.T) {
	addr := privateBus(t)
	fakeSystemd(t, addr, "web.service", "/etc/systemd/system/web.service", []string{"/run/systemd/system/web.service.d/x.conf"},
		[]execEntry{{Path: "/usr/bin/web", Args: []string{"web", "--port", "80"}}})
	conn, err := sddbus.NewConnection(func() (*dbus.Conn, error) { return dial(addr) })
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	u, err := FromBus(context.Background(), conn, "web")
	if err != nil {
		t.Fatal(err)
	}
	want := &Unit{Name: "web.service", File: "/etc/systemd/system/web.service",
		DropIns: []string{"/run/systemd/system/web.service.d/x.conf"}, Exec: []string{"/usr/bin/web"}}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Errorf("FromBus (-want +got):\n%s", diff)
	}
	if _, err := FromBus(context.Background(), conn, "none.service"); err == nil {
		t.Error("FromBus of a unit the bus does not know succeeded")
	}
}
