#!/usr/bin/env bash
# demo.sh: the end-to-end demo behind `make demo` (after `make qeval assets`).
# Quantizes stories260K at six bit depths, evaluates each against the F32
# model (perplexity, KL divergence, the smoke task suite), and writes
# results.db and report.html.  About a minute on 2 cores.
#
# Environment: DEMO_DIR (where results.db / report.html go, default .),
# DEMO_LIMIT (items per task and text chunks, default 200; the suite's own limits still cap each task), QEVAL_ASSETS (default ../shared).
# Re-running resumes / reuses the same run (same inputs = same run key).
#
# Note on stories260K: its ffn_down rows are 172 wide, which no 32- or
# 256-element block type fits; like llama.cpp's fallbacks those tensors stay
# at a wider type (F16 here), so the effective bits per weight of Q8_0 ... Q2_K
# are well above the type names' (the summary shows the real bpw).
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS="${QEVAL_ASSETS:-../shared}"
DIR="${DEMO_DIR:-.}"
LIMIT="${DEMO_LIMIT:-200}"

pick() { # first existing file among the arguments
    for f in "$@"; do [ -f "$f" ] && { echo "$f"; return 0; }; done
    echo "demo: none of these exist: $*" >&2
    echo "demo: run 'make assets' (or set QEVAL_ASSETS)" >&2
    exit 2
}
MODEL=$(pick models/stories260K/stories260K.gguf "$ASSETS/models/stories260K/stories260K.gguf")
TEXT=$(pick datasets/data/tinystories/tinystories_val.txt "$ASSETS/datasets/tinystories/tinystories_val.txt")
[ -x ./qeval ] || { echo "demo: build qeval first (make qeval)" >&2; exit 2; }
mkdir -p "$DIR"

start=$(date +%s)
./qeval run "$MODEL" --quants F16,Q8_0,Q6_K,Q4_K_M,Q3_K_M,Q2_K --suite smoke \
    --limit "$LIMIT" --text "$TEXT" --db "$DIR/results.db" --label demo \
    --report "$DIR/report.html"
echo
echo "== model card block (qeval report --format card)"
./qeval report --db "$DIR/results.db" --run demo --format card
echo
echo "demo: wrote $DIR/results.db and $DIR/report.html in $(( $(date +%s) - start )) s"
echo "demo: try  ./qeval compare --db $DIR/results.db demo:F32 demo:Q2_K"
