#!/usr/bin/env bash
# rimon's main job with no TPM hardware: start a private swtpm, measure a few
# files into PCR 23, and check the log against the TPM with rimon and with
# tpm2-tools. Usage: scripts/demo.sh [path/to/rimon]
set -euo pipefail
RIMON=${1:-rimon}
work=$(mktemp -d)
trap 'kill "$swtpm_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

port=$((20000 + RANDOM % 20000))
swtpm socket --tpm2 --tpmstate dir="$work" \
  --server type=tcp,port=$port,bindaddr=127.0.0.1 --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
  --flags not-need-init,startup-clear &
swtpm_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
sleep 0.1

export RIMON_TPM=tcp:127.0.0.1:$port RIMON_LOG=$work/measurements.log
echo "== TPM: swtpm at $RIMON_TPM, log: $RIMON_LOG"
echo "== rimon measure /bin/sh /etc/os-release /etc/hostname"
"$RIMON" measure /bin/sh /etc/os-release /etc/hostname
echo "== rimon measure --tree --reason launch:demo.service /etc/apt"
"$RIMON" measure --tree --reason launch:demo.service /etc/apt
echo "== rimon log show"
"$RIMON" log show
echo "== rimon log check"
"$RIMON" log check
echo "== rimon log replay     (what the log says PCR 23 must be)"
"$RIMON" log replay
echo "== tpm2_pcrread sha256:23 (what the TPM says)"
tpm2_pcrread -T "swtpm:host=127.0.0.1,port=$port" sha256:23
echo "== an extend behind rimon's back is caught:"
tpm2_pcrextend -T "swtpm:host=127.0.0.1,port=$port" 23:sha256=$(printf 'evil' | sha256sum | cut -d' ' -f1)
if "$RIMON" log check; then echo "unexpected: the check passed"; exit 1; else echo "(rimon log check exited $?, as it must)"; fi
