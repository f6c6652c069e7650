#!/usr/bin/env bash
# The demo of README.md: installs what is missing, builds, then starts two vmmd, each on its
# own private D-Bus system bus ("host A" and "host B"), boots the test guest on A, and
# live-migrates it to B with `vmmctl migrate` while a progress bar runs; then shows the
# guest heart-beating on B and the job's final statistics (`vmmctl job ID`).
#
#   tools/demo.sh [BUILDDIR]            (default: build; run as root)
#
# Without a usable /dev/kvm it runs itself inside a nested VM that has one
# (tests/nested/run-in-vm.sh: QEMU TCG with emulated SVM, this machine's root shared).
#
# Environment:
#   VMMD_DEMO_MEMORY_MIB   guest RAM (default 1024)
#   VMMD_DEMO_WORKLOAD     the guest's workload (default "work=verify mib=256": fills 256 MiB
#                          and re-reads it, counting pages a migration got wrong; try
#                          "work=dirty mib=128" for a guest dirtying memory as fast as it can)
#   VMMD_DEMO_URI          tcp or unix (default tcp: loopback)
#   VMMD_DEMO_MIGRATE_ARGS extra vmmctl migrate options, e.g. "--bandwidth=64 --connections=2"
#   VMMD_NESTED            auto (default), always, never
set -euo pipefail

cd "$(dirname "$0")/.."
top=$PWD
builddir=${1:-build}
case $builddir in /*) ;; *) builddir=$top/$builddir ;; esac

kvm_works() { # the test guest runs wherever KVM can create a VM (tools/kvmhost.py)
        local kind
        kind=$(/usr/bin/python3 "$top/tools/kvmhost.py" --kind 2>/dev/null || echo none)
        echo "=== host KVM: $kind"
        [ "$kind" != none ] && [ "$kind" != unusable ]
}

if [ -z "${VMMD_DEMO_INNER:-}" ]; then
        bash tools/install-deps.sh
        if [ ! -f "$builddir/build.ninja" ]; then
                meson setup "$builddir" -Dtests=enabled -Dwerror=true
        fi
        ninja -C "$builddir"

        nested=${VMMD_NESTED:-auto}
        if [ "$nested" = always ] || { [ "$nested" != never ] && ! kvm_works; }; then
                echo "=== /dev/kvm is not usable here: running the demo in a nested VM"
                echo "    (tests/nested/run-in-vm.sh: QEMU TCG with nested KVM, ~10x slower)"
                args=(--env VMMD_DEMO_INNER=1)
                if [ -t 1 ]; then
                        args+=(--env VMMD_DEMO_TTY=1 --env "COLUMNS=$(tput cols 2>/dev/null || echo 100)")
                fi
                for v in VMMD_DEMO_MEMORY_MIB VMMD_DEMO_WORKLOAD VMMD_DEMO_URI VMMD_DEMO_MIGRATE_ARGS; do
                        [ -n "${!v:-}" ] && args+=(--env "$v=${!v}")
                done
                exec bash tests/nested/run-in-vm.sh --timeout 1200 "${args[@]}" -- \
                        bash "$top/tools/demo.sh" "$builddir"
        fi
        export VMMD_DEMO_INNER=1
        [ -t 1 ] && export VMMD_DEMO_TTY=1
fi

# --- the demo itself (here /dev/kvm works) ---

# One stream, in order (the nested runner streams stdout and stderr separately).
exec 2>&1

vmmd=$builddir/daemon/vmmd
vmmctl=$builddir/cli/vmmctl
guest=$builddir/guest/vmmd-test-guest.elf
for f in "$vmmd" "$vmmctl" "$guest"; do
        [ -x "$f" ] || [ -f "$f" ] || { echo "demo: $f is missing (build first)"; exit 1; }
done
kvm_works || { echo "demo: /dev/kvm is not usable"; exit 1; }

mem=${VMMD_DEMO_MEMORY_MIB:-1024}
workload=${VMMD_DEMO_WORKLOAD:-work=verify mib=256}
progress=lines
[ -n "${VMMD_DEMO_TTY:-}" ] && progress=bar

tmp=$(mktemp -d /tmp/vmmd-demo.XXXXXX)
chmod 755 "$tmp"
pids=()

cleanup() {
        set +e
        for side in A B; do
                [ -S "$tmp/$side/bus" ] || continue
                for vm in $("$vmmctl" --address="unix:path=$tmp/$side/bus" --json list 2>/dev/null |
                        sed -n 's/^ *"name": *"\(.*\)",$/\1/p'); do
                        "$vmmctl" --address="unix:path=$tmp/$side/bus" stop "$vm" >/dev/null 2>&1
                done
        done
        for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
                kill "${pids[$i]}" 2>/dev/null
        done
        for pid in "${pids[@]}"; do
                wait "$pid" 2>/dev/null
        done
        rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() {
        printf '\n\033[1m=== %s\033[0m\n' "$*"
}

run() { # echo a command, then run it
        printf '$ %s\n' "$*" | sed "s|$builddir/cli/||; s|--address=unix:path=$tmp/A/bus|--address=\$BUS_A|; s|--address=unix:path=$tmp/B/bus|--address=\$BUS_B|"
        "$@"
}

# Waits up to $1 seconds for a command to succeed.
wait_for() {
        local deadline=$((SECONDS + $1))
        shift
        until "$@" >/dev/null 2>&1; do
                if [ $SECONDS -ge $deadline ]; then
                        echo "demo: timed out waiting for: $*"
                        return 1
                fi
                sleep 0.2
        done
}

heartbeats() { # console file -> HB lines
        grep -a -o 'HB seq=[0-9]* .*' "$1" 2>/dev/null || true
}

hb_count() {
        heartbeats "$1" | wc -l
}

hb_at_least() { # console file, count
        [ "$(hb_count "$1")" -ge "$2" ]
}

start_host() { # A or B
        local side=$1 dir=$tmp/$1
        mkdir -p "$dir/services"
        sed -e "s|@LISTEN@|unix:path=$dir/bus|" -e "s|@SERVICEDIR@|$dir/services|" \
                -e "s|@TEST_USER@|$(id -un)|" -e "s|@VMMD_POLICY@|$top/units/org.vmmd.VMM1.conf|" \
                tests/dbus/system-bus.conf.in >"$dir/bus.conf"
        dbus-daemon --config-file="$dir/bus.conf" --nofork >"$dir/bus.log" 2>&1 &
        pids+=($!)
        wait_for 20 test -S "$dir/bus"
        DBUS_SYSTEM_BUS_ADDRESS="unix:path=$dir/bus" VMMD_LOG_LEVEL=info "$vmmd" >"$dir/vmmd.log" 2>&1 &
        pids+=($!)
        wait_for 30 "$vmmctl" --address="unix:path=$dir/bus" list
        echo "host $side: dbus-daemon on unix:path=$dir/bus, vmmd pid ${pids[-1]} (log $dir/vmmd.log)"
}

A=(--address="unix:path=$tmp/A/bus")
B=(--address="unix:path=$tmp/B/bus")

step "1. Two vmmd, each on its own private D-Bus system bus"
start_host A
start_host B

step "2. Host A: create and boot the test guest (${mem} MiB, $workload)"
cat >"$tmp/demo.json" <<EOF
{
  "vcpus": 1,
  "memory_mib": $mem,
  "kernel": "$guest",
  "cmdline": "$workload hb=100",
  "serial": { "mode": "file", "path": "$tmp/A/demo.console" }
}
EOF
cat "$tmp/demo.json"
run "$vmmctl" "${A[@]}" create --start demo "$tmp/demo.json"
wait_for 180 hb_at_least "$tmp/A/demo.console" 5
run "$vmmctl" "${A[@]}" list
echo "guest console on host A (the heartbeat every 100 ms; corrupt= counts bad pages):"
heartbeats "$tmp/A/demo.console" | tail -n 3 | sed 's/^/  /'

step "3. Host B: listen for the migration, with its own console file"
case ${VMMD_DEMO_URI:-tcp} in
unix) uri=unix:$tmp/B/migrate.sock ;;
*) uri=tcp:127.0.0.1:$((20000 + RANDOM % 20000)) ;;
esac
run "$vmmctl" "${B[@]}" receive --dispatch --timeout=300 \
        --config="{\"serial\":{\"mode\":\"file\",\"path\":\"$tmp/B/demo.console\"}}" demo "$uri"
run "$vmmctl" "${B[@]}" list

step "4. Host A: live-migrate the running guest to host B"
# shellcheck disable=SC2086
run "$vmmctl" "${A[@]}" migrate --progress=$progress ${VMMD_DEMO_MIGRATE_ARGS:-} demo "$uri"

step "5. Host B: the guest runs on"
before=$(hb_count "$tmp/B/demo.console")
wait_for 120 hb_at_least "$tmp/B/demo.console" $((before + 10))
run "$vmmctl" "${A[@]}" list
run "$vmmctl" "${B[@]}" list
echo "last heartbeats on host A:"
heartbeats "$tmp/A/demo.console" | tail -n 2 | sed 's/^/  /'
echo "first heartbeats on host B:"
# The line the guest was writing at the switch is split between the two files.
cat "$tmp/A/demo.console" "$tmp/B/demo.console" | grep -a -o 'HB seq=[0-9]* .*' >"$tmp/all.hb"
last_a=$(heartbeats "$tmp/A/demo.console" | tail -n 1 | sed 's/HB seq=\([0-9]*\).*/\1/')
grep -a -A 2 "^HB seq=$last_a " "$tmp/all.hb" | tail -n 2 | sed 's/^/  /'
echo "latest on host B:"
tail -n 1 "$tmp/all.hb" | sed 's/^/  /'
awk '{ split($2, s, "="); seq = s[2] + 0
       if (NR > 1 && seq != prev + 1) gaps++
       for (i = 3; i <= NF; i++) if ($i ~ /^corrupt=/ && $i != "corrupt=0") bad++
       prev = seq }
     END { printf "heartbeats 1..%d across both hosts: %s; corrupt pages: %d\n", prev,
                  gaps ? gaps " gap(s)" : "consecutive, none missing", bad }' "$tmp/all.hb"

step "6. The job's final statistics on host A"
job=$("$vmmctl" "${A[@]}" --json status demo | sed -n 's/^ *"job": *"\(.*\)",*$/\1/p')
run "$vmmctl" "${A[@]}" job "${job##*/}"
echo
run "$vmmctl" "${A[@]}" jobs
run "$vmmctl" "${B[@]}" jobs

step "Done: cleaning up (VMs stopped, both vmmd and buses ended)"
