#!/usr/bin/env bash
# fuzz/run.sh [SECONDS_PER_TARGET] — build the libFuzzer targets and run each.
#
# Configures build-fuzz/ with clang and PARLEY_FUZZ=ON, builds the targets
# listed in fuzz/CMakeLists.txt, and runs each for SECONDS_PER_TARGET
# (default 30) with its dictionary, over a scratch corpus directory (new
# finds go there, the tree stays clean) plus fuzz/corpus/<t> and
# fuzz/regressions/<t>. Prints a summary table (execs, exec/s, new units,
# peak RSS) and exits non-zero on any crash, leak, timeout, OOM or sanitizer
# report; the input that did it is kept in build-fuzz/artifacts/<t>/ and
# printed (path and base64).
#
#   FUZZ_KEEP_CORPUS=DIR   keep each target's new finds in DIR/<t> instead
#                          of a temporary directory (for long local runs)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-30}
case $secs in '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;; esac
build=build-fuzz

# A build-fuzz/ configured with another compiler cannot be switched in place.
if [ -f "$build/CMakeCache.txt" ] && ! grep -q '^CMAKE_C_COMPILER:.*clang' "$build/CMakeCache.txt"; then
  rm -rf "$build/CMakeCache.txt" "$build/CMakeFiles"
fi
echo "==> fuzz: configuring $build (clang, PARLEY_FUZZ=ON)"
CC=clang cmake -S . -B "$build" -DPARLEY_FUZZ=ON -DPARLEY_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target parley_fuzzers >/dev/null

mapfile -t targets < "$build/fuzz/targets.txt"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
artifacts=$build/artifacts
failed=0
rows=()

# `key: value` from libFuzzer's -print_final_stats=1 lines.
final_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

for t in "${targets[@]}"; do
  [ -n "$t" ] || continue
  corpus=${FUZZ_KEEP_CORPUS:+$FUZZ_KEEP_CORPUS/$t}
  corpus=${corpus:-$scratch/corpus-$t}
  mkdir -p "$corpus" "$artifacts/$t" "fuzz/regressions/$t"
  rm -f "$artifacts/$t"/*
  log=$artifacts/$t.log
  echo "==> fuzz: $t for ${secs}s"
  rc=0
  "$build/fuzz/${t}_fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -detect_leaks=1 \
    -print_final_stats=1 -dict="fuzz/$t.dict" -artifact_prefix="$artifacts/$t/" \
    "$corpus" "fuzz/corpus/$t" "fuzz/regressions/$t" >"$log" 2>&1 || rc=$?
  execs=$(final_stat number_of_executed_units "$log")
  rate=$(final_stat average_exec_per_sec "$log")
  units=$(final_stat new_units_added "$log")
  rss=$(final_stat peak_rss_mb "$log")
  found=$(find "$artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  result=ok
  if [ "$rc" -ne 0 ] || [ -n "$found" ] ||
     grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer' "$log"; then
    result=FAILED
    failed=1
    echo "!!! fuzz: $t failed (exit $rc); log: $log"
    grep -E 'ERROR:|SUMMARY:|runtime error:|fuzz check failed' "$log" | head -n 20 || true
    for f in $found; do
      echo "!!! input: $f"
      echo "    base64: $(base64 -w0 "$f")"
      echo "    replay: $build/fuzz/${t}_fuzzer $f   (keep it as fuzz/regressions/$t/<what-it-does>)"
    done
  fi
  rows+=("$(printf '%-18s %6s %12s %10s %8s %8s  %s' "$t" "$secs" "${execs:-?}" "${rate:-?}" "${units:-?}" "${rss:-?}" "$result")")
done

echo
printf '%-18s %6s %12s %10s %8s %8s  %s\n' target secs execs exec/s new peak_MB result
for r in "${rows[@]}"; do echo "$r"; done
if [ "$failed" -ne 0 ]; then
  echo "==> fuzz: FAILED (inputs and logs in $artifacts/)"
  exit 1
fi
echo "==> fuzz: all ${#targets[@]} targets clean"
