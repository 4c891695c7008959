# Fetch Debian's current kernel (the one linux-image-amd64 depends on) once,
# without installing it; shared by the loader and vmmrun tests. Source it,
# then call
#   debian_kernel_fetch <fallback-cache-dir>
# which sets DEBIAN_KERNEL (the vmlinuz path), DEBIAN_KERNEL_PKG and
# DEBIAN_VIRTIO_MODULES (the directory of the kernel's virtio modules:
# virtio, virtio_ring, virtio_mmio and virtio_balloon are modules in
# Debian's build). The package is fetched with apt-get download into
# $LIBVMM_CACHE_DIR (default ~/.cache/libvmm, else the fallback) and only
# its /boot and those modules are kept. Exits 77 (skip) only when the
# archive cannot be reached and nothing is cached.

debian_kernel_fetch() {
  local cache pkg dir tmp
  if [ -n "${LIBVMM_CACHE_DIR:-}" ]; then
    cache=$LIBVMM_CACHE_DIR/debian-kernel
  elif [ -n "${HOME:-}" ] && [ -w "$HOME" ]; then
    cache=$HOME/.cache/libvmm/debian-kernel
  else
    cache=$1
  fi
  mkdir -p "$cache"

  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
  if [ -z "$pkg" ]; then
    # No package lists: use whatever kernel is cached.
    pkg=$(ls "$cache" 2>/dev/null | grep '^linux-image-' | head -n1 || true)
    if [ -z "$pkg" ]; then
      echo "SKIP: apt-cache does not know linux-image-amd64 and nothing is" \
           "cached (run apt-get update)"
      exit 77
    fi
  fi
  dir=$cache/$pkg
  if ! ls "$dir"/boot/vmlinuz-* >/dev/null 2>&1 ||
     ! ls "$dir"/virtio/virtio_balloon.ko >/dev/null 2>&1; then
    tmp=$(mktemp -d "$cache/fetch.XXXXXX")
    # apt-get download writes to the current directory; when the _apt user
    # cannot write there it downloads as root with a warning.
    if ! (cd "$tmp" && apt-get download -q "$pkg" >download.log 2>&1); then
      cat "$tmp/download.log"
      if grep -qiE "could not resolve|failed to fetch|temporary failure|unable to connect|connection (refused|timed out)" \
           "$tmp/download.log"; then
        rm -rf "$tmp"
        echo "SKIP: the Debian archive is unreachable, $pkg is not cached"
        exit 77
      fi
      rm -rf "$tmp"
      exit 1
    fi
    dpkg -x "$tmp"/*.deb "$tmp/x"
    rm -rf "$dir"
    mkdir -p "$dir"
    mv "$tmp/x/boot" "$dir/boot"
    mkdir -p "$dir/virtio"
    cp "$tmp"/x/lib/modules/*/kernel/drivers/virtio/{virtio,virtio_ring,virtio_mmio,virtio_balloon}.ko \
      "$dir/virtio/"
    rm -rf "$tmp"
  fi
  DEBIAN_KERNEL=$(ls "$dir"/boot/vmlinuz-* | head -n1)
  DEBIAN_KERNEL_PKG=$pkg
  DEBIAN_VIRTIO_MODULES=$dir/virtio
}
