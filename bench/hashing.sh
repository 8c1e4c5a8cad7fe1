#!/usr/bin/env bash
# Hashing throughput: rimon measure --dry-run vs sha256sum vs openssl dgst -sha256,
# on one 1 GiB file and on 20,000 small files. Usage: bench/hashing.sh [rimon-binary]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
RIMON=${1:-$here/../rimon}
[ -x "$RIMON" ] || (cd "$here/.." && go build -o rimon ./cmd/rimon)
RUNS=${RUNS:-5}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

head -c 1G /dev/urandom >"$work/big"
mkdir "$work/small"
for d in $(seq 0 19); do
  mkdir "$work/small/$d"
  for f in $(seq 0 999); do head -c $(( (d * 1000 + f) % 8192 + 1 )) /dev/urandom >"$work/small/$d/$f"; done
done
find "$work/small" -type f >"$work/list"
cat "$work/big" >/dev/null # warm the page cache

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(openssl version)"
echo "median wall seconds of $RUNS rounds; contenders interleaved within each round"
echo
echo "== one 1 GiB file"
compare "$RUNS" \
  rimon "'$RIMON' measure --dry-run '$work/big'" \
  sha256sum "sha256sum '$work/big'" \
  openssl "openssl dgst -sha256 '$work/big'" | tee "$work/big.txt"
r=$(col "$work/big.txt" rimon); s=$(col "$work/big.txt" sha256sum); o=$(col "$work/big.txt" openssl)
echo "MiB/s: rimon $(echo "1024 / $r" | bc), sha256sum $(echo "1024 / $s" | bc), openssl $(echo "1024 / $o" | bc)"
echo "rimon speed / openssl: $(ratio "$o" "$r"); rimon speed / sha256sum: $(ratio "$s" "$r")"
echo
echo "== 20,000 small files (1 B to 8 KiB), paths passed by xargs"
compare "$RUNS" \
  rimon "xargs -d '\n' '$RIMON' measure --dry-run <'$work/list'" \
  sha256sum "xargs -d '\n' sha256sum <'$work/list'" \
  openssl "xargs -d '\n' openssl dgst -sha256 <'$work/list'" | tee "$work/small.txt"
r=$(col "$work/small.txt" rimon); s=$(col "$work/small.txt" sha256sum); o=$(col "$work/small.txt" openssl)
echo "rimon speed / openssl: $(ratio "$o" "$r"); rimon speed / sha256sum: $(ratio "$s" "$r")"
