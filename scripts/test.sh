#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: install what is
# missing, build twice (plain, and with AddressSanitizer + UBSan), start the
# private PostgreSQL, run make check in both builds, a 60-second fault
# campaign (tests/chaos) and each fuzzer for 15 s (tests/fuzz), and print
# one closing line "N passed, N failed".
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

scripts/deps.sh || exit 1
scripts/build.sh build || exit 1
scripts/build.sh build-asan --enable-sanitizers || exit 1
scripts/pg.sh start || exit 1

eval "$(scripts/pg.sh env)"
export PGHOST PGPORT PGUSER=postgres
# The tests get a database of their own, made afresh: they never see the
# development data in "payments", and nothing else touches theirs.
testdb=payments_test
psql -X -q -v ON_ERROR_STOP=1 -d postgres \
    -c "DROP DATABASE IF EXISTS $testdb WITH (FORCE)" -c "CREATE DATABASE $testdb" || exit 1
psql -X -q -v ON_ERROR_STOP=1 -d "$testdb" -f sql/init.sql >/dev/null || exit 1
export PAYMENTSD_TEST_DATABASE="postgresql://app:app@127.0.0.1:$PGPORT/$testdb"
# Leaks are reported by LeakSanitizer; a finding fails the process.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

status=0
passed=0
failed=0
skipped=0
for b in build build-asan; do
    echo "== make check in $b"
    if ! make -C "$b" check -j1 >"$b/check.out" 2>&1; then
        status=1
    fi
    grep -E '^(PASS|FAIL|ERROR|XPASS|SKIP):' "$b/check.out" | sed "s|^|  |"
    if [ -f "$b/test-suite.log" ]; then
        # the failures, with their logs, where a reader will look first
        grep -q '^FAIL\|^ERROR' "$b/check.out" && sed -n '/^FAIL\|^ERROR/,$p' "$b/test-suite.log" | head -n 200
        p=$(awk '/^# PASS:/ {print $3}' "$b/test-suite.log")
        f=$(awk '/^# (FAIL|ERROR|XPASS):/ {s += $3} END {print s + 0}' "$b/test-suite.log")
        s=$(awk '/^# SKIP:/ {print $3}' "$b/test-suite.log")
        passed=$((passed + ${p:-0}))
        failed=$((failed + ${f:-0}))
        skipped=$((skipped + ${s:-0}))
    else
        failed=$((failed + 1))
    fi
done

# A suite outside make check that closes with "NAME: N passed, N failed":
# its output goes to a file, its checks and counts to the summary.
run_suite() {
    local out=$1
    shift
    if ! "$@" >"$out" 2>&1; then
        status=1
    fi
    grep -E '^(ok|not ok) |^FAIL |^# (keys|answers|faults|seed)' "$out" | sed "s|^|  |"
    local line p f
    line=$(grep -E '^[a-z]+: [0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
    if [ -z "$line" ]; then
        echo "  FAIL: $* printed no summary; the end of $out:"
        tail -n 40 "$out"
        failed=$((failed + 1))
        return
    fi
    p=$(echo "$line" | sed -E 's/^[a-z]+: ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[a-z]+: [0-9]+ passed, ([0-9]+) failed.*/\1/')
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$f" -gt 0 ] && tail -n 60 "$out"
}

# The fault campaign (tests/chaos/), 60 seconds on the sanitizer build: load,
# kill -9s, reloads, PostgreSQL and provider restarts, then the money audit.
echo "== fault campaign, ${CHAOS_SECONDS:-60} s, in build-asan"
run_suite build-asan/chaos.out make -s -C build-asan chaos CHAOS_SECONDS="${CHAOS_SECONDS:-60}"

# Every libFuzzer harness (tests/fuzz/) for 15 seconds from its committed
# corpus; make fuzz runs them for 10 minutes each.
echo "== fuzzers, ${FUZZ_SECONDS:-15} s each"
run_suite build/fuzz.out tests/fuzz/run.sh "${FUZZ_SECONDS:-15}"

[ "$failed" -gt 0 ] && status=1
if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
exit $status
