#!/usr/bin/env bash
# Linux across switchovers: Debian's stock vmlinux with 2 vCPUs and the test image
# (make-initramfs.sh: vmmd-memcheck verifying 16 MiB, a heartbeat every 500 ms) is moved
# twice (A -> B -> C, a ping-pong's two switchovers) into a fresh KVM VM by vm-hop, with
# 1.5 s between pause and resume, and runs 30 s after each. Checked:
#  - heartbeats consecutive across the three consoles, 0 corrupt words, both CPUs online;
#  - at each switchover the guest's monotonic clock moves on by the downtime (not less,
#    within 5 ms + 20 %: it does not stall), never back, and not more than the downtime
#    plus 5 ms + 20 % plus three heartbeat periods (the gap between two heartbeats also
#    holds the guest's run before the pause and its first verify pass after the resume,
#    slow in the nested VM), and wall clock minus monotonic clock stays put (5 ms + 20 %
#    of the downtime);
#  - after the switchovers no clocksource, soft lockup, RCU stall, WARNING, BUG or
#    "problem" line;
#  - the power button powers the guest off at the end.
#
#   test-linux-hop.sh VM_HOP_BINARY MEMCHECK_BINARY
# Exit 77 without /dev/kvm, under kvm_pvm (unless VMMD_LINUX_FORCE is set) or without the
# kernel package.
set -euo pipefail

vm_hop=$1
memcheck=$2
downtime_ms=${VMMD_HOP_DOWNTIME_MS:-1500}
settle_s=${VMMD_HOP_SETTLE_S:-30}
hb_ms=500
cmdline="console=ttyS0 panic=-1 memcheck_mib=16 memcheck_hb_ms=$hb_ms"

# shellcheck source=linux-image.sh
source "$(dirname "$0")/linux-image.sh" "$memcheck"
cat > "$work/config.json" <<JSON
{"vcpus": 2, "memory_mib": 256, "kernel": "$vmlinux", "initramfs": "$work/initramfs.cpio.gz",
 "cmdline": "$cmdline", "serial": {"mode": "file", "path": "$work/unused.log"}}
JSON
fail=0
rc=0
"$vm_hop" "$work/config.json" "$work/console" 2 "$downtime_ms" "$settle_s" "HB seq=6 " | tee "$work/hop.out" || rc=$?
for k in 0 1 2; do
        tr -d '\r' < "$work/console.$k" > "$work/c$k.txt" 2>/dev/null || : > "$work/c$k.txt"
done
if [ "$rc" -ne 0 ]; then
        echo "FAIL: vm-hop exit $rc"
        for k in 0 1 2; do echo "--- console $k (last 30 lines):"; tail -n 30 "$work/c$k.txt"; done
        exit 1
fi
echo "ok: two switchovers, powered off by the power button"

check() { # description, file, grep -E pattern
        if grep -qE "$3" "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi
}
check "init: nproc=2" "$work/c0.txt" '^vmmd-init: nproc=2 online=0-1$'
check "power button seen after the switchovers" "$work/c2.txt" '^vmmd-memcheck: POWERBUTTON$'
bad=$(cat "$work/c1.txt" "$work/c2.txt" |
        grep -nE 'clocksource|[Ss]oft lockup|rcu.*(stall|detected)|TSC unstable|WARNING|BUG|[Pp]roblem|CORRUPT|CLOCK|Call Trace' || true)
if [ -z "$bad" ]; then
        echo "ok: no clocksource, soft lockup, RCU stall, WARNING, BUG or problem line after the switchovers"
else
        echo "FAIL: after the switchovers the guest printed:"; echo "$bad"; fail=1
fi

# Heartbeats across the consoles, and each switchover's clock gap.
downtimes=$(sed -n 's/^vm-hop: hop [0-9]* downtime_us=\([0-9]*\)$/\1/p' "$work/hop.out" | tr '\n' ' ')
if awk -v downtimes="$downtimes" -v hb_ms="$hb_ms" '
        BEGIN { n = split(downtimes, d, " ") }
        FNR == 1 { file++ }
        /^vmmd-memcheck: HB / {
                for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
                if (f["seq"] != ++seq || f["corrupt"] != 0 || f["cpus"] != 2) { bad = 1; print "bad heartbeat: " $0 }
                if (seen && file != lastfile) {
                        dt = d[file - 1] * 1000; gap = f["mono_ns"] - mono; drift = (f["real_ns"] - f["mono_ns"]) - off
                        if (drift < 0) drift = -drift
                        slack = 5e6 + 0.2 * dt
                        printf "switchover %d: downtime %.1f ms, guest monotonic gap %.1f ms, wall-minus-monotonic moved %.3f ms\n", file - 1, dt / 1e6, gap / 1e6, drift / 1e6
                        if (gap < dt - slack || gap > dt + 3 * hb_ms * 1e6 + slack || drift > slack) { bad = 1; print "  out of bounds" }
                        hops++
                } else if (seen && f["mono_ns"] < mono) { bad = 1; print "monotonic clock went back: " $0 }
                seen = 1; lastfile = file; mono = f["mono_ns"]; off = f["real_ns"] - f["mono_ns"]
                count[file]++
        }
        END {
                printf "heartbeats per console: %d %d %d\n", count[1], count[2], count[3]
                exit !(hops == 2 && !bad && count[2] >= 10 && count[3] >= 10)
        }' "$work/c0.txt" "$work/c1.txt" "$work/c2.txt"; then
        echo "ok: heartbeats consecutive over both switchovers, 0 corrupt, 2 CPUs, clock gaps match the downtime"
else
        echo "FAIL: heartbeats or clock gaps"; fail=1
fi
if [ "$fail" != 0 ]; then
        for k in 0 1 2; do echo "--- console $k:"; cat "$work/c$k.txt"; done
fi
exit $fail
