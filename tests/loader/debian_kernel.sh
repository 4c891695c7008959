#!/usr/bin/env bash
# Load Debian's current kernel (the package linux-image-amd64 depends on)
# with the bzImage loader and check where everything landed:
#   debian_kernel.sh <test_loader> <cache-dir>
# The package is fetched into the cache dir once. Exit 77 (skip) only when
# the archive cannot be reached; any other failure is a failure.
set -euo pipefail
test_loader=$1
cache=$2
mkdir -p "$cache"

kernel=$(ls "$cache"/x/boot/vmlinuz-* 2>/dev/null | head -n1 || true)
if [ -z "$kernel" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
  if [ -z "$pkg" ]; then
    echo "SKIP: apt-cache does not know linux-image-amd64 (run apt-get update)"
    exit 77
  fi
  # apt-get download writes to the current directory; _apt cannot always
  # write there, which only costs a warning.
  if ! (cd "$cache" && apt-get download -q "$pkg" >download.log 2>&1); then
    if grep -qiE "could not resolve|failed to fetch|temporary failure|unable to connect|network" "$cache/download.log"; then
      echo "SKIP: Debian archive unreachable:"
      cat "$cache/download.log"
      exit 77
    fi
    cat "$cache/download.log"
    exit 1
  fi
  dpkg -x "$cache"/"$pkg"_*.deb "$cache/x"
  rm -f "$cache"/"$pkg"_*.deb
  kernel=$(ls "$cache"/x/boot/vmlinuz-* | head -n1)
  # Keep only what the test reads.
  find "$cache/x" -mindepth 1 -maxdepth 1 ! -name boot -exec rm -rf {} +
fi
echo "kernel: $kernel"
exec "$test_loader" --bzimage "$kernel"
