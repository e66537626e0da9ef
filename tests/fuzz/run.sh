#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS]: build every libFuzzer harness of tests/fuzz
# with clang (-fsanitize=fuzzer,address,undefined) and run each for SECONDS
# (default 15), one after the other.
#
# Each run starts from its seed corpus, tests/fuzz/corpus/NAME/ (committed,
# read only), and keeps what it finds in a scratch corpus outside the tree,
# $FUZZ_WORK/corpus/NAME/ (default ${TMPDIR:-/tmp}/paymentsd-fuzz), which
# later runs start from too.  One line per fuzzer, then
# "fuzz: N passed, N failed".  A crash, leak, timeout or sanitizer report
# fails the run: the input that caused it is kept and its path printed,
# with the end of the fuzzer's log.  Exit status 1 when any failed, 0 when
# all passed or when clang or its fuzzer runtime is missing (then it says
# so: scripts/deps.sh installs clang and libclang-rt-14-dev).
#
# FUZZ_ONLY="whsig conf" runs only those harnesses; FUZZ_CC picks the
# compiler (default clang).
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-15}
work=${FUZZ_WORK:-${TMPDIR:-/tmp}/paymentsd-fuzz}
cc=${FUZZ_CC:-clang}

case "$seconds" in
    ''|*[!0-9]*|0) echo "usage: tests/fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac

# Each harness: its name (tests/fuzz/fuzz_NAME.c), the project sources it
# is built with, and the pkg-config modules those need.
names=()
declare -A srcs mods
harness() { names+=("$1"); srcs[$1]=$2; mods[$1]=$3; }
conf="common/conf.c common/cfparse.c common/listen.c common/log.c common/whsig.c"
harness checkout_body "worker/validate.c $conf" "json-c libcrypto libpq"
harness checkout_headers "worker/validate.c" "json-c libcrypto"
harness webhook_sig "common/whsig.c" "libcrypto"
harness webhook_body "worker/validate.c" "json-c libcrypto"
harness provider_answer "worker/provider_answer.c" "json-c"
harness conf "$conf provider-sim/conf.c provider-sim/acl.c" "libpq libcrypto libevent"
harness sim_request "provider-sim/request.c" "json-c libevent"
if [ -n "${FUZZ_ONLY:-}" ]; then
    read -r -a names <<<"$FUZZ_ONLY"
fi

mkdir -p "$work/bin" "$work/include"
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fno-omit-frame-pointer -Wall -Wextra -I"$top" -I"$work/include")

# The fuzzer runtime comes with clang (Debian: libclang-rt-14-dev).
probe="$work/bin/probe"
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
    >"$probe.c"
if ! command -v "$cc" >/dev/null 2>&1 \
   || ! "$cc" "${flags[@]}" "$probe.c" -o "$probe" >"$probe.log" 2>&1; then
    echo "fuzz: SKIP: $cc with -fsanitize=fuzzer is not available (scripts/deps.sh installs clang and libclang-rt-14-dev)"
    exit 0
fi

# The sources include "config.h"; they need only what configure defines
# for the C library (AC_USE_SYSTEM_EXTENSIONS), the version, and the
# directories that Makefile.am passes with -D.
version=$(sed -n 's/^AC_INIT(\[[^]]*\], \[\([^]]*\)\].*/\1/p' "$top/configure.ac")
printf '%s\n' '/* config.h for tests/fuzz/run.sh */' '#define _GNU_SOURCE 1' \
    "#define PACKAGE_VERSION \"${version:-fuzz}\"" \
    '#define SYSCONFDIR "/usr/local/etc"' '#define PKGDATADIR "/usr/local/share/paymentsd"' \
    >"$work/include/config.h"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0 failed=0
for name in "${names[@]}"; do
    bin="$work/bin/fuzz_$name" log="$work/fuzz_$name.log"
    corpus="$work/corpus/$name" found="$work/artifacts/$name"
    if [ -z "${srcs[$name]+x}" ]; then
        echo "FAIL fuzz_$name: no such harness"
        failed=$((failed + 1))
        continue
    fi
    src=()
    for s in ${srcs[$name]}; do src+=("$top/$s"); done
    # shellcheck disable=SC2086  # a list of module names
    if ! "$cc" "${flags[@]}" $(pkg-config --cflags ${mods[$name]}) \
            "$top/tests/fuzz/fuzz_$name.c" "${src[@]}" \
            $(pkg-config --libs ${mods[$name]}) -o "$bin" >"$log" 2>&1; then
        echo "FAIL fuzz_$name: does not build"
        tail -n 20 "$log" | sed 's/^/    /'
        failed=$((failed + 1))
        continue
    fi
    mkdir -p "$corpus" "$found"
    rm -f "$found"/*
    start=$(date +%s)
    seeds=()
    [ -d "$top/tests/fuzz/corpus/$name" ] && seeds=("$top/tests/fuzz/corpus/$name")
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$found/" "$corpus" "${seeds[@]}" </dev/null >>"$log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    input=$(find "$found" -type f | head -n 1)
    if [ "$rc" -eq 0 ] && [ -z "$input" ]; then
        printf 'ok   fuzz_%-17s %4d s %10s runs %7s exec/s  %s, corpus %d\n' "$name" "$took" \
            "${runs:-?}" "${rate:-?}" "${cov:-cov: ?}" "$(find "$corpus" -type f | wc -l)"
        passed=$((passed + 1))
    else
        echo "FAIL fuzz_$name: exit $rc after $took s; input: ${input:-(none kept)}; log: $log"
        grep -E 'ERROR|SUMMARY|property does not hold|runtime error' "$log" | head -n 5 | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
