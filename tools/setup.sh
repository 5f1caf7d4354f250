#!/usr/bin/env bash
# Parley's one set-up script, for a fresh Debian 12 machine.
#
#   tools/setup.sh run    install what is needed, build, start parleyd on :8000
#   tools/setup.sh test   install what is needed, build, run every test twice:
#                         once normally, once under ASan+UBSan; then fuzz each
#                         parser for PARLEY_FUZZ_SECONDS (default 30) seconds
#   tools/setup.sh deps   only install the packages
#
# Needs root or sudo for apt-get. Builds go to build/, build-asan/ and build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config
  libwebsockets-dev libev-dev libzmq3-dev libmsgpack-dev libcjson-dev
  libcurl4-openssl-dev libsqlite3-dev libcmocka-dev
  python3 python3-pytest python3-websockets
  clang libclang-rt-14-dev
  curl procps
)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

jobs() { nproc 2>/dev/null || echo 2; }

build() { # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j "$(jobs)"
}

run_tests() { # run_tests DIR LABEL
  echo "==> tests ($2)"
  (cd "$1" && ctest --output-on-failure --timeout 900)
}

case "${1:-}" in
  deps)
    deps ;;
  run)
    deps
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPARLEY_TESTS=OFF
    echo "==> parleyd on http://localhost:${PARLEY_PORT:-8000}/demo (Ctrl-C stops it)"
    exec build/parleyd "${@:2}" ;;
  test)
    deps
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    run_tests build "normal build"
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    build build-asan -DCMAKE_BUILD_TYPE=Debug -DPARLEY_SANITIZE=ON
    run_tests build-asan "ASan+UBSan build"
    fuzz/run.sh "${PARLEY_FUZZ_SECONDS:-30}" ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac
