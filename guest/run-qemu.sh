#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Run the vmmd test guest under QEMU, serial console on stdout.
#
# usage: run-qemu.sh [-m MIB] [-a tcg|kvm] [-M MACHINE] [-k ELF] [-t SECONDS]
#                    [CMDLINE] [-- EXTRA-QEMU-ARGS...]
#
#   -m MIB      guest RAM (default 256)
#   -a ACCEL    tcg or kvm (default: kvm when /dev/kvm is usable, else tcg)
#   -M MACHINE  QEMU machine type (default q35; pc works too)
#   -k ELF      the guest (default: $VMMD_TEST_GUEST, else the meson build dirs)
#   -t SECONDS  kill QEMU after this long (default: no limit)
#   CMDLINE     the guest command line, e.g. "work=dirty mib=64 exit=5"
#   -- ARGS     passed on to QEMU as is (-incoming, -qmp, -S, ...)
#
# QEMU is exec'd (or run under timeout), so its pid is the caller's child.
# Environment: QEMU (binary, default qemu-system-x86_64).
set -eu

mem=256
accel=
machine=q35
elf=${VMMD_TEST_GUEST:-}
limit=
cmdline=

usage() {
        sed -n '3,18s/^# \{0,1\}//p' "$0" >&2
        exit 2
}

while [ $# -gt 0 ]; do
        case $1 in
        -m) mem=$2; shift 2 ;;
        -a) accel=$2; shift 2 ;;
        -M) machine=$2; shift 2 ;;
        -k) elf=$2; shift 2 ;;
        -t) limit=$2; shift 2 ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) echo "run-qemu.sh: unknown option $1" >&2; usage ;;
        *) cmdline=$1; shift
           if [ $# -gt 0 ]; then
                   [ "$1" = "--" ] || usage
                   shift
           fi
           break ;;
        esac
done

if [ -z "$elf" ]; then
        here=$(cd "$(dirname "$0")" && pwd)
        for f in "$here/vmmd-test-guest.elf" "$here/../build/guest/vmmd-test-guest.elf" \
                 "$here"/../build*/guest/vmmd-test-guest.elf; do
                if [ -f "$f" ]; then
                        elf=$f
                        break
                fi
        done
fi
if [ -z "$elf" ] || [ ! -f "$elf" ]; then
        echo "run-qemu.sh: guest ELF not found; build it (ninja -C build) or pass -k ELF" >&2
        exit 1
fi

if [ -z "$accel" ]; then
        if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
                accel=kvm
        else
                accel=tcg
        fi
fi

set -- -machine "$machine" -accel "$accel" -m "$mem" -nodefaults -no-user-config \
        -display none -monitor none -serial stdio -no-reboot \
        -kernel "$elf" -append "$cmdline" "$@"

if [ -n "$limit" ]; then
        exec timeout "$limit" "${QEMU:-qemu-system-x86_64}" "$@"
fi
exec "${QEMU:-qemu-system-x86_64}" "$@"
