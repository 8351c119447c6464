#!/usr/bin/env bash
# demo.sh: placeholder
echo "demo: not built yet" >&2
exit 2
