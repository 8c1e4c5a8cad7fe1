#!/usr/bin/env bash
# Builds dist/rimon_<version>_<arch>.deb from a rimon binary built by make build.
# Usage: packaging/deb/build.sh BINARY VERSION
set -euo pipefail
bin=$1
version=$2
cd "$(dirname "$0")/../.."
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/rimon

install -D -m 0755 "$bin" "$root/usr/bin/rimon"
install -D -m 0644 packaging/systemd/rimon.service "$root/lib/systemd/system/rimon.service"
install -D -m 0644 packaging/systemd/rimon-verifier.service "$root/lib/systemd/system/rimon-verifier.service"
install -D -m 0640 packaging/examples/minimal.yaml "$root/etc/rimon/policy.yaml"
install -d "$root/usr/share/doc/rimon/examples"
install -m 0644 packaging/examples/*.yaml packaging/systemd/myapp.service.example "$root/usr/share/doc/rimon/examples/"
install -m 0644 packaging/examples/verifier-tokens.example packaging/examples/verifier.env.example "$root/usr/share/doc/rimon/examples/"
install -m 0644 README.md docs/FORMAT.md docs/FLEET.md docs/fleet-api.yaml "$root/usr/share/doc/rimon/"
install -m 0644 LICENSE "$root/usr/share/doc/rimon/copyright"
"$bin" man "$root/usr/share/man/man1" >/dev/null
gzip -9n "$root"/usr/share/man/man1/*.1

install -d "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: rimon
Version: $version
Architecture: $arch
Maintainer: rimon developers <rimon@rimon.dev>
Depends: libc6
Recommends: tpm2-tools
Section: admin
Priority: optional
Homepage: https://github.com/rimon-dev/rimon
Installed-Size: $(du -sk "$root" | cut -f1)
Description: runtime integrity monitor for machines with a TPM 2.0
 rimon measures the files, directory trees and container images listed in
 /etc/rimon/policy.yaml with SHA-256, records each measurement in a log and
 extends TPM PCR 23, then keeps measuring them as they change. The log and
 the PCR vouch for each other, so a TPM quote proves what the machine ran.
 The same binary is the fleet verifier (rimon verifier, rimon-verifier.service),
 which attests many such machines continuously and alerts on changes.
CONTROL
echo /etc/rimon/policy.yaml >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
SCRIPT
cat >"$root/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ "$1" = purge ]; then rm -rf /run/rimon; fi
SCRIPT
cat >"$root/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then systemctl stop rimon.service rimon-verifier.service || true; fi
SCRIPT
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/postrm" "$root/DEBIAN/prerm"
mkdir -p dist
dpkg-deb --build --root-owner-group "$root" "dist/rimon_${version}_${arch}.deb" >/dev/null
echo "dist/rimon_${version}_${arch}.deb"
