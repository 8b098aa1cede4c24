#!/usr/bin/env bash
# Runs one fuzz target (or all) with a seed corpus built from the committed fixtures.
#   cargo install cargo-fuzz        # once
#   bash fuzz/run.sh TARGET SECONDS # TARGET: shard sentencepiece artifact pickle outer rans rans_tables container config mixed_schema pgrp_v2, or all
#   SANITIZER=none bash fuzz/run.sh … # without AddressSanitizer (several times faster; pgolf's parsers are safe Rust)
# cargo-fuzz needs nightly features; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them (as below).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-all}
seconds=${2:-600}
seed() {
  local t=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  case $t in
    shard) cp fixtures/models/val_sp1024/fineweb_val_000000.bin "$dir/" ;;
    sentencepiece) cp fixtures/tokenizers/fineweb_1024_bpe.model "$dir/" ;;
    artifact|outer) cp fixtures/artifacts/*.ptz fixtures/artifacts/*.pt fixtures/pack/*.pglf "$dir/" ;;
    pickle) python3 - "$dir" <<'PY'
import io, sys, zipfile, zlib
z = zipfile.ZipFile(io.BytesIO(zlib.decompress(open("fixtures/artifacts/sp1024_tied.int8.ptz", "rb").read())))
open(sys.argv[1] + "/baseline.pkl", "wb").write(z.read("archive/data.pkl"))
PY
    ;;
    rans) printf '\x01\x05\xfe\x02\x0f' > "$dir/header" ;;
    rans_tables) printf '\xe8\x03\xfd\x05\x0e\x01\x07\x20\x07\x01\x02\x01\x00\x00\x00' > "$dir/table" ;;
    container) python3 - "$dir" <<'PY'
import sys, zlib, glob, os
# The packed fixtures as the target reads them: header JSON, a zero byte, the body.
for p in glob.glob("fixtures/pack/*.pglf"):
    b = open(p, "rb").read()
    n = int.from_bytes(b[7:11], "little")
    open(os.path.join(sys.argv[1], os.path.basename(p)), "wb").write(zlib.decompress(b[43:43 + n]) + b"\0" + b[43 + n:])
PY
    ;;
    config) cp fixtures/models/*.json "$dir/" ; rm -f "$dir"/golden_* ;;
    pgrp_v2) for f in fixtures/artifacts/final_2135_pgrp2_*.ptz; do tail -c +9 "$f" > "$dir/$(basename "$f")"; done ;;
    mixed_schema) printf '\x02\x01\x02\x07\x00\x01\x02\x02\x02\x40\x00\x00\x00\x00\x00\x00' > "$dir/awq" ;;
  esac
}
run() {
  seed "$1"
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O -s "${SANITIZER:-address}" "$1" "fuzz/corpus/$1" -- -max_total_time="$seconds" -rss_limit_mb=4096 \
    -timeout=10 -print_final_stats=1 -runs=${RUNS:-1000000}
}
if [ "$target" = all ]; then
  for t in shard sentencepiece artifact pickle outer rans rans_tables container config mixed_schema pgrp_v2; do run "$t"; done
else
  run "$target"
fi
