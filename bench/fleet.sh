#!/usr/bin/env bash
# The fleet verifier at scale: the engine on a SQLite store in one process,
# the test-only load generator (fleet/loadgen) in another, on this machine.
# Usage: bench/fleet.sh [all|rate|fleet|first|cost] [DIR]
#   rate   2,000 agents at a 1 s interval, 10 new records per poll: the most
#          attestations per second the verifier sustains (on disk and on tmpfs)
#   fleet  10,000 agents at a 60 s interval for 7 minutes (the first 3 left
#          out): schedule lag, RSS, every agent's state at the end
#   first  one agent whose log holds 100,000 records: its first poll
#   cost   what one attestation costs the verifier library, by part
# DIR (default a temporary directory) holds the databases; results are
# printed as JSON, one document per run. Not part of make test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root="$here/.."
what=${1:-all}
work=${2:-$(mktemp -d)}
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -DMAX_NV_INDEX_SIZE=4096}"
bin="$work/fleetbench"
(cd "$root" && go build -o "$bin" ./fleet/loadgen/cmd/fleetbench)

# run NAME AGENTS LOADGEN-FLAGS -- VERIFIER-FLAGS: one load generator and one
# verifier, side by side; the verifier's JSON result on stdout.
run() {
  local name=$1 n=$2; shift 2
  local lgflags=()
  while [ "$1" != "--" ]; do lgflags+=("$1"); shift; done
  shift
  local dir="$work/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  "$bin" loadgen -agents "$n" -dir "$dir" "${lgflags[@]}" &
  local lg=$!
  for _ in $(seq 1200); do [ -s "$dir/loadgen.url" ] && break; sleep 0.1; done
  [ -s "$dir/loadgen.url" ] || { echo "fleet.sh: the load generator did not start" >&2; kill $lg; return 1; }
  echo "== $name ($(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$bin" verifier -dir "$dir" "$@" || true
  kill $lg; wait $lg 2>/dev/null || true
}

case $what in all|rate)
  run rate-disk 2000 -- -db "$work/rate.db" -interval 1s -duration 70s -warmup 10s -settle 60s
  if [ -d /dev/shm ]; then
    shm=$(mktemp -d /dev/shm/fleetbench.XXXXXX)
    run rate-tmpfs 2000 -- -db "$shm/rate.db" -interval 1s -duration 70s -warmup 10s -settle 60s
    rm -rf "$shm"
  fi
esac
case $what in all|fleet)
  run fleet 10000 -- -db "$work/fleet.db" -interval 60s -duration 420s -warmup 180s -settle 180s
esac
case $what in all|first)
  run first 1 -initial 100000 -per-poll 0 -- -db "$work/first.db" -interval 60s -duration 15s -settle 10s
esac
case $what in all|cost)
  (cd "$root" && go test -count=1 -run '^$' -bench 'Incremental|Cost|FirstPoll100k' -benchmem ./fleet/loadgen/)
esac
