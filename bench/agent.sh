#!/usr/bin/env bash
# The agent's initial measurement and memory: 100,000 small files, then
# 2 GiB in large files, against find | xargs sha256sum and openssl.
# Usage: bench/agent.sh [rimon-binary...]. With several binaries (a before
# and an after), their runs alternate on the same files. The log goes to
# /dev/shm (tmpfs, as /run is in production); the TPM is the in-process simulator.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$here/../rimon")
[ -x "${BINS[0]}" ] || (cd "$here/.." && go build -o rimon ./cmd/rimon)
RUNS=${RUNS:-3}
work=$(mktemp -d); logdir=$(mktemp -d -p /dev/shm)
trap 'rm -rf "$work" "$logdir"' EXIT

mkdir -p "$work/small" "$work/large"
for d in $(seq 0 99); do
  mkdir "$work/small/$d"
  for f in $(seq 0 999); do printf 'file %d %d %s\n' "$d" "$f" "$RANDOM$RANDOM" >"$work/small/$d/$f"; done
done
for i in 0 1 2 3; do head -c 512M /dev/urandom >"$work/large/$i"; done
cat "$work"/large/* >/dev/null

# agent BIN DIR: runs rimon watch over DIR until it is ready; prints
# "hash_seconds record_seconds wall_seconds cpu_seconds rss_mib".
agent() {
  local RIMON=$1; shift
  printf 'measure:\n  - dir: %s\n' "$1" >"$work/policy.yaml"
  rm -f "$logdir/m.log"
  local s e pid
  s=$(date +%s%N)
  "$RIMON" watch --tpm sim --policy "$work/policy.yaml" --log "$logdir/m.log" 2>"$work/agent.log" &
  pid=$!
  until grep -q 'msg=ready' "$work/agent.log"; do sleep 0.05; kill -0 $pid || { cat "$work/agent.log"; exit 1; }; done
  e=$(date +%s%N)
  local ticks rss
  ticks=$(awk '{print $14 + $15}' /proc/$pid/stat)
  rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$pid/status)
  kill -TERM $pid; wait $pid || true
  local line
  line=$(grep 'msg="initial scan done"' "$work/agent.log")
  printf '%s %s %s %s %s\n' \
    "$(sed -E 's/.*hash_seconds=([0-9.e-]+).*/\1/' <<<"$line")" \
    "$(sed -E 's/.*record_seconds=([0-9.e-]+).*/\1/' <<<"$line")" \
    "$(echo "($e - $s) / 1000000000" | bc -l | xargs printf '%.2f')" \
    "$(echo "$ticks / $(getconf CLK_TCK)" | bc -l | xargs printf '%.2f')" "$rss"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for set in small large; do
  echo
  echo "== $set: $(find "$work/$set" -type f | wc -l) files, $(du -sh "$work/$set" | cut -f1)"
  echo "rimon watch, until ready (hash s, record s [append+fsync+extend on the simulator], wall s, cpu s, peak RSS MiB):"
  for _ in $(seq "$RUNS"); do
    for bin in "${BINS[@]}"; do
      printf '%s: ' "$bin"; agent "$bin" "$work/$set"
    done
  done
  compare "$RUNS" \
    "find|xargs sha256sum" "find '$work/$set' -type f -print0 | xargs -0 sha256sum" \
    "find|xargs -P2 sha256sum" "find '$work/$set' -type f -print0 | xargs -0 -P2 -n 5000 sha256sum" \
    "find|xargs openssl" "find '$work/$set' -type f -print0 | xargs -0 openssl dgst -sha256"
done
