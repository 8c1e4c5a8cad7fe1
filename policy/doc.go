// Package policy turns rimon's YAML policy into validated values: what to
// measure, what to leave out, and the agent's settings.
//
// # Format
//
//	settings:
//	  pcr: 23                 # PCR to extend (0-23)
//	  banks: [sha256, sha384] # banks to extend; default: every active bank
//	  log: /run/rimon/measurements.log
//	  debounce: 200ms         # quiet time before a changed file is measured
//	  rescan: 5m              # periodic full rescan; 0 turns it off
//	  symlinks: follow        # follow: measure what a link points to; skip: ignore links found in directories
//	measure:
//	  - file: /usr/bin/myapp          # one file
//	  - glob: /etc/myapp/*.conf       # files matching a pattern ("**" spans directories)
//	  - dir: /opt/myapp/bin           # every file below, recursively, new ones included
//	    exclude: ["*.pyc"]
//	  - tree: /opt/myapp/static       # the whole tree as one digest (docs/FORMAT.md)
//	  - image: /var/lib/images/web.tar # an OCI layout or a docker/podman save archive
//	exclude:
//	  - "*.swp"
//	  - /opt/myapp/bin/cache/**
//
// Patterns: "*", "?" and "[...]" match within one path segment, "**" matches
// any number of segments. A pattern without "/" matches a file's base name
// anywhere; any other pattern must be absolute and matches the whole path.
//
// Parsing is strict: unknown keys, wrong types, relative paths and bad
// patterns are errors that name the file, line and field.
package policy
