#!/usr/bin/env bash
# The migration benchmark: vmmd and QEMU (when installed) on the same test guest, same
# host, same transport (unix socket), for the scenarios of the live migration issue:
# a 1 GiB idle guest and a 1 GiB guest dirtying a 128 MiB working set at full speed.
# On a host without /dev/kvm it re-runs itself in the nested KVM VM (slow: its figures
# say what nested TCG can do, not what the engine can).
#
#   bench/run.sh [BUILDDIR]      (RUNS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
builddir=${1:-build}
runs=${RUNS:-3}

if [ ! -x "$builddir/bench/bench-migration" ]; then
        bash tools/install-deps.sh
        [ -f "$builddir/build.ninja" ] || meson setup "$builddir"
        ninja -C "$builddir"
fi
guest=$PWD/$builddir/guest/vmmd-test-guest.elf

if ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
        if [ -z "${VMMD_IN_NESTED:-}" ]; then
                echo "=== no /dev/kvm here: running the benchmark in the nested KVM VM (tests/nested)"
                exec bash tests/nested/run-in-vm.sh --mem 6G --timeout 3000 --env VMMD_IN_NESTED=1 \
                        --env RUNS="$runs" -- bash bench/run.sh "$builddir"
        fi
        echo "no /dev/kvm" >&2
        exit 77
fi

# name | guest command line | seconds the guest runs before the migration starts (the
# dirtying guest first touches its whole working set)
for scenario in "idle|work=idle hb=1000|3" "dirty 128 MiB|work=dirty mib=128 rate=0 hb=1000|${DIRTY_WARMUP_S:-10}"; do
        IFS='|' read -r name cmdline warmup <<< "$scenario"
        echo
        echo "=== 1 GiB guest, $name"
        "$builddir/bench/bench-migration" --guest "$guest" --mem 1024 --cmdline "$cmdline" --runs "$runs" \
                --warmup-s "$warmup"
        if command -v qemu-system-x86_64 >/dev/null; then
                /usr/bin/python3 bench/qemu-migrate.py "$guest" 1024 "$cmdline" "$runs" "$warmup" || true
        else
                echo "(qemu-system-x86_64 not installed: no comparison)"
        fi
done
