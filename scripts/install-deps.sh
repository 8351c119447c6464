#!/bin/sh
# install-deps.sh: install qeval's build and test dependencies.  Idempotent:
# packages already present are left alone.  Debian/Ubuntu (apt), Fedora
# (dnf) and macOS (brew).  Needs root (or sudo) on Linux.
set -eu

need_sudo() { if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi; }
SUDO=$(need_sudo)

if command -v apt-get >/dev/null 2>&1; then
    # python3-numpy: tests regenerate the llama.cpp architecture golden models (gen_arch_models.py)
    PKGS="build-essential pkg-config libsqlite3-dev libcjson-dev libpcre2-dev python3 python3-numpy ca-certificates curl"
    missing=""
    for p in $PKGS; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "install-deps: apt-get install$missing"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
    else
        echo "install-deps: all apt packages present"
    fi
elif command -v dnf >/dev/null 2>&1; then
    PKGS="gcc make pkgconf-pkg-config sqlite-devel cjson-devel pcre2-devel python3 python3-numpy libgomp curl"
    missing=""
    for p in $PKGS; do
        rpm -q "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        $SUDO dnf install -y $missing
    else
        echo "install-deps: all dnf packages present"
    fi
elif command -v brew >/dev/null 2>&1; then
    for p in pkg-config sqlite cjson pcre2 libomp python3; do
        brew list --versions "$p" >/dev/null 2>&1 || brew install "$p"
    done
    echo "install-deps: on macOS use CC=gcc-14 (Homebrew gcc) or clang with -Xpreprocessor -fopenmp"
else
    echo "install-deps: no supported package manager (apt-get, dnf, brew) found" >&2
    exit 2
fi
