#!/usr/bin/env bash
# fuzz.sh: run libFuzzer targets (built by `make fuzz` into build-fuzz/)
# for FUZZ_RUNS executions each, from a fresh seed corpus, and report the
# executions and exec/s.  Exits non-zero if any target crashed (the input
# is kept as build-fuzz/artifacts/<target>/crash-*), 2 on a usage error.
#
#   scripts/fuzz.sh build-fuzz/fuzz_gguf [build-fuzz/fuzz_safetensors ...]
#
# Seeds for target fuzz_<name>: every file in tests/fuzz_seeds/<name>/ if
# that folder exists, plus real asset files named *.<name> under
# $QEVAL_ASSETS (default ../shared) of at most FUZZ_SEED_MAX bytes.
# Environment:
#   FUZZ_RUNS      executions per target (default 1000000)
#   FUZZ_SEED_MAX  largest asset file copied as a seed (default 400000 B)
#   FUZZ_MAX_LEN   libFuzzer -max_len (default 4096: big real seeds are then
#                  mutated as header prefixes, the tiny seeds whole; 0 lets
#                  libFuzzer guess from the seed sizes)
#   FUZZ_TIMEOUT   seconds per input before it counts as a hang (default 10)
#   FUZZ_KEEP=1    keep the temp corpus (its path is printed)
set -u

usage() {
    echo "usage: $0 FUZZ_BINARY..." >&2
    echo "  runs each libFuzzer binary FUZZ_RUNS (default 1000000) times; see the header of $0" >&2
}

if [ $# -eq 0 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    usage
    [ $# -eq 0 ] && exit 2 || exit 0
fi

runs=${FUZZ_RUNS:-1000000}
seed_max=${FUZZ_SEED_MAX:-400000}
timeout=${FUZZ_TIMEOUT:-10}
assets=${QEVAL_ASSETS:-../shared}
case $runs in '' | *[!0-9]*) echo "fuzz: FUZZ_RUNS must be a number, got '$runs'" >&2; exit 2 ;; esac
case $seed_max in '' | *[!0-9]*) echo "fuzz: FUZZ_SEED_MAX must be a number, got '$seed_max'" >&2; exit 2 ;; esac

status=0
for bin in "$@"; do
    if [ ! -x "$bin" ]; then
        echo "fuzz: $bin: not an executable fuzz target" >&2
        status=2
        continue
    fi
    target=$(basename "$bin")
    name=${target#fuzz_}
    corpus=$(mktemp -d "${TMPDIR:-/tmp}/qe_fuzz_${name}.XXXXXX")
    artifacts="build-fuzz/artifacts/$target"
    mkdir -p "$artifacts"

    n_seeds=0
    if [ -d "tests/fuzz_seeds/$name" ]; then
        for f in "tests/fuzz_seeds/$name"/*; do
            [ -f "$f" ] && cp "$f" "$corpus/" && n_seeds=$((n_seeds + 1))
        done
    fi
    if [ -d "$assets" ]; then
        while IFS= read -r f; do
            cp "$f" "$corpus/" && n_seeds=$((n_seeds + 1))
        done < <(find -L "$assets" -type f -name "*.$name" -size -"$((seed_max + 1))"c 2>/dev/null | sort)
    fi
    echo "fuzz: $target: $n_seeds seed files, $runs runs (corpus $corpus)" >&2

    extra=()
    max_len=${FUZZ_MAX_LEN:-4096}
    [ "$max_len" != 0 ] && extra+=("-max_len=$max_len")
    log="$corpus.log"
    start=$(date +%s.%N)
    # One process, one job: the machine is shared.
    "$bin" -runs="$runs" -timeout="$timeout" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "${extra[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    end=$(date +%s.%N)

    done_line=$(grep -E '^Done [0-9]+ runs in' "$log" | tail -n 1)
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -n 1)
    eps=$(grep -E '^stat::average_exec_per_sec:' "$log" | awk '{print $2}' | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -ne 0 ]; then
        echo "== $target: CRASH or error (exit $rc) after ${execs:-?} executions; log tail:" 
        tail -n 40 "$log"
        ls "$artifacts" 2>/dev/null | sed "s|^|   artifact: $artifacts/|"
        status=1
    else
        echo "== $target: ${execs:-?} executions in ${secs} s, ${eps:-?} exec/s, ${cov:-cov: ?}, no crash (${done_line})"
    fi
    if [ "${FUZZ_KEEP:-0}" = 1 ]; then
        echo "fuzz: kept corpus $corpus and log $log" >&2
    else
        rm -rf "$corpus" "$log"
    fi
done
exit $status
