#!/usr/bin/env bash
# Peak memory and time of pgolf on every crafted input of ≤ 2 MB that the hostile-input suites write (tests/hostile.rs,
# tests/malformed.rs, tests/artifacts.rs), under the default limits: `inspect` on artifacts, `data stats` on shards.
#   bash benches/hostile_rss.sh            # prints one line per input, the worst last
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q
TMPDIR="$work" cargo test --release -q --test hostile --test malformed --test artifacts >/dev/null 2>&1 || true
bin=target/release/pgolf
tok=fixtures/tokenizers/fineweb_1024_bpe.model
find "$work" -type f -size -2049k | while read -r f; do
  case "$f" in
    *.bin) cmd=("$bin" data stats --val "$f" --tokenizer "$tok") ;;
    *) cmd=("$bin" inspect "$f" --no-shares) ;;
  esac
  /usr/bin/time -f "%M %e" -o "$work/.t" "${cmd[@]}" >/dev/null 2>&1 || true
  read -r kb secs < <(tail -n 1 "$work/.t") || continue
  printf '%8d KiB %7.2f s  %s\n' "$kb" "$secs" "${f#"$work"/}"
done | sort -n | tail -n 15
