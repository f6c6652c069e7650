#!/usr/bin/env bash
# The Linux boot test: Debian's stock kernel (vmlinux from linux-image-*-amd64, booted
# through its PVH entry, and the package's bzImage through the 64-bit boot protocol) with
# an initramfs built here from Debian packages (make-initramfs.sh: busybox-static, the
# kernel's button.ko, our static vmmd-memcheck), at 1, 2 and 4 vCPUs. Each boot must:
#  - print its early log on our COM1: "Linux version", our command line, an e820 map
#    equal to our configuration, "Hypervisor detected: KVM";
#  - reach our /init with nproc equal to the configured vCPUs;
#  - print no WARNING, BUG or "problem" line;
#  - print heartbeats from user space (consecutive, 0 corrupt words, all CPUs online);
#  - power off when the power button is pressed (vm_request_shutdown(), what Shutdown()
#    calls): vmmd-memcheck sees the ACPI fixed event, runs busybox poweroff -f, the VM
#    ends "stopped".
# When QEMU is installed it boots the same vmlinux with the same command line, and the
# version and command-line lines must match ours.
#
#   test-linux-boot.sh VM_BOOT_BINARY MEMCHECK_BINARY
# Exit 77 without /dev/kvm, under kvm_pvm (unless VMMD_LINUX_FORCE is set) or without the
# kernel package. VMMD_LINUX_VCPUS (default
# "1 2 4") and VMMD_LINUX_KERNELS ("vmlinux vmlinuz") narrow the matrix.
set -euo pipefail

vm_boot=$1
memcheck=$2
timeout_s=${VMMD_LINUX_TIMEOUT:-300}
mem_mib=256
hb_wanted=4
cmdline="console=ttyS0 earlyprintk=serial,ttyS0,115200 panic=-1 vmmd.test=linux-boot memcheck_mib=16 memcheck_hb_ms=500"

# shellcheck source=linux-image.sh
source "$(dirname "$0")/linux-image.sh" "$memcheck"
echo "initramfs: $(stat -c %s "$work/initramfs.cpio.gz") bytes"
fail=0
end=$(printf '0x%016x' $((mem_mib * 1024 * 1024 - 1)))

early_checks() { # log
        local log=$1
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
}

for kname in ${VMMD_LINUX_KERNELS:-vmlinux vmlinuz}; do
for n in ${VMMD_LINUX_VCPUS:-1 2 4}; do
        kernel=$cache/$kname
        echo "=== $kernel, $n vCPU(s)"
        cat > "$work/config.json" <<JSON
{"vcpus": $n, "memory_mib": $mem_mib, "kernel": "$kernel", "initramfs": "$work/initramfs.cpio.gz",
 "cmdline": "$cmdline", "serial": {"mode": "file", "path": "$work/console.log"}}
JSON
        rm -f "$work/console.log"
        rc=0
        "$vm_boot" --shutdown "$work/config.json" "$timeout_s" "HB seq=$hb_wanted " || rc=$?
        log=$work/$kname-$n.txt
        tr -d '\r' < "$work/console.log" > "$log" # the serial console ends lines with CR LF
        check() { # description, grep -E pattern
                if grep -qE "$2" "$log"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi
        }
        if [ "$rc" -ne 0 ]; then
                echo "FAIL: no heartbeat $hb_wanted then power-off within ${timeout_s}s (vm-boot exit $rc)"
                echo "--- last lines of the guest console:"; tail -n 40 "$log"; echo "---"
                fail=1
                continue
        fi
        echo "ok: heartbeat $hb_wanted, power button, powered off (stopped)"
        [ "$n" = 1 ] && early_checks "$log"
        check "ACPI tables found" '\] ACPI: (XSDT|APIC|FACP) 0x00000000000F'
        check "init: nproc=$n" "^vmmd-init: nproc=$n online="
        check "memcheck started with $n CPUs" "^vmmd-memcheck: start mib=16 hb_ms=500 nproc=$n\$"
        check "power button seen in user space" '^vmmd-memcheck: POWERBUTTON$'
        check "ACPI power off" '\] reboot: Power down'
        bad=$(grep -nE 'WARNING|BUG|[Pp]roblem|Call Trace|CLOCK|CORRUPT' "$log" || true)
        if [ -z "$bad" ]; then
                echo "ok: no WARNING, BUG, problem, CORRUPT or CLOCK line"
        else
                echo "FAIL: the log has:"; echo "$bad"; fail=1
        fi
        # Heartbeats: seq 1, 2, ... without a gap, 0 corrupt, every CPU online throughout.
        if awk -v n="$n" -v want="$hb_wanted" '
                /^vmmd-memcheck: HB / {
                        for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
                        if (f["seq"] != ++seq || f["corrupt"] != 0 || f["cpus"] != n) { bad = 1; print "bad: " $0 }
                }
                END { exit !(seq >= want && !bad) }' "$log"; then
                echo "ok: $(grep -c '^vmmd-memcheck: HB ' "$log") heartbeats, consecutive, 0 corrupt, $n CPUs"
        else
                echo "FAIL: heartbeats"; fail=1
        fi
        grep -E '\] (smpboot: (Allowing|Total)|ACPI: (Interpreter|Using)|x86/fpu: Enabled)' "$log" | sed 's/^/  /' || true
        # For the record (not failures): what the kernel found missing or wrong.
        grep -iE 'error|fail|firmware bug|fatal|unstable|not listed|disabled' "$log" | sed 's/^/  note: /' || true
        if [ "$fail" != 0 ]; then
                echo "--- the guest console:"; cat "$log"; echo "---"
        fi
done
done

log=$work/vmlinux-1.txt
if [ -f "$log" ] && command -v qemu-system-x86_64 >/dev/null; then
        qlog=$work/qemu.txt
        timeout 120 qemu-system-x86_64 -machine q35,accel=kvm -cpu host -m "$mem_mib" \
                -display none -no-reboot -kernel "$vmlinux" -append "$cmdline" \
                -serial "file:$work/qemu.log" -monitor none &
        qpid=$!
        for _ in $(seq 1 600); do
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
