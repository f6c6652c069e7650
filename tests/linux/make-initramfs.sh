#!/usr/bin/env bash
# Builds the Linux test image's initramfs (gzip'd newc cpio) from Debian packages only:
# busybox-static's /bin/busybox, the kernel package's ACPI button module (kept by
# fetch-vmlinux.sh) and our static vmmd-memcheck. Its /init mounts /proc, /sys and /dev,
# loads button.ko, prints
#   vmmd-init: nproc=<n> online=<cpu list>
# and execs vmmd-memcheck with $memcheck_mib and $memcheck_hb_ms (kernel command line
# parameters memcheck_mib=N memcheck_hb_ms=N reach init as environment variables).
#
#   make-initramfs.sh OUTPUT.cpio.gz MEMCHECK_BINARY BUTTON_KO
set -euo pipefail

out=$1 memcheck=$2 button=$3
busybox=${VMMD_BUSYBOX:-/bin/busybox}
for tool in cpio gzip; do
        command -v "$tool" >/dev/null || { echo "make-initramfs: $tool is missing" >&2; exit 77; }
done
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
        echo "make-initramfs: $busybox is not a static busybox (install busybox-static)" >&2
        exit 77
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
cp "$memcheck" "$root/bin/vmmd-memcheck"
cp "$button" "$root/button.ko"
cat > "$root/init" <<'INIT'
#!/bin/sh
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb insmod /button.ko || echo "vmmd-init: insmod button.ko failed"
echo "vmmd-init: nproc=$($bb nproc) online=$($bb cat /sys/devices/system/cpu/online)"
exec /bin/vmmd-memcheck "${memcheck_mib:-16}" "${memcheck_hb_ms:-500}"
INIT
chmod 755 "$root/init"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) |
        gzip -n -6 > "$out"
