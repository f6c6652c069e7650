#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Captures real migration streams for fuzz-incoming's seed corpus (corpus/incoming/).

A real vmmd (on a private bus, tests/dbus/vmmd_test.py) runs the test guest and migrates it
to itself through a relay that passes every connection on, message by message, and writes
what the source sent, the messages of all connections in the order they arrived (but the
data connections' FLUSHes just before the STATE), as one file, which fuzz-incoming routes
back to their connections. Then each stream is kept three ways,
to stay small: whole but with every PAGES message's data replaced by a ZERO marker of the
same pages ("-zeroed", complete up to COMMIT), and cut after its first 512 KiB
("-head").

Run from a build directory's environment, as meson test would:
  VMMD_BIN=$PWD/build/daemon/vmmd VMMCTL_BIN=$PWD/build/cli/vmmctl \\
  VMMD_TEST_BUS_CONF=$PWD/tests/dbus/system-bus.conf.in VMMD_BUS_POLICY=$PWD/units/org.vmmd.VMM1.conf \\
  VMMD_TEST_GUEST=$PWD/build/guest/vmmd-test-guest.elf \\
  /usr/bin/python3 tests/fuzz/capture-incoming.py tests/fuzz/corpus/incoming
"""

import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'dbus'))

import dbus  # noqa: E402

from vmmd_test import JOB_IFACE, VmmdTestCase, wait_until  # noqa: E402

HDR = struct.Struct('<IIQQ')
PAGES, ZERO = 3, 4
HEAD_BYTES = 512 * 1024


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            return None
        b += c
    return bytes(b)


class Relay:
    def __init__(self, listen, target, n):
        self.target = target
        self.n = n
        self.lock = threading.Lock()
        self.messages = []
        self.l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.l.bind(listen)
        self.l.listen(16)
        self.threads = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        for _ in range(self.n):
            a, _ = self.l.accept()
            b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            b.connect(self.target)
            t = threading.Thread(target=self.forward, args=(a, b), daemon=True)
            t.start()
            threading.Thread(target=self.back, args=(b, a), daemon=True).start()
            self.threads.append(t)

    def forward(self, a, b):
        while True:
            h = recv_exact(a, HDR.size)
            if h is None:
                break
            length = HDR.unpack(h)[1]
            p = recv_exact(a, length) if length else b''
            if p is None:
                break
            with self.lock:
                self.messages.append(h + p)
                b.sendall(h + p)
        b.shutdown(socket.SHUT_WR)

    def back(self, b, a):
        while True:
            d = b.recv(65536)
            if not d:
                break
            a.sendall(d)


FLUSH, STATE = 6, 7


def ordered(messages):
    """The data connections' FLUSHes (sent before the state, but on other sockets, so they
    may arrive after it) moved to just before the STATE, where the destination's
    COMPLETE waits for them."""
    flushes = [m for m in messages if HDR.unpack(m[:HDR.size])[0] == FLUSH]
    out = []
    for m in messages:
        t = HDR.unpack(m[:HDR.size])[0]
        if t == STATE:
            out += flushes
        if t != FLUSH:
            out.append(m)
    return out


def zeroed(messages):
    out = bytearray()
    for m in messages:
        t, length, a, b = HDR.unpack(m[:HDR.size])
        out += HDR.pack(ZERO, 0, a, b) if t == PAGES else m
    return bytes(out)


class Capture(VmmdTestCase):
    out = None

    def test_capture(self):
        self.make_env()
        try:
            for conns in (1, 2):
                self.capture(conns)
        finally:
            type(self).tearDownClass()

    def capture(self, conns):
        name = f'c{conns}'
        path = self.create(f'src{name}', memory_mib=16, cmdline='work=idle hb=100')
        self.vm(path).Start()
        time.sleep(1)
        real = os.path.join(self.tmpdir, f'{name}.real')
        relay = os.path.join(self.tmpdir, f'{name}.relay')
        _, djob = self.manager().ReceiveMigration(f'dst{name}', f'unix:{real}',
                                                  dbus.Dictionary({}, signature='sv'))
        r = Relay(relay, real, conns)
        job = self.vm(path).Migrate(f'unix:{relay}',
                                    dbus.Dictionary({'connections': dbus.UInt32(conns)},
                                                    signature='sv'))
        for j in (job, djob):
            jp = self.vm(str(j), 'org.freedesktop.DBus.Properties')
            wait_until(lambda: jp.Get(JOB_IFACE, 'State') in ('completed', 'failed'), 120, 'the job')
            assert str(jp.Get(JOB_IFACE, 'State')) == 'completed', jp.Get(JOB_IFACE, 'ErrorMessage')
        for t in r.threads:
            t.join(10)
        r.messages = ordered(r.messages)
        whole = b''.join(r.messages)
        print(f'{name}: {len(r.messages)} messages, {len(whole)} bytes', flush=True)
        with open(os.path.join(self.out, f'guest-16m-{conns}conn-zeroed'), 'wb') as f:
            f.write(zeroed(r.messages))
        with open(os.path.join(self.out, f'guest-16m-{conns}conn-head'), 'wb') as f:
            f.write(whole[:HEAD_BYTES])


if __name__ == '__main__':
    Capture.out = os.path.abspath(sys.argv.pop(1))
    os.makedirs(Capture.out, exist_ok=True)
    import unittest
    unittest.main(verbosity=2)
