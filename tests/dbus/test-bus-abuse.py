#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The bus side under abuse, no guest needed (a ReceiveMigration job that waits for its
source is the job): Wait() calls are capped per caller and per job, and those of a caller
that leaves the bus are dropped (so the cap frees up); calls held for polkit are capped
per caller; taking the last job's statistics (GetJobStats flag 1 without 2) needs
authorization while reading them does not. Needs root (setpriv for uid nobody)."""

import os
import subprocess
import sys

import dbus

from vmmd_test import (BUS_NAME, ERR, JOB_IFACE, VM_IFACE, Polkit, VmmdTestCase, as_user, main,
                       nobody, skip, spin, wait_until)

if os.getuid() != 0:
    skip('needs root to run calls as uid nobody')
NOBODY = nobody()
if NOBODY is None:
    skip('no user nobody')

PER_CALLER = 16
PER_JOB = 256
PROPS = 'org.freedesktop.DBus.Properties'


class BusAbuseTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.make_env(with_polkit=True)

    def receive(self, name):
        vm, job = self.manager().ReceiveMigration(
            name, f'unix:{os.path.join(self.tmpdir, name + ".sock")}',
            dbus.Dictionary({'timeout_s': dbus.UInt64(0)}, signature='sv'))
        return str(vm), str(job)

    def waits(self, conn, job, n):
        """n async Wait() calls on 'conn': [(reply or None, error name or None)] filled in
        as they come."""
        out = []
        obj = conn.get_object(BUS_NAME, job, introspect=False)
        for _ in range(n):
            slot = [None, None]
            out.append(slot)
            obj.Wait(dbus_interface=JOB_IFACE, timeout=600,
                     reply_handler=lambda *a, s=slot: s.__setitem__(0, a),
                     error_handler=lambda e, s=slot: s.__setitem__(1, e.get_dbus_name()))
        return out

    def test_1_wait_caps_and_disconnects(self):
        vm, job = self.receive('w')
        conns = [dbus.bus.BusConnection(self.bus.address) for _ in range(PER_JOB // PER_CALLER)]
        slots = [self.waits(c, job, PER_CALLER + 1) for c in conns]
        wait_until(lambda: all(s[-1][1] for s in slots), 30, 'the 17th Wait() of each caller refused')
        for s in slots:
            self.assertEqual(s[-1][1], ERR + 'LimitExceeded')
            self.assertTrue(all(x == [None, None] for x in s[:-1]), 'the first 16 are held')
        # The job holds its maximum: a new caller is refused too.
        extra = dbus.bus.BusConnection(self.bus.address)
        e = self.waits(extra, job, 1)
        wait_until(lambda: e[0][1], 30, 'a Wait() over the job\'s maximum refused')
        self.assertEqual(e[0][1], ERR + 'LimitExceeded')
        # The callers leave: their calls are dropped, so there is room again.
        for c in conns:
            c.close()
        kept = self.waits(extra, job, PER_CALLER)
        spin(1)
        self.assertTrue(all(x == [None, None] for x in kept), kept)
        # The job ends: the held calls are answered.
        self.vm(job, JOB_IFACE).Cancel()
        wait_until(lambda: all(x[0] for x in kept), 30, 'the held Wait() calls answered')
        self.assertEqual(str(kept[0][0][1]), ERR + 'Cancelled')
        extra.close()
        self.vm(vm).Delete()
        self.assertServing()

    def test_2_job_stats_take_needs_authorization(self):
        vm, job = self.receive('s')
        self.vm(job, JOB_IFACE).Cancel()
        wait_until(lambda: self.vm(job, PROPS).Get(JOB_IFACE, 'State') == 'cancelled', 30, 'cancelled')
        path = vm

        def as_nobody(flags):
            return self.busctl('call', BUS_NAME, path, VM_IFACE, 'GetJobStats', 'u', str(flags),
                               user=NOBODY)
        # Reading (keep) is open; taking is denied by polkit, and takes nothing.
        r = as_nobody(3)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith('ia{sv} 5 '), r.stdout)
        r = as_nobody(1)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('Not authorized to get-job-stats', r.stderr + r.stdout)
        r = as_nobody(3)
        self.assertTrue(r.stdout.startswith('ia{sv} 5 '), r.stdout)
        # Allowed: taken once.
        self.polkit.allow('org.vmmd.vmm1.migrate')
        r = as_nobody(1)
        self.assertTrue(r.stdout.startswith('ia{sv} 5 '), r.stdout + r.stderr)
        r = as_nobody(3)
        self.assertTrue(r.stdout.startswith('ia{sv} 0 '), r.stdout)
        self.polkit.allow()
        self.vm(vm).Delete()

    def test_3_polkit_calls_capped_per_caller(self):
        vm, job = self.receive('p')
        self.polkit.hang(True)
        # One caller (uid nobody) sends 20 AbortJob() calls at once while polkit hangs.
        script = f'''
import dbus, sys
from gi.repository import GLib
import dbus.mainloop.glib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
c = dbus.bus.BusConnection({self.bus.address!r})
o = c.get_object({BUS_NAME!r}, {vm!r}, introspect=False)
errs = []
for i in range(20):
    o.AbortJob(dbus_interface={VM_IFACE!r}, timeout=30, reply_handler=lambda: errs.append('ok'),
               error_handler=lambda e: errs.append(e.get_dbus_name()))
loop = GLib.MainLoop()
GLib.timeout_add(3000, loop.quit)
loop.run()
print(' '.join(errs), flush=True)
'''
        r = subprocess.run(as_user([sys.executable, '-c', script], NOBODY), capture_output=True,
                           text=True, timeout=60)
        refused = r.stdout.split()
        self.assertEqual(refused.count(ERR + 'LimitExceeded'), 20 - PER_CALLER, r.stdout + r.stderr)
        self.polkit.release()
        self.polkit.hang(False)
        self.assertServing()
        self.vm(job, JOB_IFACE).Cancel()
        wait_until(lambda: self.vm(job, PROPS).Get(JOB_IFACE, 'State') == 'cancelled', 30, 'cancelled')
        self.vm(vm).Delete()


if __name__ == '__main__':
    main()
