#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# The files units/ installs: the systemd units pass `systemd-analyze verify` with an empty
# stderr (it exits 0 even on "ignoring" errors), with their @...@ paths filled in to point
# at the programs just built; vmmd.service is rated by `systemd-analyze security`; the D-Bus
# activation file, bus policy, polkit policy and introspection XML are well-formed and agree
# on names.
# usage: test-units.sh UNITS_SOURCE_DIR VMMD VMMCTL
set -u

units=$1 vmmd=$2 vmmctl=$3
fail() { echo "FAIL: $*"; exit 1; }

command -v systemd-analyze >/dev/null || { echo "SKIP: systemd-analyze not installed"; exit 77; }
python=/usr/bin/python3
[ -x "$python" ] || python=python3

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/units" "$tmp/etc/vmmd/vms"
echo '{}' >"$tmp/etc/vmmd/vms/web.json"

for f in vmmd.service vmmd-vm@.service org.vmmd.VMM1.service; do
        sed -e "s|@LIBEXECDIR@|$(dirname "$vmmd")|g" \
            -e "s|@BINDIR@|$(dirname "$vmmctl")|g" \
            -e "s|@SYSCONFDIR@|$tmp/etc|g" \
            -e "s|@DOCDIR@|$tmp/doc|g" \
            "$units/$f.in" >"$tmp/units/$f" || fail "cannot fill in $f.in"
        if grep -n '@[A-Z]*@' "$tmp/units/$f"; then fail "$f.in: unknown @VARIABLE@"; fi
done
# The programs the units name, under the names they are installed as.
[ "$(basename "$vmmd")" = vmmd ] || fail "vmmd binary is not called vmmd"
[ "$(basename "$vmmctl")" = vmmctl ] || fail "vmmctl binary is not called vmmctl"

cd "$tmp" || exit 1
for unit in vmmd.service vmmd-vm@web.service; do
        # It takes well under a second; it has been seen to hang in a VM whose PID 1 is
        # not systemd (tests/nested): that says nothing about the units.
        err=$(SYSTEMD_UNIT_PATH="$tmp/units:" SYSTEMD_LOG_LEVEL=notice \
              timeout 60 systemd-analyze verify "$unit" 2>&1 >/dev/null)
        rc=$?
        if [ $rc -eq 124 ]; then echo "SKIP: systemd-analyze verify hung"; exit 77; fi
        [ $rc -eq 0 ] || fail "systemd-analyze verify $unit exited $rc: $err"
        [ -z "$err" ] || fail "systemd-analyze verify $unit printed: $err"
        echo "ok: systemd-analyze verify $unit"
done

# Hardening: "OK" or better (exposure below 3.0 of 10).
exposure=$(SYSTEMD_UNIT_PATH="$tmp/units:" timeout 60 systemd-analyze security --offline=yes \
           "$tmp/units/vmmd.service" 2>/dev/null | sed -n 's/.*exposure level for vmmd.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security gave no rating"
awk -v e="$exposure" 'BEGIN { exit !(e < 3.0) }' || fail "vmmd.service exposure $exposure >= 3.0"
echo "ok: vmmd.service exposure $exposure"

grep -qx 'Type=notify' units/vmmd.service || fail "vmmd.service: not Type=notify"
grep -qx 'BusName=org.vmmd.VMM1' units/vmmd.service || fail "vmmd.service: no BusName="
grep -qx 'DeviceAllow=/dev/kvm rw' units/vmmd.service || fail "vmmd.service: no /dev/kvm"
grep -q '^PrivateDevices=' units/vmmd.service && fail "vmmd.service: PrivateDevices= hides /dev/kvm"
grep -qx 'Name=org.vmmd.VMM1' units/org.vmmd.VMM1.service || fail "activation file: Name="
grep -qx 'SystemdService=vmmd.service' units/org.vmmd.VMM1.service ||
        fail "activation file: SystemdService="
grep -qx 'User=root' units/org.vmmd.VMM1.service || fail "activation file: User="
echo "ok: names agree"

"$python" - "$units" <<'PY' || fail "XML files"
import sys, xml.etree.ElementTree as ET
d = sys.argv[1]
conf = ET.parse(f'{d}/org.vmmd.VMM1.conf').getroot()
owners = [(p.get('user'), a.get('own')) for p in conf.iter('policy') for a in p.iter('allow')
          if a.get('own')]
assert owners == [('root', 'org.vmmd.VMM1')], owners
assert any(p.get('context') == 'default' and a.get('send_destination') == 'org.vmmd.VMM1'
           for p in conf.iter('policy') for a in p.iter('allow')), 'default may not send'
pol = ET.parse(f'{d}/org.vmmd.vmm1.policy').getroot()
ids = sorted(a.get('id') for a in pol.iter('action'))
assert ids == ['org.vmmd.vmm1.manage', 'org.vmmd.vmm1.migrate'], ids
for a in pol.iter('action'):
    assert a.find('description').text and a.find('message').text and a.find('defaults') is not None
for f, iface in (('org.vmmd.VMM1.Manager.xml', 'org.vmmd.VMM1.Manager'),
                 ('org.vmmd.VMM1.VM.xml', 'org.vmmd.VMM1.VM')):
    root = ET.parse(f'{d}/{f}').getroot()
    assert [i.get('name') for i in root.iter('interface')] == [iface], f
print('ok: XML well-formed: bus policy, polkit actions, introspection')
PY

