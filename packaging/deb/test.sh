#!/usr/bin/env bash
# Installs the package built by make deb, checks what it installed, removes
# and purges it, and checks that it is gone. Run as root on a scratch machine.
set -euo pipefail
deb=$1
fail() { echo "deb test: $*" >&2; exit 1; }

dpkg -i "$deb"
[ -x /usr/bin/rimon ] || fail "/usr/bin/rimon missing"
/usr/bin/rimon --version
/usr/bin/rimon policy check /etc/rimon/policy.yaml >/dev/null || fail "the installed policy does not validate"
[ -f /lib/systemd/system/rimon.service ] || fail "unit missing"
grep -q '^Type=notify' /lib/systemd/system/rimon.service || fail "unit is not Type=notify"
[ -f /lib/systemd/system/rimon-verifier.service ] || fail "verifier unit missing"
grep -q '^Type=notify' /lib/systemd/system/rimon-verifier.service || fail "verifier unit is not Type=notify"
[ -f /usr/share/man/man1/rimon-verifier.1.gz ] || fail "rimon-verifier(1) missing"
[ -f /usr/share/doc/rimon/examples/verifier-tokens.example ] || fail "verifier examples missing"
[ -f /usr/share/doc/rimon/fleet-api.yaml ] || fail "the API description is missing"
[ -f /usr/share/man/man1/rimon-measure.1.gz ] || fail "man pages missing"
ls /usr/share/doc/rimon/examples/webserver.yaml >/dev/null || fail "examples missing"
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /lib/systemd/system/rimon.service /lib/systemd/system/rimon-verifier.service 2>&1 | grep -v -e 'ConditionPathExists' -e 'tpm2.target' || true
fi
echo "# edited" >>/etc/rimon/policy.yaml
dpkg -r rimon
[ ! -e /usr/bin/rimon ] || fail "/usr/bin/rimon left after remove"
[ -f /etc/rimon/policy.yaml ] || fail "remove deleted the edited conffile"
dpkg -P rimon
[ ! -e /etc/rimon/policy.yaml ] || fail "/etc/rimon/policy.yaml left after purge"
echo "deb test: install, remove and purge OK"
