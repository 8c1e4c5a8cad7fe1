#!/usr/bin/env bash
# rimon's whole promise with no TPM hardware: the agent on the in-process TPM
# simulator measures a small application and serves evidence on a private
# loopback port; a verifier attests it against reference values made at
# start (TRUSTED), a file is changed, and the same verifier now says
# UNTRUSTED and names the file.
# Usage: scripts/demo.sh [path/to/rimon]
set -euo pipefail
RIMON=${1:-rimon}
work=$(mktemp -d)
agent=
trap '[ -n "$agent" ] && kill "$agent" 2>/dev/null; rm -rf "$work"' EXIT

# wait_for FILE PATTERN: poll FILE until PATTERN appears (at most 20 s).
wait_for() {
  for _ in $(seq 200); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: timed out waiting for '$2' in $1" >&2
  cat "$1" >&2
  exit 1
}

mkdir -p "$work/app/bin" "$work/app/conf.d" "$work/app/static"
printf '#!/bin/sh\necho hello\n' >"$work/app/bin/server"
echo 'port = 8080' >"$work/app/conf.d/server.conf"
echo '<h1>hello</h1>' >"$work/app/static/index.html"
cat >"$work/policy.yaml" <<POLICY
settings:
  debounce: 100ms
measure:
  - dir: $work/app/bin
  - glob: $work/app/conf.d/*.conf
  - tree: $work/app/static
exclude:
  - "*.swp"
POLICY
echo "== policy ($work/policy.yaml): rimon policy check"
"$RIMON" policy check "$work/policy.yaml"

echo "== rimon watch --tpm sim --listen 127.0.0.1:0 --ak-out ak.pem (the agent, on the in-process TPM simulator)"
"$RIMON" watch --tpm sim --policy "$work/policy.yaml" --log "$work/measurements.log" \
  --listen 127.0.0.1:0 --ak-out "$work/ak.pem" 2>"$work/agent.log" &
agent=$!
wait_for "$work/agent.log" 'msg=ready'
cat "$work/agent.log"
url=$(sed -n 's|.*msg="serving evidence" url=\(http://[^ ]*\)/v1/evidence.*|\1|p' "$work/agent.log")
[ -n "$url" ] || { echo "demo: the agent did not say where it serves evidence" >&2; exit 1; }
echo "== the agent's attestation key, written by --ak-out at start: the verifier pins it"
cat "$work/ak.pem"

echo "== rimon reference generate --from-log: reference values made now, from what the agent measured"
"$RIMON" reference generate --from-log "$work/measurements.log" >"$work/reference.yaml"
cat "$work/reference.yaml"

echo "== rimon attest --agent $url (fresh nonce, quote, log, reference values)"
"$RIMON" attest --agent "$url" --ak "$work/ak.pem" --reference "$work/reference.yaml"
echo "(exit 0: TRUSTED)"

echo "== a change: the server binary is replaced, a config file added"
printf '#!/bin/sh\necho hacked\n' >"$work/app/bin/server"
echo 'debug = true' >"$work/app/conf.d/debug.conf"
wait_for "$work/measurements.log" "\"path\":\"$work/app/bin/server\",\"reason\":\"changed\""
wait_for "$work/measurements.log" "\"path\":\"$work/app/conf.d/debug.conf\""
echo "== rimon log show"
"$RIMON" log show --log "$work/measurements.log"

echo "== rimon attest again: the same reference values, a fresh nonce"
code=0
"$RIMON" attest --agent "$url" --ak "$work/ak.pem" --reference "$work/reference.yaml" >"$work/verdict" || code=$?
cat "$work/verdict"
echo "(exit $code)"
if [ "$code" != 1 ] || ! grep -q "^UNTRUSTED" "$work/verdict" || ! grep -q "FAIL file $work/app/bin/server: digest not allowed" "$work/verdict"; then
  echo "demo: rimon attest did not say UNTRUSTED naming $work/app/bin/server" >&2
  exit 1
fi

echo "== stop the agent (SIGTERM): it checks log against TPM on the way out"
kill -TERM "$agent"
wait "$agent" || true
agent=
tail -n +$(( $(wc -l <"$work/agent.log") - 6 )) "$work/agent.log"
echo "== rimon log replay (what the log says PCR 23 must be; the agent's last line above says what the TPM had)"
"$RIMON" log replay --log "$work/measurements.log"
