#!/usr/bin/env bash
# bench.sh: placeholder
echo "bench: not built yet" >&2
exit 2
