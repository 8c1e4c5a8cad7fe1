#!/usr/bin/env bash
# Verification of evidence whose log holds 1,000,000 records: wall time and
# peak memory of rimon verify, without and with reference values.
# Usage: bench/verify.sh [rimon-binary]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
RIMON=${1:-$here/../rimon}
[ -x "$RIMON" ] || (cd "$here/.." && go build -o rimon ./cmd/rimon)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
(cd "$here/.." && RIMON_BIG_EVIDENCE=$work go test -count=1 -run TestWriteBigEvidence ./attest >/dev/null)
printf 'unlisted: warn\nfiles:\n  /usr/lib/x86_64-linux-gnu/libexample-0.so.1: ["%064x"]\nrequired: [/usr/lib/x86_64-linux-gnu/libexample-0.so.1]\n' 0 >"$work/ref.yaml"
nonce=30313233343536373839616263646566
echo "evidence: $(du -h "$work/evidence" | cut -f1), 1,000,000 records"
for run in 1 2 3; do
  /usr/bin/time -f "no reference:   wall %e s, peak RSS %M KiB" "$RIMON" verify --evidence "$work/evidence" --nonce $nonce --ak "$work/ak.pem" >/dev/null
  /usr/bin/time -f "with reference: wall %e s, peak RSS %M KiB" "$RIMON" verify --evidence "$work/evidence" --nonce $nonce --ak "$work/ak.pem" --reference "$work/ref.yaml" >/dev/null
done
