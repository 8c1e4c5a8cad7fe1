#!/usr/bin/env bash
# Container start latency with and without rimon's OCI hook (runc, a private
# swtpm), for a small root file system and one of about 50 MB in 3,000
# files; the root file system hashed by rimon measure --tree on the same
# files; and the hook's fixed cost (parse, normalize, lock, append, extend:
# the hook with rootfs: false). Needs root, runc, swtpm and go.
# Usage: bench/ocihook.sh [rimon-binary]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
RIMON=${1:-$here/../rimon}
[ -x "$RIMON" ] || (cd "$here/.." && CGO_CFLAGS="-O2 -g -DMAX_NV_INDEX_SIZE=4096" go build -o rimon ./cmd/rimon)
RIMON=$(readlink -f "$RIMON")
RUNS=${RUNS:-11}
work=$(mktemp -d); logdir=$(mktemp -d -p /dev/shm)
swtpm_pid=
cleanup() { [ -n "$swtpm_pid" ] && kill "$swtpm_pid" 2>/dev/null; rm -rf "$work" "$logdir"; }
trap cleanup EXIT

# A private swtpm on a free port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir "$work/tpm"
swtpm socket --tpm2 --tpmstate dir="$work/tpm" --server type=tcp,port="$port",bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 --flags not-need-init,startup-clear &
swtpm_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
TPM=tcp:127.0.0.1:$port
LOG=$logdir/m.log

# The container's one program: a static binary that exits at once.
mkdir "$work/src"
printf 'module hello\n\ngo 1.21\n' >"$work/src/go.mod"
printf 'package main\n\nfunc main() {}\n' >"$work/src/main.go"
(cd "$work/src" && CGO_ENABLED=0 go build -o "$work/hello" .)

mkrootfs() { # DIR: the program and the mount points runc needs
  mkdir -p "$1"/{proc,dev,sys}
  cp "$work/hello" "$1/hello"
}
mkrootfs "$work/small"
mkrootfs "$work/large"
for d in $(seq 0 29); do
  mkdir "$work/large/d$d"
  for f in $(seq 0 99); do head -c 16384 /dev/urandom >"$work/large/d$d/f$f"; done
done
printf 'containers:\n  rootfs: false\n' >"$work/norootfs.yaml"

# bundle NAME ROOTFS HOOKARGS...: an OCI bundle (runc spec) whose hook, if
# any, is rimon with these arguments.
bundle() {
  local b=$work/b-$1 rootfs=$2; shift 2
  mkdir "$b"; (cd "$b" && runc spec)
  python3 - "$b/config.json" "$rootfs" "$RIMON" "$@" <<'PY'
import json, sys
p, rootfs, rimon, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
c = json.load(open(p))
c["process"]["args"] = ["/hello"]
c["process"]["terminal"] = False
c["root"] = {"path": rootfs, "readonly": True}
if args:
    c["hooks"] = {"createRuntime": [{"path": rimon, "args": ["rimon"] + args}]}
json.dump(c, open(p, "w"))
PY
}
hook=(oci-hook --tpm "$TPM" --log "$LOG")
bundle small-plain "$work/small"
bundle small-hook "$work/small" "${hook[@]}"
bundle large-plain "$work/large"
bundle large-hook "$work/large" "${hook[@]}"
bundle large-fixed "$work/large" "${hook[@]}" --policy "$work/norootfs.yaml"
state="$work/state"
run() { echo "runc --root $state run --bundle $work/b-$1 c-$1"; }
cat "$work"/large/*/* >/dev/null # warm the page cache

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(runc --version | head -1)"
echo "large root file system: $(find "$work/large" -type f | wc -l) files, $(du -sm "$work/large" | cut -f1) MB"
echo "median wall seconds of $RUNS rounds; contenders interleaved within each round"
echo
compare "$RUNS" \
  small-plain "$(run small-plain)" \
  small-hook "$(run small-hook)" \
  large-plain "$(run large-plain)" \
  large-hook "$(run large-hook)" \
  large-fixed "$(run large-fixed)" \
  tree "'$RIMON' measure --dry-run --tree '$work/large'" \
  hook-alone "printf '{\"id\":\"direct\",\"bundle\":\"$work/b-large-fixed\"}' | '$RIMON' oci-hook --tpm '$TPM' --log '$LOG' --policy '$work/norootfs.yaml'" \
  true "true" | tee "$work/out.txt"
c() { col "$work/out.txt" "$1"; }
echo
echo "start with hook / without, small root file system: $(ratio "$(c small-hook)" "$(c small-plain)")"
echo "start with hook / without, large root file system: $(ratio "$(c large-hook)" "$(c large-plain)")"
echo "start with hook, rootfs: false / without (large):   $(ratio "$(c large-fixed)" "$(c large-plain)")"
echo "hook's rootfs hashing (large-hook - large-fixed) / rimon measure --tree: $(ratio "$(echo "$(c large-hook) - $(c large-fixed)" | bc -l)" "$(c tree)")"
echo "hook's fixed cost, alone (process, parse, normalize, TPM, lock, append, extend): $(c hook-alone) s"
echo "records written: $(grep -c '"kind":"container"' "$LOG")"
