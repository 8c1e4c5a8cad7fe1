#!/usr/bin/env bash
# The fleet verifier on PostgreSQL, with one and with two replicas: the
# figures of bench/fleet.sh (rate and fleet) repeated on a private
# PostgreSQL cluster on this machine (initdb in a temporary directory, a
# free port on 127.0.0.1, stopped at the end), the load generator beside.
# Usage: bench/fleet-pg.sh [all|rate|rate-1|rate-2|fleet|fleet-sqlite] [DIR]
#   rate   2,000 agents at a 1 s interval, 10 new records per poll
#   fleet  10,000 agents at a 60 s interval ($FLEET_DURATION, default 420s,
#          the first $FLEET_WARMUP, default 180s, left out)
#   fleet-sqlite  the same fleet run on SQLite (bench/fleet.sh's fleet run
#          with the same duration), for the ratio
# Each run prints the verifiers' JSON results, one per replica. Run
# bench/fleet.sh in the same session for the SQLite figures to compare.
# Needs PostgreSQL's binaries (/usr/lib/postgresql/*/bin or $RIMON_PG_BIN);
# as root, the cluster runs as the postgres user. Not part of make test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root="$here/.."
what=${1:-all}
work=${2:-$(mktemp -d)}
fleet_duration=${FLEET_DURATION:-420s}
fleet_warmup=${FLEET_WARMUP:-180s}
export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g -DMAX_NV_INDEX_SIZE=4096}"
bin="$work/fleetbench"
(cd "$root" && go build -o "$bin" ./fleet/loadgen/cmd/fleetbench)

pgbin=${RIMON_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
pgdir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$pgdir"
as_pg "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --no-instructions >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
trap 'as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null; rm -rf "$pgdir"' EXIT
# pgcpu: the CPU seconds the PostgreSQL server has used so far (the
# postmaster, its live backends, and the backends that have exited).
pgcpu() {
  local pm; pm=$(head -1 "$pgdir/data/postmaster.pid")
  { awk '{print $14+$15+$16+$17}' "/proc/$pm/stat"
    for c in $(pgrep -P "$pm"); do awk '{print $14+$15}' "/proc/$c/stat" 2>/dev/null || true; done
  } | awk -v hz="$(getconf CLK_TCK)" '{s+=$1} END {printf "%.1f\n", s/hz}'
}
newdb() { # NAME
  local db=${1//-/_}
  as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db"
  echo "postgres://postgres@127.0.0.1:$port/$db?sslmode=disable"
}

# run NAME AGENTS REPLICAS VERIFIER-FLAGS...: one load generator, then the
# agents registered, then REPLICAS verifiers side by side on one database.
run() {
  local name=$1 n=$2 replicas=$3; shift 3
  local dir="$work/$name"
  rm -rf "$dir"; mkdir -p "$dir"
  "$bin" loadgen -agents "$n" -dir "$dir" &
  local lg=$!
  for _ in $(seq 1200); do [ -s "$dir/loadgen.url" ] && break; sleep 0.1; done
  [ -s "$dir/loadgen.url" ] || { echo "fleet-pg.sh: the load generator did not start" >&2; kill $lg; return 1; }
  local db
  if [ "$replicas" = sqlite ]; then db="$dir/verifier.db"; replicas=1; else db=$(newdb "$name"); fi
  "$bin" verifier -dir "$dir" -db "$db" -register-only "$@"
  echo "== $name, $replicas replica(s) ($(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  local cpu0; cpu0=$(pgcpu)
  local wal0=""
  case $db in postgres://*) wal0=$("$pgbin/psql" "$db" -Atc "SELECT pg_current_wal_lsn()");; esac
  local pids=()
  for r in $(seq "$replicas"); do
    "$bin" verifier -dir "$dir" -db "$db" -register=false -owner "replica-$r" "$@" >"$dir/replica-$r.json" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  echo "-- PostgreSQL server CPU during the run (s): $(awk -v a="$cpu0" -v b="$(pgcpu)" 'BEGIN {print b-a}')"
  [ -n "$wal0" ] && echo "-- WAL written during the run (bytes): $("$pgbin/psql" "$db" -Atc "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")"
  for r in $(seq "$replicas"); do echo "-- replica-$r"; cat "$dir/replica-$r.json"; done
  case $db in postgres://*)
    echo "-- database size (bytes; table: with its indexes and TOAST)"
    "$pgbin/psql" "$db" -Atc "SELECT 'database', pg_database_size(current_database())
      UNION ALL SELECT relname, pg_total_relation_size(oid) FROM pg_class
      WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC";;
  *) echo "-- database size (bytes)"; du -b "$db"* ;;
  esac
  kill $lg; wait $lg 2>/dev/null || true
}

case $what in all|rate|rate-1)
  run rate-pg-1 2000 1 -interval 1s -duration 70s -warmup 10s -settle 60s
esac
case $what in all|rate|rate-2)
  run rate-pg-2 2000 2 -interval 1s -duration 70s -warmup 10s -settle 60s
esac
case $what in all|fleet)
  run fleet-pg-1 10000 1 -interval 60s -duration "$fleet_duration" -warmup "$fleet_warmup" -settle 180s
  run fleet-pg-2 10000 2 -interval 60s -duration "$fleet_duration" -warmup "$fleet_warmup" -settle 180s
esac
case $what in fleet-sqlite)
  run fleet-sqlite 10000 sqlite -interval 60s -duration "$fleet_duration" -warmup "$fleet_warmup" -settle 180s
esac
