#!/usr/bin/env bash
# The Linux boot check: Debian's stock kernel (vmlinux from linux-image-*-amd64, booted
# through its PVH entry, and the package's bzImage through the 64-bit boot protocol)
# prints its early log on our COM1: "Linux version", our command line, an e820 map equal
# to our configuration and "Hypervisor detected: KVM". When QEMU is installed it boots the
# same vmlinux with the same command line, and the version and command-line lines must
# match ours.
#
#   test-linux-boot.sh VM_BOOT_BINARY
# Exit 77 without /dev/kvm or without the kernel package.
set -euo pipefail

vm_boot=$1
here=$(cd "$(dirname "$0")" && pwd)
timeout_s=${VMMD_LINUX_TIMEOUT:-120}
mem_mib=256
cmdline="console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 vmmd.test=linux-boot"

if ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
        echo "SKIP: no usable /dev/kvm"
        exit 77
fi
vmlinux=$("$here/fetch-vmlinux.sh") || exit $?

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
end=$(printf '0x%016x' $((mem_mib * 1024 * 1024 - 1)))

for kernel in "$vmlinux" "$(dirname "$vmlinux")/vmlinuz"; do
        echo "=== $kernel"
        cat > "$work/config.json" <<JSON
{"vcpus": 1, "memory_mib": $mem_mib, "kernel": "$kernel", "cmdline": "$cmdline",
 "serial": {"mode": "file", "path": "$work/console.log"}}
JSON
        rm -f "$work/console.log"
        rc=0
        "$vm_boot" "$work/config.json" "$timeout_s" "Hypervisor detected" || rc=$?
        echo "--- first lines of the guest console:"
        head -n 12 "$work/console.log" || true
        echo "---"
        if [ "$rc" -ne 0 ]; then
                echo "FAIL: no 'Hypervisor detected' line within ${timeout_s}s (vm-boot exit $rc)"
                fail=1
                continue
        fi
        log=$work/console.txt
        tr -d '\r' < "$work/console.log" > "$log" # the serial console ends lines with CR LF
        check() { # description, grep -E pattern
                if grep -qE "$2" "$log"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi
        }
        check "Linux version line" '\] Linux version [0-9]'
        check "our command line" "\] Command line: $cmdline\$"
        check "KVM detected" '\] Hypervisor detected: KVM'
        # e820: the usable ranges Linux reports are exactly ours; the reserved legacy area
        # starts at 0x9fc00 (PVH folds it into one range up to 0xfffff).
        want_usable=$(printf '%s\n' "[mem 0x0000000000000000-0x000000000009fbff] usable" \
                "[mem 0x0000000000100000-${end}] usable")
        got_usable=$(sed -n 's/.*BIOS-e820: \(\[mem .*\] usable\)$/\1/p' "$log")
        if [ "$got_usable" = "$want_usable" ]; then
                echo "ok: e820 usable ranges equal the configuration"
        else
                echo "FAIL: e820 usable ranges"; echo "want:"; echo "$want_usable"; echo "got:"; echo "$got_usable"
                fail=1
        fi
        check "e820 reserved legacy area" 'BIOS-e820: \[mem 0x000000000009fc00-0x00000000000(9ffff|fffff)\] reserved'
        cp "$log" "$work/$(basename "$kernel").txt"
done
log=$work/vmlinux.txt

if command -v qemu-system-x86_64 >/dev/null; then
        qlog=$work/qemu.txt
        timeout "$timeout_s" qemu-system-x86_64 -machine q35,accel=kvm -cpu host -m "$mem_mib" \
                -display none -no-reboot -kernel "$vmlinux" -append "$cmdline" \
                -serial "file:$work/qemu.log" -monitor none &
        qpid=$!
        for _ in $(seq 1 $((timeout_s * 5))); do
                grep -q "Hypervisor detected" "$work/qemu.log" 2>/dev/null && break
                kill -0 "$qpid" 2>/dev/null || break
                sleep 0.2
        done
        kill "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
        tr -d '\r' < "$work/qemu.log" > "$qlog" 2>/dev/null || true
        for what in "Linux version" "Command line"; do
                ours=$(grep -m1 "\] $what" "$log" | sed 's/^\[[^]]*\] //')
                theirs=$(grep -m1 "\] $what" "$qlog" 2>/dev/null | sed 's/^\[[^]]*\] //' || true)
                if [ -n "$theirs" ] && [ "$ours" = "$theirs" ]; then
                        echo "ok: '$what' line identical under QEMU"
                else
                        echo "FAIL: '$what' differs from QEMU's"; echo " ours:   $ours"; echo " QEMU's: $theirs"
                        fail=1
                fi
        done
        grep -E "\] (Hypervisor detected|BIOS-e820)" "$qlog" | sed 's/^/QEMU: /' || true
fi
exit $fail
