#!/usr/bin/env bash
# fetch-assets.sh: fill models/ and datasets/data/ (both git-ignored) with
# the files listed in datasets/MANIFEST.  Each file is copied from
# $QEVAL_ASSETS (default ../shared) when that folder has it, otherwise
# downloaded from the public URL in the MANIFEST.  Every file is verified
# against its sha256; a mismatch is an error (exit 2).  Idempotent: files
# already present with the right hash are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS="${QEVAL_ASSETS:-../shared}"
MANIFEST=datasets/MANIFEST
stamp=.assets.ok
quiet=${QUIET:-0}

# Fast path: nothing changed since the last full verification.
if [ -f "$stamp" ] && [ "$stamp" -nt "$MANIFEST" ] && [ "$(cat "$stamp")" = "$ASSETS" ]; then
    exit 0
fi

sha() { if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -c1-64; else shasum -a 256 "$1" | cut -c1-64; fi; }

n_ok=0; n_new=0; n_fail=0
while read -r dest src hash url license; do
    case "$dest" in ''|'#'*) continue ;; esac
    if [ -f "$dest" ] && [ "$(sha "$dest")" = "$hash" ]; then
        n_ok=$((n_ok + 1)); continue
    fi
    mkdir -p "$(dirname "$dest")"
    if [ -f "$ASSETS/$src" ]; then
        cp -f "$ASSETS/$src" "$dest.part"
    elif [ "$url" != "-" ] && command -v curl >/dev/null 2>&1; then
        [ "$quiet" = 1 ] || echo "fetch-assets: downloading $url" >&2
        if ! curl -fsSL --retry 3 -o "$dest.part" "$url"; then
            echo "fetch-assets: $dest: download failed from $url" >&2
            n_fail=$((n_fail + 1)); rm -f "$dest.part"; continue
        fi
        # The public source ships some files compressed; the MANIFEST hash is
        # of the decompressed file.
        case "$url" in
            *.bz2) case "$dest" in *.bz2) ;; *) bunzip2 -c "$dest.part" > "$dest.tmp" && mv -f "$dest.tmp" "$dest.part" ;; esac ;;
            *.gz)  case "$dest" in *.gz) ;; *) gzip -dc "$dest.part" > "$dest.tmp" && mv -f "$dest.tmp" "$dest.part" ;; esac ;;
        esac
    else
        echo "fetch-assets: $dest: not in $ASSETS/$src and no public URL in $MANIFEST" >&2
        n_fail=$((n_fail + 1)); continue
    fi
    got=$(sha "$dest.part")
    if [ "$got" != "$hash" ]; then
        echo "fetch-assets: $dest: sha256 mismatch: expected $hash, got $got" >&2
        rm -f "$dest.part"; n_fail=$((n_fail + 1)); continue
    fi
    chmod u+w "$dest.part"
    mv -f "$dest.part" "$dest"
    n_new=$((n_new + 1))
done < "$MANIFEST"

if [ "$n_fail" -ne 0 ]; then
    echo "fetch-assets: $n_fail file(s) missing or corrupt ($n_ok ok, $n_new fetched)" >&2
    exit 2
fi
[ "$quiet" = 1 ] || echo "fetch-assets: $((n_ok + n_new)) files verified ($n_new copied or downloaded) from $ASSETS"
printf '%s' "$ASSETS" > "$stamp"
