#!/usr/bin/env bash
# bench.sh: run every benchmark binary given on the command line
# (make bench passes build/bench/bench_*) and print their figures.
# Extra arguments for all of them can be passed in $QEVAL_BENCH_ARGS,
# e.g. QEVAL_BENCH_ARGS="--models smollm --types f16,q8_0" make bench.
# Exit status: 0 if every benchmark ran, 1 otherwise.
set -u
status=0
if [ "$#" -eq 0 ]; then
    echo "usage: scripts/bench.sh build/bench/bench_* ..." >&2
    exit 2
fi
# The machine may be shared: print the load average beside the figures.
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || uptime; }
for bin in "$@"; do
    name=$(basename "$bin")
    echo "== $name (load average before: $(load))"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    if ! "$bin" ${QEVAL_BENCH_ARGS:-}; then
        echo "   $name FAILED" >&2
        status=1
    fi
    end=$(date +%s.%N)
    awk -v n="$name" -v a="$start" -v b="$end" -v l="$(load)" \
        'BEGIN { printf "   (%s: %.1fs; load average after: %s)\n", n, b - a, l }'
done
exit $status
