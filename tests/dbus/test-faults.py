#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Faults of a real network, between two vmmd in two network namespaces joined by a veth
pair (made and removed here with `ip netns`), each on its own private dbus-daemon, the
test guest verifying its memory:

- a destination vmmd SIGKILLed during precopy;
- the link set down (`ip link set down`) and packets silently dropped (an nftables DROP
  rule) during the switchover's final pass: the switchover's deadline resumes the source
  guest;
- a whole migration across the namespaces completes, its reported downtime against the
  guest's own largest gap.

The source's link is slowed with a `tbf` qdisc (this host has no netem) so that precopy
and the final pass last long enough to be hit. After each case: the guest runs in exactly
one place, its verifier reports 0 corrupt pages, the job says what happened, both daemons
still serve; each case prints the longest pause the guest saw.

Needs root, /dev/kvm, `ip netns`, `tc` and `nft`: exits 77 without them."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import dbus

from vmmd_test import (BUS_NAME, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH, PROPS_IFACE, VM_IFACE, Bus,
                       Daemon, VmmdTestCase, env_path, have_kvm, main, skip, wait_until)

if not have_kvm():
    skip('no usable /dev/kvm: guests cannot run here')
if not os.environ.get('VMMD_TEST_GUEST'):
    skip('$VMMD_TEST_GUEST (the test guest ELF) not set')
if os.geteuid() != 0:
    skip('network namespaces need root')
for tool in ('ip', 'tc', 'nft'):
    if not shutil.which(tool):
        skip(f'{tool} not found (tools/install-deps.sh installs it)')

HB = re.compile(rb'HB seq=(\d+) ms=(\d+) work=(\w+) passes=(\d+) pages=(\d+) corrupt=(\d+) '
                rb'maxgap_us=(\d+)')
SUFFIX = str(os.getpid())
NS_SRC, NS_DST = f'vmmdf-src-{SUFFIX}', f'vmmdf-dst-{SUFFIX}'
IF_SRC, IF_DST = f'vfs{SUFFIX}'[:15], f'vfd{SUFFIX}'[:15]
ADDR_SRC, ADDR_DST = '10.231.7.1', '10.231.7.2'
SWITCHOVER_TIMEOUT_MS = 3000


def sh(*cmd, check=True):
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=60)


def heartbeats(path):
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return [{'seq': int(m[1]), 'passes': int(m[4]), 'corrupt': int(m[6]), 'maxgap_us': int(m[7])}
            for m in HB.finditer(data)]


def make_network():
    """Two namespaces, a veth pair between them; False if this machine cannot."""
    if sh('ip', 'netns', 'add', NS_SRC, check=False).returncode != 0:
        return False
    sh('ip', 'netns', 'add', NS_DST)
    sh('ip', 'link', 'add', IF_SRC, 'netns', NS_SRC, 'type', 'veth', 'peer', 'name', IF_DST,
       'netns', NS_DST)
    for ns, dev, addr in ((NS_SRC, IF_SRC, ADDR_SRC), (NS_DST, IF_DST, ADDR_DST)):
        sh('ip', '-n', ns, 'addr', 'add', f'{addr}/24', 'dev', dev)
        sh('ip', '-n', ns, 'link', 'set', dev, 'up')
        sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
    return True


def remove_network():
    for ns in (NS_SRC, NS_DST):
        sh('ip', 'netns', 'del', ns, check=False)


def slow_link(rate):
    """The source's egress limited to 'rate' (tc syntax), or unlimited with None."""
    sh('tc', '-n', NS_SRC, 'qdisc', 'del', 'dev', IF_SRC, 'root', check=False)
    if rate:
        sh('tc', '-n', NS_SRC, 'qdisc', 'add', 'dev', IF_SRC, 'root', 'tbf', 'rate', rate,
           'burst', '256kb', 'latency', '2s')


class NetnsDaemon(Daemon):
    """vmmd started inside a network namespace (`ip netns exec` execs it: same pid)."""

    def __init__(self, bus, ns):
        real = os.environ['VMMD_BIN']
        wrapper = os.path.join(bus.tmpdir, 'vmmd-in-netns')
        with open(wrapper, 'w') as f:
            f.write(f'#!/bin/sh\nexec ip netns exec {ns} {real} "$@"\n')
        os.chmod(wrapper, 0o755)
        os.environ['VMMD_BIN'] = wrapper
        try:
            super().__init__(bus)
        finally:
            os.environ['VMMD_BIN'] = real


class Side:
    def __init__(self, tmpdir, name, ns):
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.ns = ns
        self.bus = Bus(self.dir)
        self.daemon = NetnsDaemon(self.bus, ns)

    def restart(self):
        self.daemon.close()
        self.daemon = NetnsDaemon(self.bus, self.ns)

    def obj(self, path, iface):
        return dbus.Interface(self.bus.conn.get_object(BUS_NAME, path, introspect=False), iface)

    def manager(self):
        return self.obj(MANAGER_PATH, MANAGER_IFACE)

    def vm_state(self, path):
        return str(self.obj(path, PROPS_IFACE).Get(VM_IFACE, 'State'))

    def job_props(self, path):
        return self.obj(path, PROPS_IFACE).GetAll(JOB_IFACE)

    def close(self):
        self.daemon.close()
        self.bus.close()


class FaultTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.make_env(start_daemon=False)
        if not make_network():
            skip('cannot make network namespaces here')
        cls.src = Side(cls.tmpdir, 'src', NS_SRC)
        cls.dst = Side(cls.tmpdir, 'dst', NS_DST)
        cls.port = 31000 + os.getpid() % 1000 * 20
        cls.pauses = []

    @classmethod
    def tearDownClass(cls):
        failed = getattr(cls, '_failed', False)
        for side in (getattr(cls, 'src', None), getattr(cls, 'dst', None)):
            if side:
                if failed:
                    print(f'--- vmmd log ({side.dir}) ---\n' + side.daemon.read_log(), file=sys.stderr)
                side.close()
        remove_network()
        for name, pause_ms in cls.pauses:
            print(f'# longest pause the guest saw: {name}: {pause_ms} ms')
        super().tearDownClass()

    def tearDown(self):
        sh('ip', 'netns', 'exec', NS_DST, 'nft', 'delete', 'table', 'inet', 'vmmdf', check=False)
        sh('ip', '-n', NS_DST, 'link', 'set', IF_DST, 'up', check=False)
        # A link that went down leaves the peer's neighbour entry FAILED: the next case's
        # connect() would get "No route to host" until it expires.
        for ns in (NS_SRC, NS_DST):
            sh('ip', '-n', ns, 'neigh', 'flush', 'all', check=False)
        slow_link(None)
        for side in (self.src, self.dst):
            if not side.daemon.alive():
                side.restart()
            for name, path in side.manager().ListVMs():
                try:
                    if side.vm_state(path) in ('running', 'paused', 'migration-unknown'):
                        side.obj(path, VM_IFACE).Stop()
                    side.obj(path, VM_IFACE).Delete()
                except dbus.exceptions.DBusException:
                    pass

    # --- helpers ---

    def console(self, name, where):
        return os.path.join(self.tmpdir, f'{name}.{where}.console')

    def start_guest(self, name, cmdline):
        path = str(self.src.manager().CreateVM(name, json.dumps({
            'vcpus': 1, 'memory_mib': 256, 'kernel': self.kernel, 'cmdline': cmdline + ' hb=100',
            'serial': {'mode': 'file', 'path': self.console(name, 'src')}})))
        self.src.obj(path, VM_IFACE).Start()
        wait_until(lambda: (h := heartbeats(self.console(name, 'src'))) and h[-1]['passes'] >= 1, 180,
                   f'{name}: the guest walked its working set once')
        return path

    def receive(self, name, timeout_s=10):
        type(self).port += 1
        uri = f'tcp:{ADDR_DST}:{self.port}'
        cfg = json.dumps({'serial': {'mode': 'file', 'path': self.console(name, 'dst')}})
        vm, job = self.dst.manager().ReceiveMigration(name, uri, dbus.Dictionary(
            {'config': dbus.String(cfg), 'timeout_s': dbus.UInt64(timeout_s)}, signature='sv'))
        return str(vm), str(job), uri

    def migrate(self, vm, uri, **kw):
        types = {'switchover_timeout_ms': dbus.UInt64, 'max_downtime_ms': dbus.UInt64,
                 'auto_converge': dbus.Boolean, 'timeout_s': dbus.UInt64}
        return str(self.src.obj(vm, VM_IFACE).Migrate(uri, dbus.Dictionary(
            {k: types[k](v) for k, v in kw.items()}, signature='sv')))

    def wait_phase(self, job, phases, timeout=120):
        p = {}

        def check():
            nonlocal p
            p = self.src.job_props(job)
            return str(p['Phase']) in phases or str(p['State']) in ('completed', 'failed', 'cancelled')

        wait_until(check, timeout, f'job phase in {phases}')
        return p

    def wait_final(self, side, job, timeout=120):
        p = {}

        def check():
            nonlocal p
            p = side.job_props(job)
            return str(p['State']) in ('completed', 'failed', 'cancelled')

        wait_until(check, timeout, f'the end of {job}')
        return p

    def expect_source_runs(self, name, vm):
        """The source guest runs on, verified, and nowhere else; returns its longest pause."""
        self.assertEqual(self.src.vm_state(vm), 'running')
        last = heartbeats(self.console(name, 'src'))[-1]
        wait_until(lambda: heartbeats(self.console(name, 'src'))[-1]['seq'] >= last['seq'] + 3, 60,
                   f'{name}: heartbeats on the source after the failure')
        hbs = heartbeats(self.console(name, 'src'))
        self.assertEqual([h for h in hbs if h['corrupt']], [], 'corrupt pages')
        # Nowhere else: the destination's copy never ran (no heartbeat on its console).
        self.assertEqual(heartbeats(self.console(name, 'dst')), [])
        for side in (self.src, self.dst):
            side.manager().ListVMs()  # still serves
        pause_ms = hbs[-1]['maxgap_us'] // 1000
        type(self).pauses.append((name, pause_ms))
        return pause_ms

    def switchover_fault(self, name, fault, want='deadline', dst_killed=False):
        """A guest whose final pass lasts about a second over the slowed link; 'fault' hits
        the link once the source has paused the guest."""
        slow_link('100mbit')
        vm = self.start_guest(name, 'work=dirty mib=12 rate=0')
        dst_vm, dst_job, uri = self.receive(name)
        job = self.migrate(vm, uri, max_downtime_ms=2500, auto_converge=False,
                           switchover_timeout_ms=SWITCHOVER_TIMEOUT_MS)
        p = self.wait_phase(job, ('downtime',))
        self.assertEqual(str(p['Phase']), 'downtime', p['ErrorMessage'])
        fault()
        p = self.wait_final(self.src, job, 30)
        print(f'# {name}: source {p["State"]}: {p["ErrorMessage"]}', flush=True)
        self.assertEqual(str(p['State']), 'failed')
        self.assertIn(want, str(p['ErrorMessage']))
        if dst_killed:
            self.dst.restart()
        pause = self.expect_source_runs(name, vm)
        self.assertGreater(pause, 0)
        if dst_killed:
            return
        d = self.wait_final(self.dst, dst_job, 60)
        print(f'# {name}: destination {d["State"]}: {d["ErrorMessage"]}', flush=True)
        self.assertEqual(str(d['State']), 'failed')
        self.assertNotEqual(self.dst.vm_state(dst_vm), 'running')

    # --- the cases ---

    def test_link_down_in_final_pass(self):
        self.switchover_fault('link-down-final',
                              lambda: sh('ip', '-n', NS_DST, 'link', 'set', IF_DST, 'down'))

    def test_drop_in_final_pass(self):
        def drop():
            rules = ('table inet vmmdf {\n chain inp {\n  type filter hook input priority 0; policy accept;\n'
                     f'  tcp dport {self.port} drop\n }}\n}}\n')
            r = subprocess.run(['ip', 'netns', 'exec', NS_DST, 'nft', '-f', '-'], input=rules, text=True,
                               capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.switchover_fault('drop-final', drop)

    def test_destination_killed_in_final_pass(self):
        def kill():
            self.dst.daemon.proc.send_signal(signal.SIGKILL)
            self.dst.daemon.proc.wait(30)
        self.switchover_fault('kill-final', kill, want='connection', dst_killed=True)

    def test_destination_gone_at_setup(self):
        name = 'kill-setup'
        vm = self.start_guest(name, 'work=verify mib=32')
        dst_vm, dst_job, uri = self.receive(name)
        self.dst.daemon.proc.send_signal(signal.SIGKILL)
        self.dst.daemon.proc.wait(30)
        job = self.migrate(vm, uri)
        p = self.wait_final(self.src, job, 60)
        print(f'# {name}: source {p["State"]}: {p["ErrorMessage"]}', flush=True)
        self.assertEqual(str(p['State']), 'failed')
        self.assertIn('setup', str(p['ErrorMessage']))
        self.dst.restart()
        self.expect_source_runs(name, vm)

    def test_link_down_in_precopy(self):
        """Found by TCP_USER_TIMEOUT (20 s of unacknowledged data), not minutes later."""
        name = 'link-down-precopy'
        slow_link('200mbit')
        vm = self.start_guest(name, 'work=verify mib=128')
        dst_vm, dst_job, uri = self.receive(name, timeout_s=60)
        job = self.migrate(vm, uri)
        wait_until(lambda: self.src.job_props(job)['BytesProcessed'] > 8 << 20, 60, '8 MiB sent')
        self.assertEqual(str(self.src.job_props(job)['Phase']), 'precopy')
        sh('ip', '-n', NS_DST, 'link', 'set', IF_DST, 'down')
        t = time.monotonic()
        wait_until(lambda: bool(self.src.job_props(job)['Stalled']), 30, 'Stalled')
        print(f'# {name}: Stalled after {time.monotonic() - t:.1f} s', flush=True)
        p = self.wait_final(self.src, job, 60)
        print(f'# {name}: source {p["State"]} {time.monotonic() - t:.1f} s after the link went down: '
              f'{p["ErrorMessage"]}', flush=True)
        self.assertEqual(str(p['State']), 'failed')
        self.expect_source_runs(name, vm)
        d = self.wait_final(self.dst, dst_job, 90)
        self.assertEqual(str(d['State']), 'failed')
        self.assertNotEqual(self.dst.vm_state(dst_vm), 'running')

    def test_destination_killed_in_precopy(self):
        name = 'kill-precopy'
        slow_link('200mbit')
        vm = self.start_guest(name, 'work=verify mib=128')
        dst_vm, dst_job, uri = self.receive(name)
        job = self.migrate(vm, uri)
        wait_until(lambda: self.src.job_props(job)['BytesProcessed'] > 8 << 20, 60, '8 MiB sent')
        self.assertEqual(str(self.src.job_props(job)['Phase']), 'precopy')
        self.dst.daemon.proc.send_signal(signal.SIGKILL)
        self.dst.daemon.proc.wait(30)
        p = self.wait_final(self.src, job, 60)
        print(f'# {name}: source {p["State"]}: {p["ErrorMessage"]}', flush=True)
        self.assertEqual(str(p['State']), 'failed')
        self.assertIn('connection', str(p['ErrorMessage']))
        self.dst.restart()
        self.expect_source_runs(name, vm)

    def test_whole_migration(self):
        name = 'whole'
        slow_link('1gbit')
        vm = self.start_guest(name, 'work=verify mib=64')
        dst_vm, dst_job, uri = self.receive(name, timeout_s=60)
        job = self.migrate(vm, uri)
        p = self.wait_final(self.src, job, 120)
        self.assertEqual(str(p['State']), 'completed', p['ErrorMessage'])
        self.assertEqual(self.src.vm_state(vm), 'migrated')
        last_src = heartbeats(self.console(name, 'src'))[-1]
        wait_until(lambda: (h := heartbeats(self.console(name, 'dst'))) and h[-1]['seq'] >= last_src['seq'] + 3,
                   60, 'heartbeats on the destination')
        hbs = heartbeats(self.console(name, 'src')) + heartbeats(self.console(name, 'dst'))
        self.assertEqual([h for h in hbs if h['corrupt']], [], 'corrupt pages')
        gap_ms = hbs[-1]['maxgap_us'] // 1000
        print(f'# {name}: downtime {p["DowntimeUSec"] // 1000} ms reported, the guest\'s largest gap '
              f'{gap_ms} ms', flush=True)
        type(self).pauses.append((name, gap_ms))
        self.assertEqual(self.dst.vm_state(dst_vm), 'running')


if __name__ == '__main__':
    main()
