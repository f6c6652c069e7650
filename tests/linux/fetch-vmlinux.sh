#!/usr/bin/env bash
# Prints the path of an uncompressed vmlinux (ELF with a PVH note) from Debian's current
# linux-image-*-amd64 package, fetching it with apt-get download and unpacking it with
# dpkg-deb -x into a cache the first time; the package's bzImage is kept beside it as
# "vmlinuz", and its ACPI button module (power button events, a module in Debian's
# kernel) as "button.ko". Exit 77 when the package cannot be had.
#
#   fetch-vmlinux.sh [CACHEDIR]     (default $VMMD_LINUX_CACHE or /var/cache/vmmd-linux)
set -euo pipefail

cache=${1:-${VMMD_LINUX_CACHE:-/var/cache/vmmd-linux}}
mkdir -p "$cache"

if [ -f "$cache/vmlinux" ] && [ -f "$cache/vmlinuz" ] && [ -f "$cache/button.ko" ] &&
        [ -f "$cache/version" ]; then
        echo "$cache/vmlinux"
        exit 0
fi

if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
        apt-get update -qq >&2 || true
fi
# linux-image-amd64 depends on the current versioned package; prefer its -unsigned twin
# (the same kernel without the signature wrapper).
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
if [ -z "$pkg" ]; then
        echo "fetch-vmlinux: cannot resolve linux-image-amd64" >&2
        exit 77
fi
if apt-cache show "$pkg-unsigned" >/dev/null 2>&1; then
        pkg=$pkg-unsigned
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >&2); then
        echo "fetch-vmlinux: apt-get download $pkg failed" >&2
        exit 77
fi
dpkg-deb -x "$work"/*.deb "$work/x"
vmlinuz=$(ls "$work"/x/boot/vmlinuz-* | head -n1)

# The bzImage's protected-mode part holds the compressed vmlinux at payload_offset
# (setup header 0x248) for payload_length (0x24c) bytes; setup_sects is at 0x1f1.
/usr/bin/python3 - "$vmlinuz" "$work/vmlinux" <<'PY'
import gzip, lzma, struct, sys
data = open(sys.argv[1], "rb").read()
setup_sects = data[0x1f1] or 4
off = (setup_sects + 1) * 512
po, pl = struct.unpack_from("<II", data, 0x248)
payload = data[off + po: off + po + pl]
if payload[:6] == b"\xfd7zXZ\x00":
    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
elif payload[:2] == b"\x1f\x8b":
    out = gzip.decompress(payload)
else:
    sys.exit("fetch-vmlinux: unknown payload compression " + payload[:6].hex())
if out[:4] != b"\x7fELF":
    sys.exit("fetch-vmlinux: payload is not an ELF")
open(sys.argv[2], "wb").write(out)
PY
button=$(find "$work"/x/lib/modules -path '*/kernel/drivers/acpi/button.ko*' | head -n1)
case $button in
*.ko) cp "$button" "$cache/button.ko" ;;
*.ko.xz) xz -dc "$button" > "$cache/button.ko" ;;
*.ko.zst) zstd -qdc "$button" > "$cache/button.ko" ;;
*) echo "fetch-vmlinux: no ACPI button module in $pkg" >&2; exit 77 ;;
esac
cp "$vmlinuz" "$cache/vmlinuz"
mv "$work/vmlinux" "$cache/vmlinux"
echo "$pkg" > "$cache/version"
echo "$cache/vmlinux"
