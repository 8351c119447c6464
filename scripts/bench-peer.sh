#!/usr/bin/env bash
# bench-peer.sh: decode speed side by side with llama.cpp, on the same files,
# interleaved (A B A B).
#
# Files: random-weight F16 GGUFs with the real shapes of SmolLM-135M and
# Qwen2.5-0.5B, written by build/bench/bench_memory --keep (the shapes and
# vocabularies of ../shared/testdata/llamacpp/SPEED.md), then Q8_0, Q4_K_M
# and Q2_K made from them by llama.cpp's own llama-quantize.  Both programs
# then decode 64 tokens, 2 threads:
#   llama.cpp: llama-bench -m FILE -p 0 -n 64 -t 2          (tg64 avg t/s)
#   qeval:     qeval generate FILE -n 65 --ignore-eos        (64 decode steps)
# and, with --parallel B (default 16), qeval's aggregate tokens/s with B
# sequences decoding together (generate --parallel B: eval's batched path),
# in exact numerics and in int8 numerics (q8 activations, integer dots on
# AVX512-VNNI: the fast batched mode).
#
# usage: scripts/bench-peer.sh [--models smollm,qwen] [--types F16,Q8_0,Q4_K_M,Q2_K]
#                              [--reps 2] [--dir build/bench-peer] [--parallel 16]
# Needs LLAMACPP_DIR (default ../llama.cpp) with build/bin/llama-bench and
# build/bin/llama-quantize (a CPU build; see README "Speed").
# Exit status: 0 if every measurement ran, 1 if one failed, 2 on usage.
set -u
models=smollm,qwen types=F16,Q8_0,Q4_K_M,Q2_K reps=2 dir=build/bench-peer parallel=16
while [ $# -gt 0 ]; do
    case "$1" in
    --models) models=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-peer: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
LL=${LLAMACPP_DIR:-../llama.cpp}/build/bin
QEVAL=${QEVAL_BIN:-./qeval}
for b in "$LL/llama-bench" "$LL/llama-quantize"; do
    if [ ! -x "$b" ]; then
        echo "bench-peer: $b not found: set LLAMACPP_DIR to a llama.cpp checkout built with" \
             "cmake (CPU, -DGGML_NATIVE=ON)" >&2
        exit 2
    fi
done
for b in "$QEVAL" build/bench/bench_memory; do
    [ -x "$b" ] || { echo "bench-peer: $b not found: run make qeval build/bench/bench_memory" >&2; exit 2; }
done
mkdir -p "$dir"
status=0
declare -A key=([smollm]=smollm-135m [qwen]=qwen2.5-0.5b)
med() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }
echo "bench-peer: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench-peer: llama.cpp binaries from $LL"
printf "%-13s %-7s %8s %12s %11s %7s %16s %7s %16s %7s\n" model type "file MB" "llama tg64" \
    "qeval t/s" ratio "qeval x$parallel agg" "x llama" "int8 x$parallel agg" "x llama"
for m in ${models//,/ }; do
    name=${key[$m]:-}
    [ -n "$name" ] || { echo "bench-peer: unknown model '$m' (smollm, qwen)" >&2; exit 2; }
    f16=$dir/$name-f16.gguf
    if [ ! -f "$f16" ]; then
        build/bench/bench_memory --models "$m" --types f16 --keep "$dir" > /dev/null || { status=1; continue; }
    fi
    for t in ${types//,/ }; do
        f=$dir/$name-$t.gguf
        [ "$t" = F16 ] && f=$f16
        if [ ! -f "$f" ]; then
            "$LL/llama-quantize" "$f16" "$f" "$t" 2 > "$dir/quantize-$name-$t.log" 2>&1 || { status=1; continue; }
        fi
        la=() qa=() pa=() ia=()
        for r in $(seq 1 "$reps"); do
            la+=("$("$LL/llama-bench" -m "$f" -p 0 -n 64 -t 2 -o csv 2>/dev/null | tail -1 |
                     awk -F, '{gsub(/"/, "", $(NF-1)); print $(NF-1)}')")
            qa+=("$("$QEVAL" generate "$f" --prompt "Once upon a time" -n 65 --ignore-eos --threads 2 \
                     2>&1 >/dev/null | sed -n 's/.*decode [0-9]* steps in [0-9.]* s (\([0-9.]*\) tokens.*/\1/p')")
            if [ "$parallel" -gt 1 ]; then
                pa+=("$("$QEVAL" generate "$f" --prompt "Once upon a time" -n 33 --ignore-eos --threads 2 \
                         --parallel "$parallel" 2>&1 >/dev/null |
                         sed -n 's/.*(\([0-9.]*\) tokens\/s aggregate.*/\1/p')")
                ia+=("$("$QEVAL" generate "$f" --prompt "Once upon a time" -n 33 --ignore-eos --threads 2 \
                         --parallel "$parallel" --numerics int8 2>&1 >/dev/null |
                         sed -n 's/.*(\([0-9.]*\) tokens\/s aggregate.*/\1/p')")
            fi
        done
        l=$(printf '%s\n' "${la[@]}" | grep . | med)
        q=$(printf '%s\n' "${qa[@]}" | grep . | med)
        p=$(printf '%s\n' "${pa[@]:-}" | grep . | med)
        i8=$(printf '%s\n' "${ia[@]:-}" | grep . | med)
        [ "$l" = - ] || [ "$q" = - ] && status=1
        mb=$(awk -v s="$(stat -L -c %s "$f")" 'BEGIN { printf "%.1f", s / 1e6 }')
        ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "-" }'; }
        printf "%-13s %-7s %8s %12s %11s %7s %16s %7s %16s %7s\n" "$name" "$t" "$mb" "$l" "$q" \
            "$(ratio "$q" "$l")" "${p:--}" "$(ratio "$p" "$l")" "${i8:--}" "$(ratio "$i8" "$l")"
    done
done
echo "(medians of $reps interleaved runs; qeval: exact numerics unless marked int8; llama.cpp: its default CPU path)"
exit $status
