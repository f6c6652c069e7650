#!/usr/bin/env bash
# Installs the Debian 12 packages vmmd needs to build, test and run its demo, when they are
# missing. Needs root (apt-get). Safe to run again: it installs nothing that is present.
set -euo pipefail

packages=(
        # build
        meson ninja-build gcc pkg-config
        # the sanitizer and fuzzer builds of the test command: clang with its runtimes
        # (ASan, UBSan, TSan, libFuzzer) and llvm-symbolizer for readable reports
        clang libclang-rt-14-dev llvm
        libsystemd-dev libjson-c-dev liburing-dev libcmocka-dev
        # tests: a private bus, the polkit mock, unit checks
        dbus python3-dbusmock python3-dbus systemd libglib2.0-bin
        # the nested KVM runner (hosts without /dev/kvm), the Linux boot check, bench/
        qemu-system-x86 busybox-static cpio xz-utils
        # tests/dbus/test-faults.py: packets dropped with an nftables rule
        nftables iproute2
)

missing=()
for p in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
                missing+=("$p")
        fi
done

if [ "${#missing[@]}" -eq 0 ]; then
        echo "install-deps: all ${#packages[@]} packages present"
        exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing packages: ${missing[*]}; run as root to install them" >&2
        exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
