# Sourced by the linux-suite tests (bash, set -euo pipefail): checks that this host's
# KVM can run a stock kernel (tools/kvmhost.py), then sets $here, $vmlinux, $cache and
# $work (a temporary folder removed on exit) and builds $work/initramfs.cpio.gz from
# busybox, the kernel's button.ko and the memcheck program given as $1.
here=$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)
kind=$(/usr/bin/python3 "$here/../../tools/kvmhost.py" --kind)
case $kind in
none|unusable)
        echo "SKIP: no usable /dev/kvm ($kind)"
        exit 77 ;;
kvm_pvm)
        if [ -z "${VMMD_LINUX_FORCE:-}" ]; then
                # Guest ring 0 is emulated there: a stock kernel stops in its early boot.
                echo "SKIP: /dev/kvm is kvm_pvm; run suite linux in tests/nested/run-in-vm.sh (VMMD_LINUX_FORCE=1 tries anyway)"
                exit 77
        fi ;;
esac
vmlinux=$("$here/fetch-vmlinux.sh") || exit $?
cache=$(dirname "$vmlinux")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/make-initramfs.sh" "$work/initramfs.cpio.gz" "$1" "$cache/button.ko" || exit $?
