#!/usr/bin/env bash
# rimon's main job with no TPM hardware: the agent on the in-process TPM
# simulator, watching a small application; a change is made and measured.
# Usage: scripts/demo.sh [path/to/rimon]
set -euo pipefail
RIMON=${1:-rimon}
work=$(mktemp -d)
trap 'kill "$agent" 2>/dev/null || true; rm -rf "$work"' EXIT

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

echo "== rimon watch --tpm sim (the agent, on the in-process TPM simulator)"
"$RIMON" watch --tpm sim --policy "$work/policy.yaml" --log "$work/measurements.log" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 100); do grep -q 'msg=ready' "$work/agent.log" && break; sleep 0.1; done
grep -q 'msg=ready' "$work/agent.log" || { cat "$work/agent.log"; exit 1; }
cat "$work/agent.log"

echo "== a change: the server binary is replaced, a config file added"
printf '#!/bin/sh\necho hacked\n' >"$work/app/bin/server"
echo 'debug = true' >"$work/app/conf.d/debug.conf"
sleep 1
echo "== rimon log show"
"$RIMON" log show --log "$work/measurements.log"

echo "== stop the agent (SIGTERM): it checks log against TPM on the way out"
kill -TERM "$agent"
wait "$agent" || true
tail -n +$(( $(wc -l <"$work/agent.log") - 6 )) "$work/agent.log"
echo "== rimon log replay (what the log says PCR 23 must be; the agent's last line above says what the TPM had)"
"$RIMON" log replay --log "$work/measurements.log"
