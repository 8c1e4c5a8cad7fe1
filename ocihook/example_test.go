package ocihook_test

import (
	"fmt"

	"github.com/rimon-dev/rimon/ocihook"
)

// The launch description of two starts of one image by podman: the ids,
// the host names and the per-container paths differ, the digest does not.
func ExampleConfig_Launch() {
	for _, id := range []string{
		"cc2a8dd0f4b588b802011040cfbccdf795bf95db49868fd2314b11e096b447db",
		"7626b126f4008ab786bdc58ac33b5792ff478a1af90513dbf12337d1615b8f39",
	} {
		cfg, err := ocihook.ParseConfig("config.json", []byte(`{"root":{"path":"/var/lib/containers/storage/vfs/dir/`+id+`"},`+
			`"hostname":"`+id[:12]+`","process":{"args":["/hello"],"env":["HOSTNAME=`+id[:12]+`"]},`+
			`"mounts":[{"destination":"/etc/hosts","type":"bind","source":"/run/containers/storage/vfs-containers/`+id+`/userdata/hosts"}]}`))
		if err != nil {
			fmt.Println(err)
			return
		}
		normal, digest := cfg.Launch(id)
		fmt.Printf("%s\n%s\n", normal, digest)
	}
	// Output:
	// {"hostname":"{id}","mounts":[{"destination":"/etc/hosts","source":"/run/containers/storage/vfs-containers/{id}/userdata/hosts","type":"bind"}],"process":{"args":["/hello"],"env":["HOSTNAME={id}"]},"root":{}}
	// 364e795c192b59fe2f835dc7f613b753c3585cdc58994c067bfe7d7e8ab3abd8
	// {"hostname":"{id}","mounts":[{"destination":"/etc/hosts","source":"/run/containers/storage/vfs-containers/{id}/userdata/hosts","type":"bind"}],"process":{"args":["/hello"],"env":["HOSTNAME={id}"]},"root":{}}
	// 364e795c192b59fe2f835dc7f613b753c3585cdc58994c067bfe7d7e8ab3abd8
}
