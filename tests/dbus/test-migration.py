#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Live migration between two vmmd, each on its own private dbus-daemon, with real KVM and
the test guest (guest/README.md):

- the verifier guest migrates over tcp: (loopback) and unix:, and keeps heart-beating on
  the destination's own console: the source's and the destination's console text, put end
  to end, hold consecutive heartbeat numbers and no corrupt page;
- a guest dirtying memory as fast as it can migrates over two connections, and its
  verifier finds every page consistent with one switchover point;
- auto-converge throttles a guest that dirties faster than the bandwidth limit until it
  converges; without it, the migration fails at timeout_s with the source running;
- cancel during precopy, a destination vmmd killed (SIGKILL) mid-stream (during precopy,
  and during the state transfer before the commit), and a garbled stream end the jobs
  as cancelled/failed with a message, readable afterwards (properties,
  GetStats, GetJobStats), the source guest still running;
- Migrate's named errors for bad options and states;
- vmmctl migrate / receive / jobs / job / job-cancel against the same daemons.

Needs /dev/kvm (exits 77 without it; tests/nested/run-in-vm.sh gives one)."""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import dbus

from vmmd_test import (BUS_NAME, ERR, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH, PROPS_IFACE, VM_IFACE,
                       Bus, Daemon, VmmdTestCase, die_with_parent, env_path, have_kvm, main, skip,
                       wait_until)

if not have_kvm():
    skip('no usable /dev/kvm: guests cannot run here (tests/nested/run-in-vm.sh runs them)')
if not os.environ.get('VMMD_TEST_GUEST'):
    skip('$VMMD_TEST_GUEST (the test guest ELF) not set')

INVALID_ARGS = 'org.freedesktop.DBus.Error.InvalidArgs'
MEM_MIB = 256
BOOT_TIMEOUT = 180       # nested KVM is ~10x slower than a host
MIGRATION_TIMEOUT = 600  # a whole migration, bandwidth-limited ones included
HB_TIMEOUT = 180

HB = re.compile(rb'HB seq=(\d+) ms=(\d+) work=(\w+) passes=(\d+) pages=(\d+) corrupt=(\d+) '
                rb'maxgap_us=(\d+)')

OPTION_TYPES = {
    'max_downtime_ms': dbus.UInt64,
    'max_bandwidth_mibps': dbus.UInt64,
    'connections': dbus.UInt32,
    'auto_converge': dbus.Boolean,
    'timeout_s': dbus.UInt64,
    'zerocopy': dbus.String,
    'config': dbus.String,
}


def opts(**kw):
    return dbus.Dictionary({k: OPTION_TYPES[k](v) for k, v in kw.items()}, signature='sv')


def heartbeats(data):
    """[{seq, ms, work, passes, pages, corrupt, maxgap_us}] of console text."""
    out = []
    for m in HB.finditer(data):
        seq, ms, work, passes, pages, corrupt, gap = m.groups()
        out.append({'seq': int(seq), 'ms': int(ms), 'work': work.decode(), 'passes': int(passes),
                    'pages': int(pages), 'corrupt': int(corrupt), 'maxgap_us': int(gap)})
    return out


def read_file(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except FileNotFoundError:
        return b''


MIG_HEADER = struct.Struct('<IIQQ')  # type, payload length, a, b (docs/migration.md)
MIG_STATE = 7


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def thread_report(pid):
    """Each thread of a process: state, CPU time (clock ticks), wait channel and kernel
    stack, for a guest that stops heart-beating."""
    out = []
    try:
        tids = sorted(os.listdir(f'/proc/{pid}/task'), key=int)
    except OSError as e:
        return f'(pid {pid}: {e.strerror})'
    for tid in tids:
        base = f'/proc/{pid}/task/{tid}'

        def rd(n):
            try:
                with open(f'{base}/{n}') as f:
                    return f.read().strip()
            except OSError as e:
                return f'({e.strerror})'
        fields = rd('stat').rsplit(')', 1)[-1].split()
        state, cpu = (fields[0], int(fields[11]) + int(fields[12])) if len(fields) > 12 else ('?', 0)
        out.append(f'  {tid} {rd("comm")} {state} cpu={cpu} wchan={rd("wchan")}\n'
                   + ''.join(f'    {line}\n' for line in rd('stack').splitlines()))
    return ''.join(out)


class StateKillingProxy(threading.Thread):
    """Passes one migration connection from the source on to the destination, message by
    message; when the source's STATE message (the vCPU/device state, sent with the guest
    paused) arrives, it SIGKILLs the destination vmmd instead of passing it on, so the
    destination dies during the state transfer, before the commit."""

    def __init__(self, listen_path, target_path, victim):
        super().__init__(daemon=True)
        self.target_path = target_path
        self.victim = victim
        self.types = []  # message types passed on
        self.killed = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(listen_path)
        self.listener.listen(1)
        self.listener.settimeout(MIGRATION_TIMEOUT)

    def _back(self, dst, src):
        try:
            while (data := dst.recv(1 << 16)):
                src.sendall(data)
        except OSError:
            pass

    def run(self):
        src, _ = self.listener.accept()
        dst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            dst.connect(self.target_path)
            threading.Thread(target=self._back, args=(dst, src), daemon=True).start()
            while (hdr := recv_exact(src, MIG_HEADER.size)) is not None:
                mtype, length, _, _ = MIG_HEADER.unpack(hdr)
                if mtype == MIG_STATE:
                    self.victim.kill()
                    self.killed = True
                    break
                payload = recv_exact(src, length) if length else b''
                if payload is None:
                    break
                dst.sendall(hdr + payload)
                self.types.append(mtype)
        except OSError:
            pass
        finally:
            dst.close()
            src.close()
            self.listener.close()


class Side:
    """One vmmd on its own bus, and what the test saw of it."""

    def __init__(self, bus, daemon):
        self.dir = bus.tmpdir
        self.bus = bus
        self.daemon = daemon
        self.conn = bus.conn
        self.changes = []    # (time, path, changed dict) of Job PropertiesChanged
        self.completed = {}  # job path -> (success, error name, message)
        self.signals = []    # (member, path, args) of Manager and VM signals
        self.conn.add_signal_receiver(self._on_props, signal_name='PropertiesChanged',
                                      dbus_interface=PROPS_IFACE, path_keyword='path')
        self.conn.add_signal_receiver(self._on_completed, signal_name='Completed',
                                      dbus_interface=JOB_IFACE, path_keyword='path')
        for iface in (MANAGER_IFACE, VM_IFACE):
            self.conn.add_signal_receiver(
                lambda *a, **kw: self.signals.append((kw['member'], kw['path'], a)),
                dbus_interface=iface, member_keyword='member', path_keyword='path')

    @classmethod
    def start(cls, tmpdir, name):
        """A new bus and vmmd in tmpdir/name."""
        d = os.path.join(tmpdir, name)
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
        bus = Bus(d)
        return cls(bus, Daemon(bus))

    def _on_props(self, iface, changed, invalidated, path=None):
        if iface == JOB_IFACE:
            self.changes.append((time.monotonic(), str(path), dict(changed)))

    def _on_completed(self, success, name, message, path=None):
        self.completed[str(path)] = (bool(success), str(name), str(message))

    def obj(self, path, iface):
        return dbus.Interface(self.conn.get_object(BUS_NAME, path, introspect=False), iface)

    def manager(self):
        return self.obj(MANAGER_PATH, MANAGER_IFACE)

    def vm(self, path):
        return self.obj(path, VM_IFACE)

    def job(self, path):
        return self.obj(path, JOB_IFACE)

    def vm_props(self, path):
        return self.obj(path, PROPS_IFACE).GetAll(VM_IFACE)

    def job_props(self, path):
        return self.obj(path, PROPS_IFACE).GetAll(JOB_IFACE)

    def vm_state(self, path):
        return str(self.obj(path, PROPS_IFACE).Get(VM_IFACE, 'State'))

    def job_changes(self, path):
        return [(t, c) for t, p, c in self.changes if p == path]

    def kill(self):
        """SIGKILL to its vmmd, and wait for it to be gone."""
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait(30)

    def close(self, failed):
        if failed:
            print(f'--- vmmd log ({self.dir}) ---\n' + self.daemon.read_log(), file=sys.stderr)
        self.daemon.close()
        self.bus.close()


class MigrationTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        # The harness's bus and daemon are the source; the destination gets its own.
        cls.make_env()
        cls.src = Side(cls.bus, cls.daemon)  # its log is printed by the harness
        cls.dst = Side.start(cls.tmpdir, 'dst')
        cls.port = 20000 + (os.getpid() % 2000) * 10

    @classmethod
    def tearDownClass(cls):
        failed = getattr(cls, '_failed', False)
        if getattr(cls, 'dst', None):
            cls.dst.close(failed)
        super().tearDownClass()

    def tearDown(self):
        # Guests spin their CPU: stop every one a test left, the nested VM has two CPUs.
        for side in (self.src, self.dst):
            if not side.daemon.alive():
                continue
            for name, path in side.manager().ListVMs():
                try:
                    if side.vm_state(path) in ('running', 'paused', 'migration-unknown'):
                        side.vm(path).Stop()
                except dbus.exceptions.DBusException:
                    pass

    # --- helpers ---

    def tcp_uri(self):
        type(self).port += 1
        return f'tcp:127.0.0.1:{self.port}'

    def unix_uri(self, name):
        return f'unix:{os.path.join(self.tmpdir, name + ".sock")}'

    def console(self, name):
        return os.path.join(self.tmpdir, f'{name}.console')

    def dst_console(self, name):
        return os.path.join(self.tmpdir, f'{name}.dst.console')

    def wait_heartbeats(self, path, pred, what, timeout=HB_TIMEOUT):
        """Waits until pred(heartbeats of the console file) holds; returns the heartbeats."""
        hbs = []

        def check():
            nonlocal hbs
            hbs = heartbeats(read_file(path))
            return bool(hbs) and pred(hbs)

        try:
            wait_until(check, timeout, what)
        except TimeoutError:
            report = ''
            for side in (self.src, self.dst):
                if side.daemon.alive():
                    for i in range(2):  # twice, to tell spinning threads from waiting ones
                        report += f'--- threads of vmmd {side.daemon.proc.pid} ({side.dir}), sample {i + 1}:\n'
                        report += thread_report(side.daemon.proc.pid)
                        time.sleep(2)
            self.fail(f'{what}: console {path} ends with {read_file(path)[-600:]!r}\n{report}')
        return hbs

    def start_guest(self, name, cmdline, memory_mib=MEM_MIB, passes=0):
        """Boots the guest on the source; waits for heartbeats, and for 'passes' complete
        walks of its working set (verify: filled and re-read, so that what the
        destination reads back was written before the migration)."""
        path = str(self.src.manager().CreateVM(name, json.dumps({
            'vcpus': 1, 'memory_mib': memory_mib, 'kernel': self.kernel,
            'cmdline': cmdline + ' hb=100',
            'serial': {'mode': 'file', 'path': self.console(name)}})))
        self.src.vm(path).Start()
        self.wait_heartbeats(self.console(name),
                             lambda h: len(h) >= 3 and h[-1]['passes'] >= passes,
                             f'{name} on the source: 3 heartbeats, {passes} passes', BOOT_TIMEOUT)
        return path

    def receive(self, name, uri, timeout_s=300, side=None):
        side = side or self.dst
        cfg = json.dumps({'serial': {'mode': 'file', 'path': self.dst_console(name)}})
        vm_path, job_path = side.manager().ReceiveMigration(name, uri,
                                                           opts(config=cfg, timeout_s=timeout_s))
        vm_path, job_path = str(vm_path), str(job_path)
        self.assertEqual(side.vm_state(vm_path), 'incoming')
        return vm_path, job_path

    def start_victim(self, name, cmdline):
        """A guest on the source, and a destination vmmd of its own (to be killed) ready
        to receive it; returns (that Side, the source VM's path, the URI)."""
        victim = Side.start(self.tmpdir, name)
        self.addCleanup(victim.close, False)
        path = self.start_guest(name, cmdline, passes=1)
        uri = self.unix_uri(name)
        self.receive(name, uri, side=victim)
        return victim, path, uri

    def migrate(self, vm_path, uri, **kw):
        return str(self.src.vm(vm_path).Migrate(uri, opts(**kw)))

    def wait_job(self, side, job_path, timeout=MIGRATION_TIMEOUT):
        """Waits for the Completed signal, then checks Wait() agrees."""
        wait_until(lambda: job_path in side.completed, timeout, f'Completed of {job_path}')
        ok, name, message = side.job(job_path).Wait(timeout=60)
        self.assertEqual((bool(ok), str(name), str(message)), side.completed[job_path])
        return side.completed[job_path]

    def wait_job_state(self, side, job_path, pred, what, timeout=120):
        props = {}

        def check():
            nonlocal props
            props = side.job_props(job_path)
            return pred(props)

        wait_until(check, timeout, what)
        return props

    def check_heartbeats_across(self, name, extra=3):
        """The source's console then the destination's: one stream of consecutive
        heartbeats (a line may be split at the switch), no corrupt page after the workload
        walked its whole working set on the destination (twice: the walk in progress at the
        switch may have begun before it), and the guest going on."""
        src_hbs = heartbeats(read_file(self.console(name)))
        self.assertTrue(src_hbs, 'no heartbeat on the source')
        last = src_hbs[-1]
        want_passes = last['passes'] + 2

        def enough(h):
            return h[-1]['seq'] >= last['seq'] + extra and h[-1]['passes'] >= want_passes

        self.wait_heartbeats(self.dst_console(name), enough,
                             f'heartbeats of {name} on the destination after seq {last["seq"]}')
        both = read_file(self.console(name)) + read_file(self.dst_console(name))
        hbs = heartbeats(both)
        seqs = [h['seq'] for h in hbs]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)),
                         f'heartbeat numbers not consecutive across the switch: {seqs}')
        self.assertEqual([h for h in hbs if h['corrupt']], [], 'corrupt pages')
        self.assertNotIn(b'CORRUPT', both)
        self.assertNotIn(b'PANIC', both)
        dst_last = hbs[-1]
        self.assertGreater(dst_last['pages'], last['pages'], 'the workload stopped')
        # A TSC that went backwards shows as an enormous gap (unsigned difference).
        self.assertLess(dst_last['maxgap_us'], 3600 * 10**6,
                        'the guest saw its TSC go backwards across the switchover')
        print(f'# {name}: last seq {last["seq"]} on the source, {dst_last["seq"]} on the '
              f'destination, corrupt 0, passes {last["passes"]} -> {dst_last["passes"]}, '
              f'largest TSC gap {last["maxgap_us"]} us before, {dst_last["maxgap_us"]} us '
              f'after', flush=True)
        return last, dst_last

    def check_completed_job(self, side, job_path, operation):
        p = side.job_props(job_path)
        self.assertEqual(p['State'], 'completed')
        self.assertEqual(p['Phase'], 'done')
        self.assertEqual(p['Operation'], operation)
        self.assertEqual(p['ErrorName'], '')
        self.assertEqual(p['Progress'], 1.0)
        self.assertTrue(p['ProgressValid'])
        self.assertFalse(p['Cancelable'])
        self.assertEqual(p['StartedByUID'], os.getuid())
        self.assertGreater(p['BytesProcessed'], 0)
        self.assertGreater(p['StartTime'], 0)
        self.assertGreater(p['ElapsedUSec'], 0)
        return p

    def check_source_job(self, job_path):
        p = self.check_completed_job(self.src, job_path, 'migration-out')
        self.assertGreater(p['DowntimeUSec'], 0)
        bd = {str(k): int(v) for k, v in p['DowntimeBreakdown'].items()}
        self.assertEqual(set(bd), {'final_dirty_sync', 'final_memory', 'vcpu_state',
                                   'device_state', 'send_state', 'destination_restore',
                                   'destination_resume', 'ack'})
        self.assertLessEqual(sum(bd.values()), p['DowntimeUSec'])
        self.assertGreaterEqual(p['Iteration'], 1)
        self.assertEqual(p['BytesRemaining'], 0)
        self.assertEqual(p['BytesTotal'], p['BytesProcessed'])
        self.assertGreater(p['NormalPages'], 0)
        its = self.src.job(job_path).GetIterations()
        self.assertEqual(its.signature, '(utttttut)')
        self.assertEqual(len(its), p['Iteration'])
        self.assertEqual([int(i[0]) for i in its], list(range(len(its))) or [])
        stats = self.src.job(job_path).GetStats(dbus.UInt32(0))
        self.assertTrue(stats['success'])
        self.assertEqual(stats['operation'], 3)
        self.assertEqual(stats['data_processed'], p['BytesProcessed'])
        self.assertEqual(stats['memory_iteration'], p['Iteration'])
        self.assertEqual(stats['downtime'], p['DowntimeUSec'] // 1000)
        print(f'# source job: total {p["ElapsedUSec"] / 1000:.1f} ms, downtime '
              f'{p["DowntimeUSec"] / 1000:.2f} ms {bd}, {p["BytesProcessed"] >> 20} MiB at '
              f'{p["Rate"] / 2**20:.0f} MiB/s, {p["Iteration"]} passes, throttle '
              f'{p["ThrottlePercent"]}%', flush=True)
        return p, its

    def check_failed_source(self, vm_path, job_path, state, error):
        """A job that ended before the commit: the source guest runs on, and the job's end
        stays readable every way."""
        p = self.src.job_props(job_path)
        self.assertEqual(p['State'], state)
        self.assertEqual(p['ErrorName'], ERR + error)
        self.assertNotEqual(p['ErrorMessage'], '')
        self.assertFalse(p['Cancelable'])
        self.assertEqual(self.src.vm_state(vm_path), 'running')
        self.assertEqual(str(self.src.vm_props(vm_path)['Job']), job_path)
        ok, name, message = self.src.job(job_path).Wait(timeout=60)
        self.assertEqual((bool(ok), str(name), str(message)),
                         (False, ERR + error, str(p['ErrorMessage'])))
        stats = self.src.job(job_path).GetStats(dbus.UInt32(0))
        self.assertFalse(stats['success'])
        self.assertEqual(stats['errmsg'], p['ErrorMessage'])
        t, vstats = self.src.vm(vm_path).GetJobStats(dbus.UInt32(1 | 2))
        self.assertEqual(t, {'failed': 4, 'cancelled': 5}[state])
        self.assertFalse(vstats['success'])
        self.assertEqual(vstats['errmsg'], p['ErrorMessage'])
        # The guest runs on, on the source.
        name = str(self.src.vm_props(vm_path)['Name'])
        seq = heartbeats(read_file(self.console(name)))[-1]['seq']
        hbs = self.wait_heartbeats(self.console(name), lambda h: h[-1]['seq'] >= seq + 3,
                                   f'{name} heart-beating on the source again')
        self.assertEqual([h['seq'] for h in hbs], list(range(1, len(hbs) + 1)))
        self.assertEqual(hbs[-1]['corrupt'], 0)
        print(f'# {name}: {state}: {p["ErrorMessage"]}', flush=True)
        return p

    def check_dropped_destination(self, side, vm_path, job_path):
        p = side.job_props(job_path)
        self.assertIn(p['State'], ('failed', 'cancelled'))
        self.assertNotEqual(p['ErrorMessage'], '')
        wait_until(lambda: side.vm_state(vm_path) == 'stopped', 60,
                   'the destination VM to be stopped')
        return p

    def vmmctl(self, *args, side=None, timeout=MIGRATION_TIMEOUT):
        side = side or self.src
        cmd = [env_path('VMMCTL_BIN'), f'--address={side.bus.address}'] + list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              preexec_fn=die_with_parent)

    # --- tests ---

    def test_01_errors(self):
        """Named errors: bad options (whatever the state), wrong state, no job."""
        path = str(self.src.manager().CreateVM('err', json.dumps({
            'vcpus': 1, 'memory_mib': 32, 'kernel': self.kernel, 'cmdline': 'work=idle',
            'serial': {'mode': 'file', 'path': self.console('err')}})))
        vm = self.src.vm(path)
        uri = self.tcp_uri()
        msg = self.assertDBusError(ERR + 'InvalidState', vm.Migrate, uri, opts())
        self.assertIn('err', msg)
        vm.Start()
        wait_until(lambda: self.src.vm_state(path) == 'running', BOOT_TIMEOUT, 'running')
        bad = [
            dbus.Dictionary({'max_downtime': dbus.UInt64(1)}, signature='sv'),
            dbus.Dictionary({'max_downtime_ms': dbus.UInt32(100)}, signature='sv'),
            dbus.Dictionary({'max_downtime_ms': dbus.UInt64(0)}, signature='sv'),
            dbus.Dictionary({'connections': dbus.UInt32(0)}, signature='sv'),
            dbus.Dictionary({'connections': dbus.UInt32(17)}, signature='sv'),
            dbus.Dictionary({'auto_converge': dbus.String('yes')}, signature='sv'),
            dbus.Dictionary({'zerocopy': dbus.String('maybe')}, signature='sv'),
            dbus.Dictionary({'timeout_s': dbus.Int64(5)}, signature='sv'),
        ]
        for o in bad:
            self.assertDBusError(INVALID_ARGS, vm.Migrate, uri, o)
        self.assertEqual(self.src.vm_state(path), 'running')
        self.assertEqual(str(self.src.vm_props(path)['Job']), '/')
        self.assertDBusError(ERR + 'InvalidState', vm.AbortJob)
        # vmmctl reports the daemon's error on one line, exit status 1.
        r = self.vmmctl('migrate', '--connections=99', 'err', uri)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r'^vmmctl: .*connections.*\(org\.freedesktop\.DBus\.Error\.InvalidArgs\)\n$')
        r = self.vmmctl('migrate', '--max-downtime=x', 'err', uri)
        self.assertEqual(r.returncode, 2, r.stderr)
        vm.Stop()
        vm.Delete()

    def test_02_verify_tcp(self):
        """The verifier over loopback TCP, through the bus API: every signal and statistic."""
        name = 'vtcp'
        path = self.start_guest(name, 'work=verify mib=32', passes=1)
        uri = self.tcp_uri()
        dst_vm, dst_job = self.receive(name, uri)
        self.assertEqual(self.dst.vm_props(dst_vm)['VCPUs'], 0)
        self.assertEqual(self.dst.vm_props(dst_vm)['Config'], '')

        waited = []
        t0 = time.monotonic()
        job_path = self.migrate(path, uri, max_downtime_ms=300)
        self.assertTrue(job_path.startswith('/org/vmmd/VMM1/job/'))
        self.src.job(job_path).Wait(timeout=MIGRATION_TIMEOUT,
                                    reply_handler=lambda *a: waited.append(a),
                                    error_handler=lambda e: waited.append(e))
        self.assertEqual(self.wait_job(self.src, job_path), (True, '', ''))
        wait_until(lambda: waited, 60, 'the reply to Wait()')
        self.assertEqual(tuple(waited[0]), (True, '', ''))
        elapsed = time.monotonic() - t0

        self.assertEqual(self.src.vm_state(path), 'migrated')
        p, its = self.check_source_job(job_path)
        self.assertEqual(p['MaxDowntimeUSec'], 300000)
        self.assertEqual(p['ThrottlePercent'], 0)

        # PropertiesChanged: with Progress, at most every 250 ms (give or take delivery),
        # the last one with the final values before Completed.
        changes = self.src.job_changes(job_path)
        self.assertTrue(any('Progress' in c for _, c in changes), changes)
        self.assertLessEqual(len(changes), elapsed / 0.25 + 3)
        last = [c for _, c in changes if 'State' in c][-1]
        self.assertEqual(last['State'], 'completed')

        # Manager and VM signals on the source.
        sigs = self.src.signals
        job_id = int(p['Id'])
        self.assertIn(('JobNew', MANAGER_PATH, (job_id, job_path, path)),
                      [(m, pa, tuple(a)) for m, pa, a in sigs])
        self.assertTrue(any(m == 'MigrationIteration' and pa == path for m, pa, _ in sigs))
        done = [a[0] for m, pa, a in sigs if m == 'JobCompleted' and pa == path]
        self.assertEqual(len(done), 1)
        self.assertTrue(done[0]['success'])
        self.assertEqual(int(done[0]['memory_iteration']), p['Iteration'])
        self.assertIn((job_id, 'migration-out', 'completed', job_path),
                      [tuple(j) for j in self.src.manager().ListJobs()])
        t, stats = self.src.vm(path).GetJobStats(dbus.UInt32(1 | 2))
        self.assertEqual(t, 3)
        self.assertTrue(stats['success'])

        # The destination: its job, its VM with the source's config and its own console.
        self.assertEqual(self.wait_job(self.dst, dst_job), (True, '', ''))
        self.check_completed_job(self.dst, dst_job, 'migration-in')
        dp = self.dst.vm_props(dst_vm)
        self.assertEqual(dp['State'], 'running')
        self.assertEqual(dp['VCPUs'], 1)
        self.assertEqual(dp['MemoryBytes'], MEM_MIB << 20)
        cfg = json.loads(str(dp['Config']))
        self.assertEqual(cfg['serial']['path'], self.dst_console(name))
        self.assertEqual(cfg['cmdline'], 'work=verify mib=32 hb=100')
        self.assertEqual(str(dp['ConsolePath']), self.dst_console(name))
        self.check_heartbeats_across(name)

        # A migrated VM cannot migrate again; deleting it drops its job (JobRemoved).
        self.assertDBusError(ERR + 'InvalidState', self.src.vm(path).Migrate, self.tcp_uri(),
                             opts())
        self.src.vm(path).Delete()
        wait_until(lambda: any(m == 'JobRemoved' and a[1] == job_path
                               for m, _, a in self.src.signals), 30, 'JobRemoved')
        removed = [a for m, _, a in self.src.signals if m == 'JobRemoved' and a[1] == job_path]
        self.assertEqual((int(removed[0][0]), str(removed[0][2])), (job_id, 'completed'))

    def test_03_verify_unix_vmmctl(self):
        """The verifier over a unix socket, driven by vmmctl receive/migrate/jobs/job."""
        name = 'vunix'
        path = self.start_guest(name, 'work=verify mib=32', passes=1)
        uri = self.unix_uri(name)
        cfg = json.dumps({'serial': {'mode': 'file', 'path': self.dst_console(name)}})
        receiver = subprocess.Popen(
            [env_path('VMMCTL_BIN'), f'--address={self.dst.bus.address}', 'receive', name, uri,
             f'--config={cfg}', '--timeout=300', '--progress=lines'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
        try:
            wait_until(lambda: os.path.exists(uri[5:]) or receiver.poll() is not None, 60,
                       'the destination to listen')
            self.assertIsNone(receiver.poll(), receiver.stderr.read() if receiver.poll() else '')

            r = self.vmmctl('migrate', name, uri, '--progress=bar', '--max-downtime=500')
            print(r.stdout, flush=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            out, err = receiver.communicate(timeout=120)
        finally:
            if receiver.poll() is None:
                receiver.kill()
                receiver.communicate()
        self.assertEqual(receiver.returncode, 0, err)
        self.assertIn(f"Migration of VM '{name}' to {uri}: completed", r.stdout)
        for word in ('Total time:', 'Downtime:', 'final_dirty_sync', 'destination_restore',
                     'Data:', 'Rate:', 'Passes:', 'PASS'):
            self.assertIn(word, r.stdout)
        self.assertIn('\x1b[K', r.stderr)  # the bar redraws in place (\r, then erase)
        self.assertRegex(r.stderr, r'\[[#.]+\]\s+\d+\.\d%')
        self.assertIn(f"Migration of VM '{name}' received on {uri}: completed", out)
        self.assertIn('Waiting for VM', err)
        self.assertEqual(self.src.vm_state(path), 'migrated')
        self.check_heartbeats_across(name)

        job_path = str(self.src.vm_props(path)['Job'])
        job_id = job_path.rsplit('/', 1)[1]
        r = self.vmmctl('jobs')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, rf'(?m)^\s*{job_id}\s+migration-out\s+completed\s+100\.0%\s+{name}\s')
        r = self.vmmctl('jobs', side=self.dst)
        self.assertRegex(r.stdout, rf'(?m)\s+migration-in\s+completed\s+100\.0%\s+{name}\s')
        r = self.vmmctl('job', job_id)
        self.assertEqual(r.returncode, 0, r.stderr)
        for word in ('State: completed', 'DowntimeUSec:', 'DowntimeBreakdown:', 'final_memory',
                     'Iterations:', 'ErrorMessage: -'):
            self.assertIn(word, r.stdout)
        r = self.vmmctl('--json', 'job', job_path)
        self.assertEqual(r.returncode, 0, r.stderr)
        j = json.loads(r.stdout)
        self.assertEqual((j['State'], j['Operation'], j['Path']),
                         ('completed', 'migration-out', job_path))
        self.assertEqual(len(j['Iterations']), j['Iteration'])
        self.assertIn('ack', j['DowntimeBreakdown'])
        r = self.vmmctl('--json', 'job', '--libvirt', job_id)
        self.assertEqual(r.returncode, 0, r.stderr)
        lv = json.loads(r.stdout)
        self.assertTrue(lv['success'])
        self.assertEqual(lv['memory_page_size'], 4096)
        self.assertEqual(lv['data_processed'], j['BytesProcessed'])
        r = self.vmmctl('job-cancel', job_id)
        self.assertEqual(r.returncode, 1)
        self.assertIn('(org.vmmd.VMM1.Error.InvalidState)', r.stderr)
        r = self.vmmctl('job', '999999')
        self.assertEqual(r.returncode, 1)

    def test_04_dirty_two_connections(self):
        """A guest dirtying as fast as it can, over two connections: every page holds the
        last value written before the switchover or a later one."""
        name = 'dirty2'
        path = self.start_guest(name, 'work=dirty mib=32 rate=0', passes=1)
        uri = self.tcp_uri()
        dst_vm, dst_job = self.receive(name, uri)
        job_path = self.migrate(path, uri, connections=2, zerocopy='off')
        self.assertEqual(self.wait_job(self.src, job_path), (True, '', ''))
        self.check_source_job(job_path)
        self.assertEqual(self.wait_job(self.dst, dst_job), (True, '', ''))
        self.assertEqual(self.src.vm_state(path), 'migrated')
        self.check_heartbeats_across(name)

    def test_05_no_auto_converge_times_out(self):
        """Dirtying faster than the link without auto-converge: failed at timeout_s, the
        source runs on, the destination drops its VM."""
        # A 16 MiB working set rewritten at full speed (~90 MiB/s nested) against 8 MiB/s
        # and 20 ms: a pass takes ~2 s, and the guest would have to stop dirtying for a
        # whole pass to leave the few pages that converge. (With 4 MiB and 50 ms a guest
        # that ran slow for half a second once converged; with a 32 MiB set at 2 MiB/s the
        # source guest has been seen to freeze in the nested KVM VM.) In the nested VM a
        # guest does stop now and then (docs/migration.md, Known problems): if it
        # converges all the same, the test finds out which it was. A destination that
        # holds a stale page would mean the dirty log missed writes, and a guest that
        # never stopped would mean the engine misjudged (both failures); a guest whose
        # workload saw a TSC gap of half a second or more during the migration (the
        # guest's largest gap, which the migration's own pause does not count: the TSC
        # stands still from save to restore) did stop: the scenario runs once more.
        for attempt in (1, 2):
            name = f'noconv{attempt}'
            path = self.start_guest(name, 'work=dirty mib=16 rate=0', passes=1)
            uri = self.unix_uri(name)
            dst_vm, dst_job = self.receive(name, uri)
            before = heartbeats(read_file(self.console(name)))[-1]
            t0 = time.monotonic()
            job_path = self.migrate(path, uri, max_bandwidth_mibps=8, max_downtime_ms=20,
                                    auto_converge=False, timeout_s=8)
            ok, ename, message = self.wait_job(self.src, job_path)
            if not ok:
                break
            wall_ms = (time.monotonic() - t0) * 1000
            self.check_heartbeats_across(name)  # no stale page on the destination
            hbs = heartbeats(read_file(self.console(name)) + read_file(self.dst_console(name)))
            gap_ms = max(h['maxgap_us'] for h in hbs) / 1000
            its = [(int(i[0]), int(i[2]), int(i[3])) for i in
                   self.src.job(job_path).GetIterations()]
            note = (f'attempt {attempt} converged without auto-converge in {wall_ms:.0f} ms; '
                    f'the guest\'s largest TSC gap: {gap_ms:.0f} ms, {before["maxgap_us"] / 1000:.0f} '
                    f'ms before the migration; passes (index, bytes, dirty pages after it): {its}')
            print(note, file=sys.stderr)
            self.assertGreaterEqual(gap_ms, 500, note)
            self.dst.vm(dst_vm).Stop()
        else:
            self.fail('converged twice without auto-converge, the guest stopping each time')
        p = self.check_failed_source(path, job_path, 'failed', 'MigrationFailed')
        self.assertIn('converge', p['ErrorMessage'])
        self.assertEqual(p['ThrottlePercent'], 0)
        self.assertEqual(p['MaxBandwidth'], 8 << 20)
        self.wait_job(self.dst, dst_job)
        self.check_dropped_destination(self.dst, dst_vm, dst_job)

    def test_06_auto_converge(self):
        """The same guest with auto-converge: the vCPU is throttled until it converges."""
        name = 'conv'
        path = self.start_guest(name, 'work=dirty mib=4 rate=0', passes=1)
        uri = self.unix_uri(name)
        dst_vm, dst_job = self.receive(name, uri)
        # The guest rewrites 4 MiB at ~90 MiB/s under nested KVM: far more than 8 MiB/s.
        # timeout_s: a throttle that does not work fails here, not at the test's timeout.
        job_path = self.migrate(path, uri, max_bandwidth_mibps=8, max_downtime_ms=300,
                                timeout_s=150)
        self.assertEqual(self.wait_job(self.src, job_path), (True, '', ''))
        p, its = self.check_source_job(job_path)
        throttles = [int(i[6]) for i in its]
        self.assertTrue(p['ThrottlePercent'] > 0 or max(throttles) > 0,
                        f'no throttling: {throttles}')
        seen = [c['ThrottlePercent'] for _, c in self.src.job_changes(job_path)
                if 'ThrottlePercent' in c]
        self.assertGreater(max(seen), 0)
        self.assertEqual(self.wait_job(self.dst, dst_job), (True, '', ''))
        self.check_heartbeats_across(name)

    def test_07_cancel_during_precopy(self):
        """vmmctl migrate --dispatch, Busy for a second Migrate, vmmctl job-cancel during
        precopy: cancelled, the source runs on."""
        name = 'cancel'
        path = self.start_guest(name, 'work=verify mib=128', passes=1)
        uri = self.unix_uri(name)
        dst_vm, dst_job = self.receive(name, uri)
        r = self.vmmctl('migrate', '--dispatch', '--bandwidth=16', name, uri)
        self.assertEqual(r.returncode, 0, r.stderr)
        job_path = r.stdout.strip()
        self.assertRegex(job_path, r'^/org/vmmd/VMM1/job/\d+$')
        self.assertDBusError(ERR + 'Busy', self.src.vm(path).Migrate, self.tcp_uri(), opts())
        self.assertDBusError(ERR + 'Busy', self.src.vm(path).Pause)
        self.wait_job_state(self.src, job_path,
                            lambda p: p['BytesProcessed'] > 8 << 20 or p['State'] != 'active'
                            and p['State'] != 'setup', 'precopy to send 8 MiB')
        p = self.src.job_props(job_path)
        self.assertEqual((p['State'], p['Phase']), ('active', 'precopy'))
        self.assertTrue(p['Cancelable'])
        self.assertGreater(p['BytesRemaining'], 0)
        self.assertTrue(p['ProgressValid'])
        self.assertGreater(p['Progress'], 0)
        self.assertLess(p['Progress'], 1)
        self.assertEqual(p['MaxBandwidth'], 16 << 20)
        # libvirt's calls change the running job's limits too.
        vm = self.src.vm(path)
        vm.MigrateSetMaxDowntime(dbus.UInt64(1234), dbus.UInt32(0))
        vm.MigrateSetMaxSpeed(dbus.UInt64(12), dbus.UInt32(0))
        self.wait_job_state(self.src, job_path,
                            lambda p: p['MaxDowntimeUSec'] == 1234000 and p['MaxBandwidth'] == 12 << 20,
                            'the new limits on the running job')
        self.assertEqual(vm.MigrateGetMaxDowntime(dbus.UInt32(0)), 1234)
        r = self.vmmctl('job-cancel', job_path.rsplit('/', 1)[1])
        self.assertEqual(r.returncode, 0, r.stderr)
        ok, ename, message = self.wait_job(self.src, job_path)
        self.assertEqual((ok, ename), (False, ERR + 'Cancelled'))
        self.check_failed_source(path, job_path, 'cancelled', 'Cancelled')
        self.wait_job(self.dst, dst_job)
        self.check_dropped_destination(self.dst, dst_vm, dst_job)

    def test_08_destination_killed(self):
        """The destination vmmd is killed (SIGKILL) mid-stream: failed, the source runs on."""
        victim, path, uri = self.start_victim('victim', 'work=verify mib=128')
        job_path = self.migrate(path, uri, max_bandwidth_mibps=16)
        self.wait_job_state(self.src, job_path, lambda p: p['BytesProcessed'] > 4 << 20 or
                            p['State'] not in ('setup', 'active'), 'precopy to send 4 MiB')
        self.assertEqual(self.src.job_props(job_path)['Phase'], 'precopy')
        victim.kill()
        ok, ename, message = self.wait_job(self.src, job_path)
        self.assertEqual((ok, ename), (False, ERR + 'MigrationFailed'))
        self.check_failed_source(path, job_path, 'failed', 'MigrationFailed')

    def test_10_destination_killed_during_state(self):
        """The destination vmmd is killed (SIGKILL) while the source sends the vCPU and
        device state, its guest paused, before the commit: failed, and the source guest
        resumes and runs on."""
        victim, path, uri = self.start_victim('victim2', 'work=verify mib=16')
        proxy_path = os.path.join(self.tmpdir, 'victim2-proxy.sock')
        proxy = StateKillingProxy(proxy_path, uri[5:], victim)
        proxy.start()
        job_path = self.migrate(path, 'unix:' + proxy_path)
        ok, ename, message = self.wait_job(self.src, job_path)
        proxy.join(60)
        self.assertTrue(proxy.killed, f'no STATE message came; passed on: {proxy.types}')
        self.assertIn(3, proxy.types)  # pages went through before the state
        self.assertEqual((ok, ename), (False, ERR + 'MigrationFailed'))
        self.assertTrue(message.startswith('switchover:'), message)
        self.check_failed_source(path, job_path, 'failed', 'MigrationFailed')

    def test_09_garbled_stream(self):
        """Junk on the destination's socket: its job fails with MigrationFailed and a
        message, its VM is stopped and stays readable."""
        name = 'garbled'
        uri = self.unix_uri(name)
        dst_vm, dst_job = self.receive(name, uri, timeout_s=60)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(uri[5:])
            s.sendall(b'GET / HTTP/1.1\r\nHost: vmmd\r\n\r\n' + bytes(range(256)) * 64)
            ok, ename, message = self.wait_job(self.dst, dst_job, 120)
        finally:
            s.close()
        self.assertEqual((ok, ename), (False, ERR + 'MigrationFailed'))
        self.assertIn('magic', message)  # "not a vmmd migration stream (bad magic)"
        p = self.check_dropped_destination(self.dst, dst_vm, dst_job)
        self.assertEqual(p['State'], 'failed')
        self.assertEqual(p['ErrorMessage'], message)
        self.assertEqual(str(self.dst.vm_props(dst_vm)['Job']), dst_job)
        stats = self.dst.job(dst_job).GetStats(dbus.UInt32(0))
        self.assertFalse(stats['success'])
        self.assertEqual(stats['operation'], 2)
        t, vstats = self.dst.vm(dst_vm).GetJobStats(dbus.UInt32(1 | 2))
        self.assertEqual(t, 4)
        print(f'# garbled stream: {message}', flush=True)
        self.dst.vm(dst_vm).Delete()


if __name__ == '__main__':
    main()
