#!/usr/bin/env bash
# tests/run.sh: run every test binary given on the command line, print
# their output, and end with the line "N passed, N failed".
# Exit status 0 only if every binary ran and nothing failed.
set -u
total_pass=0
total_fail=0
status=0
for bin in "$@"; do
    name=$(basename "$bin")
    echo "== $name"
    start=$(date +%s.%N)
    # a hung test must not eat the CI budget: each binary gets a limit
    out=$(timeout "${QEVAL_TEST_TIMEOUT:-900}" "$bin" 2>&1)
    rc=$?
    if [ "$rc" -eq 124 ]; then
        out="$out
  TIMEOUT $name ran past ${QEVAL_TEST_TIMEOUT:-900} s (QEVAL_TEST_TIMEOUT)"
    fi
    end=$(date +%s.%N)
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
    if [ -z "$line" ]; then
        echo "  CRASH $name exited $rc without a RESULT line"
        total_fail=$((total_fail + 1))
        status=1
        continue
    fi
    p=$(printf '%s' "$line" | sed -n 's/.*passed=\([0-9]*\).*/\1/p')
    f=$(printf '%s' "$line" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then status=1; fi
    awk -v n="$name" -v a="$start" -v b="$end" 'BEGIN { printf "   (%s: %.1fs)\n", n, b - a }'
done
echo
echo "$total_pass passed, $total_fail failed"
exit $status
