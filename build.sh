#!/usr/bin/env bash
# libvmm developer entry point. On a fresh Debian 12 machine:
#   ./build.sh demo   install what is missing, build, boot the demo guest
#                     with vmmrun (no arguments: tools/vmmrun, docs/vmmrun.md)
#   ./build.sh test   install what is missing, build, run the whole test suite
# Also: ./build.sh deps | build | sanitize | install-check | fuzz
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(meson ninja-build pkg-config nasm gcc libc6-dev
          libuv1-dev libjansson-dev libcmocka-dev libzydis-dev
          clang libclang-rt-14-dev
          busybox-static cpio)
BUILD=${BUILD:-build}
# Extra meson options for every configuration, e.g. MESON_ARGS=-Dwerror=true
read -r -a EXTRA <<<"${MESON_ARGS:-}"

deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing: ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {
  if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" -Dtests=enabled ${EXTRA[@]+"${EXTRA[@]}"} "$@"
  fi
  ninja -C "$BUILD"
}

case "${1:-}" in
deps) deps ;;
build) deps; build ;;
demo)
  deps; build
  "$BUILD/tools/vmmrun/vmmrun"
  ;;
test)
  deps; build
  meson test -C "$BUILD" --print-errorlogs --num-processes 2
  ;;
install-check)
  # Install to a staging prefix and build the examples outside the tree
  # against it, through pkg-config only.
  deps; build
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  DESTDIR="$stage" meson install -C "$BUILD" --quiet
  prefix=$(meson introspect "$BUILD" --buildoptions |
    python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
  libdir=$(meson introspect "$BUILD" --buildoptions |
    python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="libdir"][0])')
  pcdir="$stage$prefix/$libdir/pkgconfig"
  export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$stage"
  pkg-config --cflags --libs libvmm
  mkdir "$stage/src"
  cp examples/hello.c examples/long_mode.c examples/serial.c \
    examples/Makefile "$stage/src/"
  make -s -C "$stage/src" CFLAGS="-O2 -Wall -Wextra -Werror"
  LD_LIBRARY_PATH="$stage$prefix/$libdir" "$stage/src/hello"
  LD_LIBRARY_PATH="$stage$prefix/$libdir" "$stage/src/long_mode"
  LD_LIBRARY_PATH="$stage$prefix/$libdir" "$stage/src/serial"
  ;;
sanitize)
  # AddressSanitizer + UndefinedBehaviorSanitizer, every test.
  deps
  BUILD=build-san build -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debug
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-san --print-errorlogs --num-processes 2 \
      --timeout-multiplier 3
  ;;
fuzz)
  # libFuzzer targets (fuzz/meson.build lists them) built with clang, ASan
  # and UBSan in build-fuzz, each run for FUZZ_SECONDS on its seed corpus
  # (fuzz/corpus/<target>/, read only: new inputs go to build-fuzz). A crash,
  # leak, timeout or sanitizer report fails the command and leaves the
  # reproducer in build-fuzz/artifacts/. FUZZ_SEED fixes libFuzzer's seed
  # (CI does, for runs that explore the same inputs each time).
  deps
  CC=clang BUILD=build-fuzz build -Dfuzz=true -Dtests=disabled \
    -Dbench=false -Db_lundef=false -Dbuildtype=debugoptimized
  secs=${FUZZ_SECONDS:-30}
  mkdir -p build-fuzz/artifacts
  while read -r t; do
    [ -n "$t" ] || continue
    work=build-fuzz/corpus-work/$t
    rm -rf "$work"
    mkdir -p "$work" "fuzz/corpus/$t"
    echo "== $t (${secs}s)"
    if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
      UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "build-fuzz/fuzz/$t" -max_total_time="$secs" -timeout=10 \
        ${FUZZ_SEED:+-seed="$FUZZ_SEED"} \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="build-fuzz/artifacts/$t-" \
        "$work" "fuzz/corpus/$t" </dev/null >"build-fuzz/$t.log" 2>&1; then
      tail -n 60 "build-fuzz/$t.log"
      echo "fuzz target $t failed (log: build-fuzz/$t.log)"
      exit 1
    fi
    grep -E "^(#[0-9]+ +DONE|Done|stat::number_of_executed_units)" \
      "build-fuzz/$t.log" || tail -n 3 "build-fuzz/$t.log"
  done < build-fuzz/fuzz/targets.txt
  ;;
*)
  sed -n '2,7p' "$0"
  exit 2
  ;;
esac
