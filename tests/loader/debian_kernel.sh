#!/usr/bin/env bash
# Load Debian's current kernel (the one linux-image-amd64 depends on) with
# the bzImage loader and check where everything landed:
#   debian_kernel.sh <test_loader> <fallback-cache-dir>
# The kernel is fetched once and cached by tests/debian/fetch_kernel.sh.
set -euo pipefail
test_loader=$1
. "$(dirname "$0")/../debian/fetch_kernel.sh"
debian_kernel_fetch "$2"
echo "kernel: $DEBIAN_KERNEL ($DEBIAN_KERNEL_PKG)"
exec "$test_loader" --bzimage "$DEBIAN_KERNEL"
