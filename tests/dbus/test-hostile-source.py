#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A hostile migration source against a real vmmd on a private bus: raw sockets speaking the
real wire format (docs/migration.md) to ReceiveMigration's listener. Garbage, every message
type in every receive state it is not valid in, truncated and oversized messages, pages
outside RAM, wrong connection counts, a peer that trickles a byte a second, one that never
speaks, one that vanishes in every state, an untrusted config that names files. After each:
the job failed with a message saying what came in which state, no VM runs, the daemon still
serves, and its open fds and threads are back to where they were (its RSS is checked over
the whole run).

The cases past the HELLO build a VM (KVM, no guest is ever run): they need /dev/kvm and are
skipped without it. The 'ready' state (reached only with a state this host can restore)
is covered by tests/fuzz/fuzz-incoming.c, whose corpus holds real captured streams."""

import json
import os
import socket
import struct
import threading
import time
import warnings

import dbus

from vmmd_test import (ERR, JOB_IFACE, VmmdTestCase, have_kvm, main, spin, wait_until)

HDR = struct.Struct('<IIQQ')
MAGIC = 0x31474d49444d4d56
VERSION = 2
(HELLO, HELLO_ACK, PAGES, ZERO, ITER_END, FLUSH, STATE, COMPLETE, READY, COMMIT, ACK, ERROR,
 RAM_MAP, STATE_TRIAL, TRIAL_DONE) = range(1, 16)
NAMES = {v: k for k, v in dict(HELLO=1, HELLO_ACK=2, PAGES=3, ZERO=4, ITER_END=5, FLUSH=6,
                               STATE=7, COMPLETE=8, READY=9, COMMIT=10, ACK=11, ERROR=12,
                               RAM_MAP=13, STATE_TRIAL=14, TRIAL_DONE=15).items()}
MEM_MIB = 16
RAM = MEM_MIB << 20
CHUNKS = RAM >> 21
TIMEOUT_S = 3
RSS_SLACK_KIB = 8 * 1024


def hdr(t, length=0, a=0, b=0):
    return HDR.pack(t, length, a, b)


def msg(t, payload=b'', a=0, b=0):
    return hdr(t, len(payload), a, b) + payload


def hello(config, idx=0, n=1, ram=RAM, version=VERSION):
    body = struct.pack('<Q', ram) + config.encode()
    return msg(HELLO, body, MAGIC, version | idx << 32 | n << 48)


def well_formed(t):
    """A message of type t whose length matches its type (for a 16 MiB guest)."""
    if t == HELLO:
        return hello('{"memory_mib": 16, "kernel": "/nonexistent"}')
    if t == PAGES:
        return msg(PAGES, b'\x11' * 4096, 0x2000, 1)
    if t == ZERO:
        return msg(ZERO, b'', 0x3000, 2)
    if t == RAM_MAP:
        return msg(RAM_MAP, b'\xff', 21, CHUNKS)
    if t in (STATE, STATE_TRIAL):
        return msg(t, os.urandom(256))
    if t == ERROR:
        return msg(ERROR, b'hostile', 5)
    return msg(t)


# Which types are valid in each receive state we can reach with made-up data (the table in
# docs/migration.md); everything else must be refused there. ERROR is valid everywhere
# before the commit (it fails the job as "the source aborted").
VALID = {
    'setup': {PAGES, ZERO, RAM_MAP, STATE_TRIAL, ERROR},
    'precopy': {PAGES, ZERO, ITER_END, STATE, ERROR},
    'state-received': {COMPLETE, ERROR},
    'ready': {COMMIT, ERROR},
}


def proc_counts(pid):
    fds = len(os.listdir(f'/proc/{pid}/fd'))
    threads = len(os.listdir(f'/proc/{pid}/task'))
    rss = 0
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                rss = int(line.split()[1])
    return fds, threads, rss


class Peer:
    """A raw connection to the listener."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(30)
        self.s.connect(path)

    def send(self, data):
        try:
            self.s.sendall(data)
            return True
        except OSError:
            return False  # the destination already gave up on us

    def recv_msg(self):
        try:
            return self._recv_msg()
        except OSError:
            return None

    def _recv_msg(self):
        b = b''
        while len(b) < HDR.size:
            c = self.s.recv(HDR.size - len(b))
            if not c:
                return None
            b += c
        t, length, a, bb = HDR.unpack(b)
        payload = b''
        while len(payload) < length:
            c = self.s.recv(length - len(payload))
            if not c:
                break
            payload += c
        return t, a, bb, payload

    def close(self):
        self.s.close()


class HostileSourceTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        warnings.simplefilter('ignore', ResourceWarning)  # peers the daemon hung up on
        cls.make_env()
        cls.pid = cls.daemon.proc.pid
        cls.n = 0
        cls.rss_start = None
        cls.settled = None  # fds, threads after the first case
        cls.messages = []

    @classmethod
    def tearDownClass(cls):
        for m in cls.messages:
            print(f'# {m}', flush=True)
        super().tearDownClass()

    def setUp(self):
        if not have_kvm() and self._testMethodName not in self.NO_KVM:
            self.skipTest('needs /dev/kvm (the destination builds its VM)')

    NO_KVM = {'test_01_garbage', 'test_02_bad_hellos', 'test_03_never_speaks',
              'test_04_trickle', 'test_05_vanish_before_hello', 'test_06_listen_path'}

    def config_json(self, **over):
        c = {'vcpus': 1, 'memory_mib': MEM_MIB, 'kernel': '/nonexistent/kernel', 'cmdline': ''}
        c.update(over)
        return json.dumps(c)

    # --- the harness ---

    def attack(self, script, expect, options=None, check_vm=None):
        """ReceiveMigration, then script(path) plays the source; the job must fail with a
        message matching 'expect' (a substring, or a tuple of them), no VM may run, and the
        daemon's fds and threads must be as before."""
        type(self).n += 1
        name = f'h{self.n}'
        path = os.path.join(self.tmpdir, f'{name}.sock')
        before = proc_counts(self.pid)
        if self.rss_start is None:
            type(self).rss_start = before[2]
        o = {'timeout_s': dbus.UInt64(TIMEOUT_S)}
        o.update(options or {})
        vm, job = self.manager().ReceiveMigration(name, f'unix:{path}',
                                                  dbus.Dictionary(o, signature='sv'))
        try:
            script(path)
            jobp = self.vm(str(job), 'org.freedesktop.DBus.Properties')
            wait_until(lambda: jobp.Get(JOB_IFACE, 'State') in ('failed', 'completed', 'cancelled'),
                       TIMEOUT_S * 4 + 20, f'job {job} to end')
            state = str(jobp.Get(JOB_IFACE, 'State'))
            message = str(jobp.Get(JOB_IFACE, 'ErrorMessage'))
            self.messages.append(f'{name}: {message}')
            self.assertEqual(state, 'failed', message)
            self.assertEqual(str(jobp.Get(JOB_IFACE, 'ErrorName')), ERR + 'MigrationFailed')
            for e in (expect if isinstance(expect, tuple) else (expect,)):
                self.assertIn(e, message)
            self.assertNotEqual(str(self.prop(str(vm), 'State')), 'running')
            if check_vm:
                check_vm(str(vm))
        finally:
            wait_until(lambda: str(self.prop(str(vm), 'State')) != 'incoming', 20, 'the VM to stop')
            self.vm(str(vm)).Delete()
        self.assertServing()
        self.assertFalse(os.path.exists(path), 'the listener socket was left behind')
        # The job thread and everything it started are gone, every fd is closed. (Not more
        # than before: the daemon's very first minutes may still close an fd of its own.)
        def back():
            now = proc_counts(self.pid)
            return now[0] <= before[0] and now[1] <= before[1]
        wait_until(back, 10, f'fds/threads back to {before[:2]} (now {proc_counts(self.pid)[:2]})')
        if self.settled is None:
            type(self).settled = proc_counts(self.pid)[:2]
        return message

    def to_setup(self, path, n=1):
        """Connects, sends a valid HELLO and waits for HELLO_ACK: receive state 'setup'."""
        p = Peer(path)
        p.send(hello(self.config_json(), 0, n))
        peers = [p]
        for i in range(1, n):
            q = Peer(path)
            q.send(hello('', i, n))
            peers.append(q)
        m = p.recv_msg()
        self.assertIsNotNone(m)
        self.assertEqual(m[0], HELLO_ACK, m)
        return peers

    def to_state(self, path, state):
        peers = self.to_setup(path)
        p = peers[0]
        if state in ('precopy', 'state-received'):
            p.send(well_formed(RAM_MAP))
        if state == 'state-received':
            p.send(well_formed(STATE))
        return p

    # --- no VM is built ---

    def test_01_garbage(self):
        def script(path):
            p = Peer(path)
            p.send(os.urandom(4096))
            p.recv_msg()
            p.close()
        self.attack(script, 'not a vmmd migration stream')

        def http(path):
            p = Peer(path)
            p.send(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
            p.recv_msg()
        self.attack(http, 'bad magic')

    def test_02_bad_hellos(self):
        cfg = self.config_json()
        cases = [
            (hello(cfg, version=1), 'unsupported migration stream version 1'),
            (hello(cfg, version=99), 'unsupported migration stream version 99'),
            (hello(cfg, idx=1, n=2), 'bad connection index 1 of 2'),
            (hello(cfg, n=17), 'bad connection index 0 of 17'),
            (hello(cfg, n=0), 'bad connection index 0 of 0'),
            (hdr(HELLO, 8 + 65537, MAGIC, VERSION | 1 << 48), 'malformed HELLO'),
            (hdr(HELLO, 4, MAGIC, VERSION | 1 << 48) + b'\0' * 4, 'malformed HELLO'),
            (hello(cfg, ram=RAM + 4096), 'RAM size'),
            (hello(cfg, ram=1 << 60), 'RAM size'),
            (hello('{"memory_mib": 16, "kernel": "/x"}\0junk'), 'NUL byte'),
            (hello('{"memory_mib": 16'), 'not valid: config: malformed JSON'),
            (hello(self.config_json(memory_mib=1 << 20), ram=1 << 40), 'more than the host has'),
            (hello(self.config_json(memory_mib=32)), 'does not match memory_mib'),
            (hello(self.config_json(vcpus=65)), 'vcpus'),
            (hello(self.config_json(extra=1)), 'extra: unknown key'),
            (hello(self.config_json(kernel='relative')), 'kernel: must be an absolute path'),
            (well_formed(COMMIT), 'bad magic'),
        ]
        for data, expect in cases:
            def script(path, data=data):
                p = Peer(path)
                p.send(data)
                p.recv_msg()
                p.close()
            with self.subTest(expect=expect):
                self.attack(script, expect)

    def test_03_never_speaks(self):
        held = []

        def script(path):
            held.append(Peer(path))  # connects and says nothing
        t0 = time.monotonic()
        self.attack(script, 'timed out')
        self.assertGreaterEqual(time.monotonic() - t0, TIMEOUT_S - 0.5)
        held[0].close()

        # Nobody connects at all: bounded by timeout_s too.
        self.attack(lambda path: None, f'no source connected within timeout_s={TIMEOUT_S}')

    def test_04_trickle(self):
        """One byte a second: the whole message must arrive within timeout_s."""
        data = hello(self.config_json())
        stop = threading.Event()

        def script(path):
            p = Peer(path)

            def drip():
                for b in data:
                    if stop.wait(1) or not p.send(bytes([b])):
                        break
                p.close()
            threading.Thread(target=drip, daemon=True).start()
        self.attack(script, 'timed out')
        stop.set()

    def test_05_vanish_before_hello(self):
        def gone(path):
            Peer(path).close()
        self.attack(gone, 'closed the connection', )

        def half_header(path):
            p = Peer(path)
            p.send(hello(self.config_json())[:10])
            p.close()
        self.attack(half_header, 'closed the connection')

        def half_payload(path):
            p = Peer(path)
            p.send(hello(self.config_json())[:40])
            p.close()
        self.attack(half_payload, 'closed the connection')

    def test_06_listen_path(self):
        """A unix: path that exists is never removed (but for a stale socket of ours)."""
        victim = os.path.join(self.tmpdir, 'precious')
        with open(victim, 'w') as f:
            f.write('keep me')
        m = self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', self.manager().ReceiveMigration,
                                 'lp', f'unix:{victim}', dbus.Dictionary({}, signature='sv'))
        self.assertIn('not a stale socket', m)
        with open(victim) as f:
            self.assertEqual(f.read(), 'keep me')
        # A live socket somebody else listens on is not taken over.
        live = os.path.join(self.tmpdir, 'live.sock')
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(live)
        s.listen(1)
        m = self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', self.manager().ReceiveMigration,
                                 'lp', f'unix:{live}', dbus.Dictionary({}, signature='sv'))
        self.assertIn('another process listens there', m)
        s.close()
        # Now stale (nobody listens): ours (same uid), so it is replaced.
        vm, job = self.manager().ReceiveMigration('lp', f'unix:{live}',
                                                  dbus.Dictionary({'timeout_s': dbus.UInt64(1)},
                                                                  signature='sv'))
        jobp = self.vm(str(job), 'org.freedesktop.DBus.Properties')
        wait_until(lambda: jobp.Get(JOB_IFACE, 'State') == 'failed', 20, 'the job to time out')
        self.assertFalse(os.path.exists(live))
        self.vm(str(vm)).Delete()
        self.assertServing()

    # --- a VM is built ---

    def test_10_every_type_in_every_wrong_state(self):
        for state, valid in VALID.items():
            if state == 'ready':
                continue  # needs a real state: test_20
            for t in range(1, 16):
                if t in valid:
                    continue

                def script(path, t=t, state=state):
                    p = self.to_state(path, state)
                    p.send(well_formed(t))
                    p.recv_msg()
                    p.close()
                with self.subTest(state=state, type=NAMES[t]):
                    m = self.attack(script, (NAMES[t], f'receive state {state}'))
                    if t == COMMIT:
                        self.assertIn('COMMIT before the state was restored', m)
        # An unknown type, and the source's ERROR (valid: it aborts).
        for state in ('setup', 'precopy', 'state-received'):
            def unknown(path, state=state):
                p = self.to_state(path, state)
                p.send(hdr(99))
                p.recv_msg()
            self.attack(unknown, ('unknown message type 99', f'receive state {state}'))

            def aborts(path, state=state):
                p = self.to_state(path, state)
                p.send(msg(ERROR, b'bye\x1b[31m', 5))
                p.recv_msg()
            self.attack(aborts, 'the source aborted: bye?[31m')

    def test_11_malformed_and_out_of_range(self):
        cases = [
            (msg(PAGES, b'\0' * 4096, RAM, 1), 'malformed PAGES'),            # past the end
            (msg(PAGES, b'\0' * 8192, RAM - 4096, 2), 'malformed PAGES'),     # straddles it
            (msg(PAGES, b'\0' * 4096, 0x123, 1), 'malformed PAGES'),          # not aligned
            (hdr(PAGES, 4096, 0, 2) + b'\0' * 4096, 'malformed PAGES'),        # length != pages
            (hdr(PAGES, 257 * 4096, 0, 257), 'malformed PAGES'),               # oversized
            (hdr(PAGES, 0, 0, 0), 'malformed PAGES'),
            (msg(ZERO, b'', RAM - 4096, 2), 'malformed ZERO'),
            (msg(ZERO, b'', (1 << 64) - 4096, 1), 'malformed ZERO'),
            (msg(ZERO, b'x', 0, 1), 'malformed ZERO'),
            (msg(RAM_MAP, b'\xff\xff', 21, CHUNKS), 'malformed RAM_MAP'),
            (msg(RAM_MAP, b'\xff', 20, CHUNKS * 2), 'malformed RAM_MAP'),
            (msg(RAM_MAP, b'\xff', 21, CHUNKS + 1), 'malformed RAM_MAP'),
            (hdr(STATE_TRIAL, 16 * 1024 * 1024 + 1), 'malformed STATE_TRIAL'),
            (hdr(STATE_TRIAL, 0), 'malformed STATE_TRIAL'),
            (hdr(ERROR, 4096), 'malformed ERROR'),
            (msg(STATE_TRIAL, os.urandom(300)), 'rejected in the rehearsal'),
        ]
        for data, expect in cases:
            def script(path, data=data):
                p = self.to_setup(path)[0]
                p.send(data)
                p.recv_msg()
            with self.subTest(expect=expect):
                self.attack(script, expect)

        def precopy(path, data):
            p = self.to_state(path, 'precopy')
            p.send(data)
            p.recv_msg()
        self.attack(lambda p: precopy(p, hdr(STATE, 16 * 1024 * 1024 + 1)), 'malformed STATE')
        self.attack(lambda p: precopy(p, msg(ITER_END, a=3)), 'ITER_END of pass 3 where pass 0 was due')
        self.attack(lambda p: precopy(p, hdr(COMMIT, 4) + b'abcd'), 'COMMIT before the state was restored')

        def bad_state(path):
            p = self.to_state(path, 'state-received')
            p.send(msg(COMPLETE))
            p.recv_msg()
        self.attack(bad_state, 'the vCPU/device state was rejected')

    def test_12_connection_counts(self):
        def missing(path):
            p = Peer(path)
            p.send(hello(self.config_json(), 0, 2))
            p.recv_msg()
        self.attack(missing, 'timed out waiting for data connection 1 of 2')

        def cases(n, second):
            def script(path):
                p = Peer(path)
                p.send(hello(self.config_json(), 0, n))
                q = Peer(path)
                q.send(second)
                q.recv_msg()
            return script
        self.attack(cases(2, hello('', 1, 3)), 'does not belong to this migration')
        self.attack(cases(2, hello('', 0, 2)), 'does not belong to this migration')
        self.attack(cases(2, hello('', 1, 2, ram=RAM * 2)), 'does not belong to this migration')
        self.attack(cases(2, hdr(HELLO, 8 + 5, MAGIC, VERSION | 1 << 32 | 2 << 48) + b'\0' * 13),
                    'malformed HELLO')
        self.attack(cases(2, well_formed(PAGES)), 'before its HELLO')

        def twice(path):
            p = Peer(path)
            p.send(hello(self.config_json(), 0, 3))
            for _ in range(2):
                q = Peer(path)
                q.send(hello('', 1, 3))
            p.recv_msg()
        self.attack(twice, 'that index is taken')

        def extra(path):
            p = self.to_setup(path)[0]
            # Every connection is in: the listener is gone.
            with self.assertRaises(OSError):
                Peer(path)
            p.close()
        self.attack(extra, 'closed the connection')

        def data_conn_wrong(path):
            peers = self.to_setup(path, 2)
            peers[1].send(well_formed(COMMIT))
            peers[0].recv_msg()
        self.attack(data_conn_wrong, 'COMMIT on data connection 1')

        def after_flush(path):
            peers = self.to_setup(path, 2)
            peers[1].send(msg(FLUSH) + well_formed(PAGES))
            peers[0].send(well_formed(RAM_MAP) + well_formed(STATE) + msg(COMPLETE))
            peers[0].recv_msg()
        self.attack(after_flush, 'the vCPU/device state was rejected')

        def no_flush(path):
            peers = self.to_setup(path, 2)
            peers[0].send(well_formed(RAM_MAP) + well_formed(STATE) + msg(COMPLETE))
            time.sleep(0.5)
            peers[1].close()
            peers[0].recv_msg()
        self.attack(no_flush, 'data connection 1')

        def data_pages_oob(path):
            peers = self.to_setup(path, 2)
            peers[1].send(msg(PAGES, b'\0' * 4096, RAM, 1))
            peers[0].recv_msg()
        self.attack(data_pages_oob, 'malformed PAGES message on connection 1')

    def test_13_vanish_in_every_state(self):
        for state in ('setup', 'precopy', 'state-received'):
            def script(path, state=state):
                self.to_state(path, state).close()
            with self.subTest(state=state):
                self.attack(script, ('closed the connection', f'receive state {state}'))

        def mid_pages(path):
            p = self.to_state(path, 'precopy')
            p.send(hdr(PAGES, 4096 * 4, 0, 4) + b'\0' * 5000)
            p.close()
        self.attack(mid_pages, 'closed the connection')

        def data_conn_gone(path):
            peers = self.to_setup(path, 2)
            peers[1].close()
            peers[0].recv_msg()
        self.attack(data_conn_gone, 'data connection 1: the source closed it before FLUSH')

        def stalls_in_precopy(path):
            p = self.to_state(path, 'precopy')
            time.sleep(TIMEOUT_S + 1)
            p.close()
        self.attack(stalls_in_precopy, 'timed out')

    def test_14_untrusted_config(self):
        """The source's file console and kernel are never opened here; its console is a pty
        unless our own config option gives a file."""
        planted = os.path.join(self.tmpdir, 'planted.console')
        link = os.path.join(self.tmpdir, 'link.console')
        os.symlink(os.path.join(self.tmpdir, 'symlink-target'), link)
        cfg = self.config_json(serial={'mode': 'file', 'path': planted},
                               kernel=os.path.join(self.tmpdir, 'fifo'))
        os.mkfifo(os.path.join(self.tmpdir, 'fifo'))  # opening it would block

        def script(path):
            p = Peer(path)
            p.send(hello(cfg))
            self.assertEqual(p.recv_msg()[0], HELLO_ACK)
            p.close()

        def check(vm):
            self.assertFalse(os.path.exists(planted))
            self.assertTrue(str(self.prop(vm, 'ConsolePath')).startswith('/dev/pts/')
                            or str(self.prop(vm, 'ConsolePath')) == '',
                            self.prop(vm, 'ConsolePath'))
            self.assertNotIn(planted, str(self.prop(vm, 'Config')))
        self.attack(script, 'closed the connection', check_vm=check)

        # Our own file console through a symlink: refused (O_NOFOLLOW), nothing created.
        own = json.dumps({'serial': {'mode': 'file', 'path': link}})

        def script2(path):
            p = Peer(path)
            p.send(hello(cfg))
            p.recv_msg()
        self.attack(script2, 'cannot create the VM', options={'config': dbus.String(own)})
        self.assertFalse(os.path.exists(os.path.join(self.tmpdir, 'symlink-target')))

    def test_99_rss(self):
        """After all of the above, the daemon's RSS is where it started (give or take the
        allocator's caches)."""
        if self.rss_start is None:
            self.skipTest('no case ran')
        fds, threads, rss = proc_counts(self.pid)
        print(f'# RSS: {self.rss_start} KiB before the first case, {rss} KiB after {self.n} cases; '
              f'fds/threads {self.settled} after the first case, {(fds, threads)} now', flush=True)
        self.assertEqual((fds, threads), self.settled)
        with open(os.environ['VMMD_BIN'], 'rb') as f:
            if b'__asan_init' in f.read():
                self.skipTest('vmmd runs under AddressSanitizer, whose quarantine holds freed memory')
        self.assertLess(rss - self.rss_start, RSS_SLACK_KIB)


if __name__ == '__main__':
    main()
