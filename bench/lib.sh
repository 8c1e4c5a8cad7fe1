# Helpers for the bench scripts.

# compare RUNS NAME1 CMD1 NAME2 CMD2 ... : runs the contenders in rounds
# (A B C, A B C, ...), so that a noisy machine slows them alike, and prints
# each one's median wall time in seconds as "NAME<TAB>SECONDS".
compare() {
  local runs=$1; shift
  local names=() cmds=()
  while [ $# -gt 0 ]; do names+=("$1"); cmds+=("$2"); shift 2; done
  local -A times
  for _ in $(seq "$runs"); do
    for i in "${!cmds[@]}"; do
      local s e
      s=$(date +%s%N)
      bash -c "${cmds[$i]}" >/dev/null
      e=$(date +%s%N)
      times[$i]+="$(( (e - s) / 1000 )) "
    done
  done
  for i in "${!cmds[@]}"; do
    printf '%s\t%s\n' "${names[$i]}" "$(printf '%s\n' ${times[$i]} | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]/1e6}')"
  done
}

# col FILE NAME: the seconds of NAME in compare's output.
col() { awk -F'\t' -v n="$2" '$1 == n {print $2}' "$1"; }

ratio() { echo "scale=2; $1 / $2" | bc -l | sed 's/^\./0./'; }
