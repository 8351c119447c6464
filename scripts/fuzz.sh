#!/usr/bin/env bash
# fuzz.sh: placeholder
echo "fuzz: not built yet" >&2
exit 2
