#!/usr/bin/env bash
# Boot Debian's kernel with a busybox-static initramfs through vmmrun:
#   debian_boot.sh <vmmrun> <fallback-cache-dir> <kvm|bt>
#
# Full boot: the kernel reaches /init, which prints a marker, runs a
# little user space (a pipeline, 100 processes, tmpfs I/O and a hash, a
# signal) and writes 42 to the exit port if every result is right, so
# vmmrun exits with (42 << 1) | 1 = 85. Checked where
# the engine can run a Linux kernel in useful time: on BT (with the
# library's interrupt platform: 6.5 s on this project's 2-core hosts, up
# to 40 s when they are loaded, 60 s in the sanitizer build; FULL_BOUND
# leaves room), and on KVM on a host where it runs guest kernel code
# natively.
#
# Early output: where KVM emulates kernel-mode code (this project's PVM
# hosts, about 1 us per instruction) decompressing the kernel alone takes
# hours, so the check is that the kernel starts and reaches its first
# serial output within EARLY_BOUND seconds. Debian builds the decompressor
# without CONFIG_X86_VERBOSE_BOOTUP, so on success it prints nothing; the
# earliest line it always prints is the warning "KASLR disabled: 'nokaslr'
# on cmdline." (arch/x86/boot/compressed/kaslr.c), which comes after its
# self-relocation, page tables, early serial console and ACPI RSDP scan and
# just before decompression: about 1.7 million instructions (counted on
# BT), measured at 2.4 s on this project's KVM hosts. Both runs add a
# virtio-balloon (--balloon 0); the early run checks that its probe
# parameter was appended to the kernel's command line.
set -euo pipefail
vmmrun=$1
fallback=$2
engine=$3
EARLY_BOUND=${EARLY_BOUND:-60}
early_marker="KASLR disabled"
FULL_BOUND=${FULL_BOUND:-300}
. "$(dirname "$0")/../debian/fetch_kernel.sh"

engines=$("$vmmrun" --engines)
if ! grep -q "^$engine available" <<<"$engines"; then
  echo "SKIP: the $engine engine is not available here:"
  echo "$engines"
  exit 77
fi
full=false
case $engine in
kvm)
  if grep -qE "kvm runs guest kernel code|it runs guest kernel code" \
       <<<"$engines"; then
    full=true
  fi
  ;;
bt)
  if ! grep -q "^bt available irqchip=yes" <<<"$engines"; then
    echo "FAIL: the BT engine runs without the interrupt platform:" \
         "$(grep '^bt' <<<"$engines")"
    exit 1
  fi
  # The full boot: Debian's kernel runs on BT with the platform's timer
  # interrupts through to /init (docs/bt.md, "Linux").
  full=true
  ;;
*)
  echo "usage: $0 <vmmrun> <fallback-cache-dir> <kvm|bt>"
  exit 2
  ;;
esac

debian_kernel_fetch "$fallback"
echo "kernel: $DEBIAN_KERNEL ($DEBIAN_KERNEL_PKG)"

work=$(mktemp -d "${TMPDIR:-/tmp}/vmmrun-debian.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# The initramfs: a static busybox and an /init that puts user space to
# work (processes, pipes, a signal, file I/O through tmpfs: syscalls,
# page faults, interrupts and returns between the rings) and reports
# through the exit port (/dev/port at offset 0xf4): 42 when every result
# is right, 43 (and the results) otherwise.
busybox=$(command -v busybox || echo /bin/busybox)
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  echo "FAIL: needs a statically linked busybox (Debian's busybox-static," \
       "installed by ./build.sh deps); found: $busybox"
  exit 1
fi
mkdir -p "$work/root/bin" "$work/root/dev" "$work/root/proc" "$work/root/tmp"
cp "$busybox" "$work/root/bin/busybox"
ln -s busybox "$work/root/bin/sh"
cat >"$work/root/init" <<'INIT'
#!/bin/sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "vmmrun-test: /init reached, kernel $(/bin/busybox uname -r)"
b=/bin/busybox
sum=$($b seq 1 20000 | $b awk '{ s += $1 } END { print s }')
n=0
while [ $n -lt 100 ] && $b true; do n=$((n + 1)); done
$b mount -t tmpfs tmpfs /tmp
$b dd if=/dev/zero of=/tmp/z bs=4096 count=256 2>/dev/null
hash=$($b sha256sum </tmp/z)
$b sleep 30 &
$b kill -TERM $!
wait $!
sig=$?
echo "vmmrun-test: sum=$sum n=$n hash=${hash%% *} sig=$sig"
code='\053'
if [ "$sum" = 200010000 ] && [ $n = 100 ] && [ $sig = 143 ] &&
   [ "${hash%% *}" = 30e14955ebf1352266dc2ff8067e68104607e750abb9d3b36582b8af909fcb58 ]; then
  code='\052'
fi
$b printf "$code" |
  $b dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null
echo "vmmrun-test: the exit port did not end the run"
/bin/busybox poweroff -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc -R 0:0 --quiet) |
  gzip -1 >"$work/initramfs.cpio.gz"
echo "initramfs: $(stat -c %s "$work/initramfs.cpio.gz") bytes"

out=$work/serial.txt
stats=$work/stats.json
cmdline="console=ttyS0 earlyprintk=serial nokaslr panic=-1 rdinit=/init"
now_us() { echo "${EPOCHREALTIME/./}"; }

if $full; then
  start=$(now_us)
  status=0
  "$vmmrun" --engine "$engine" --memory 256M "$DEBIAN_KERNEL" \
    --initrd "$work/initramfs.cpio.gz" --append "$cmdline" --balloon 0 \
    --serial "file:$out" --timeout "$FULL_BOUND" --stats "$stats" || status=$?
  secs=$(( ($(now_us) - start) / 1000000 ))
  tr -d '\r' <"$out" | tail -n 20
  if [ "$status" -ne 85 ] || ! grep -q "vmmrun-test: /init reached" "$out"; then
    echo "FAIL: vmmrun exited with $status after ${secs} s (want 85 and the" \
         "/init marker)"
    exit 1
  fi
  echo "PASS: booted to /init on $engine in ${secs} s"
  exit 0
fi

# Early output only.
"$vmmrun" --engine "$engine" --memory 256M "$DEBIAN_KERNEL" \
  --initrd "$work/initramfs.cpio.gz" --append "$cmdline" --balloon 0 -v \
  --serial "file:$out" --timeout $((EARLY_BOUND + 60)) --stats "$stats" \
  2>"$work/vmmrun.log" &
pid=$!
start=$(now_us)
while ! grep -q "$early_marker" "$out" 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    status=0
    wait "$pid" || status=$?
    pid=
    echo "FAIL: vmmrun ended with status $status before the kernel's first" \
         "serial output:"
    cat "$out" 2>/dev/null || true
    exit 1
  fi
  if [ $(( $(now_us) - start )) -gt $((EARLY_BOUND * 1000000)) ]; then
    echo "FAIL: no serial output within ${EARLY_BOUND} s"
    exit 1
  fi
  sleep 0.1
done
ms=$(( ($(now_us) - start) / 1000 ))
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
echo "serial: $(tr -d '\r' <"$out" | grep -m1 "$early_marker")"
# The balloon's probe parameter went onto the kernel's command line.
grep "command line:" "$work/vmmrun.log" || true
if ! grep -q "command line: $cmdline virtio_mmio.device=" "$work/vmmrun.log"; then
  echo "FAIL: --balloon did not add virtio_mmio.device= to the command line:"
  cat "$work/vmmrun.log"
  exit 1
fi
if [ "$status" -ne 130 ]; then
  echo "FAIL: vmmrun exited with $status after SIGTERM (want 130)"
  exit 1
fi
grep -q '"format": "bzimage"' "$stats" && grep -q '"status": 130' "$stats" || {
  echo "FAIL: the statistics do not describe this run:"
  cat "$stats"
  exit 1
}
echo "PASS: Debian's kernel on $engine printed \"$early_marker\" after" \
     "$((ms / 1000)).$(printf %03d $((ms % 1000))) s (bound ${EARLY_BOUND} s);" \
     "the full boot to /init is not checked on this engine here"
