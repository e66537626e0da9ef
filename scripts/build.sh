#!/usr/bin/env bash
# Build paymentsd out of tree: scripts/build.sh [DIR [configure options...]]
# (default DIR: build).  Runs autoreconf when configure is missing or stale.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
shift || true
case "$dir" in /*) ;; *) dir="$top/$dir" ;; esac

cd "$top"
if [ -f config.status ]; then
    # An in-tree configure blocks out-of-tree builds; it only holds outputs.
    echo "build.sh: removing the in-tree build (make distclean)" >&2
    make distclean >/dev/null 2>&1 || rm -f config.status config.h config.log stamp-h1 Makefile
fi
if [ ! -x configure ] || [ configure.ac -nt configure ] \
   || [ -n "$(find . -name 'Makefile.am' -newer configure -o -name 'include.am' -newer configure | head -n 1)" ]; then
    autoreconf -fi >/dev/null
fi
mkdir -p "$dir"
cd "$dir"
if [ ! -f Makefile ] || [ "$top/configure" -nt config.status ]; then
    "$top/configure" -q "$@"
fi
make -j"$(nproc)" >/dev/null
echo "build.sh: built in $dir"
