#!/usr/bin/env bash
# Times `pgolf review --all` over a records tree (issue 20's goal: the whole tree in under 10 s).
#
#   benches/review_tree.sh RECORDS_DIR [RUNS]
#
# RECORDS_DIR is the challenge repository's `records/` (fetch github.com/openai/parameter-golf and pass its
# records folder). Prints each run's wall-clock seconds and the median; the machine is the one it runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:?usage: benches/review_tree.sh RECORDS_DIR [RUNS]}"
runs="${2:-5}"
cargo build --release --quiet
bin=target/release/pgolf
folders=$(find "$root" -name 'submission*.json' | wc -l)
bytes=$(du -sb "$root" | cut -f1)
times=()
for _ in $(seq "$runs"); do
  start=$(date +%s.%N)
  "$bin" review --all "$root" --json >/dev/null || [ $? -eq 2 ]
  end=$(date +%s.%N)
  times+=("$(echo "$end - $start" | bc)")
done
echo "runs (s): ${times[*]}"
printf '%s\n' "${times[@]}" | sort -n | awk -v f="$folders" -v b="$bytes" '
  {t[NR]=$1} END {printf "median %.3f s over %d folders with a submission.json, %.1f MB\n", t[int((NR+1)/2)], f, b/1e6}'
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
