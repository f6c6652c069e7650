#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Authorization: an unprivileged caller (uid nobody) is denied without polkit, denied by
the mocked polkit, allowed once the mock allows the action, and nothing changes while it is
denied. Reading stays open. The check is asynchronous (vmmd serves others while polkit
thinks) and passes on the allow-interactive-authorization flag. Needs root (setpriv)."""

import os
import subprocess
import time

import dbus

from vmmd_test import (BUS_NAME, ERR, MANAGER_IFACE, MANAGER_PATH, VM_IFACE, Polkit,
                       VmmdTestCase, as_user, die_with_parent, main, nobody, skip, vm_path,
                       wait_until)

MANAGE = 'org.vmmd.vmm1.manage'
MIGRATE = 'org.vmmd.vmm1.migrate'

if os.getuid() != 0:
    skip('needs root to run calls as uid nobody')
NOBODY = nobody()
if NOBODY is None:
    skip('no user nobody')


class PolkitTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.make_env()

    def call(self, path, iface, member, *args, user=NOBODY, interactive=False):
        return self.busctl(f'--allow-interactive-authorization={"yes" if interactive else "no"}',
                           'call', BUS_NAME, path, iface, member, *args, user=user)

    def create_as_nobody(self, name):
        return self.call(MANAGER_PATH, MANAGER_IFACE, 'CreateVM', 'ss', name, self.config(name))

    def vm_names(self):
        return [str(n) for n, _ in self.manager().ListVMs()]

    def test_1_without_polkit_only_root(self):
        r = self.create_as_nobody('early')
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('polkit is not available', r.stderr)
        self.assertNotIn('early', self.vm_names())
        # Root needs no polkit.
        self.create('rootvm')
        self.assertIn('rootvm', self.vm_names())
        # vmmctl shows the denial as one line.
        r = self.vmmctl('start', 'rootvm', user=NOBODY)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn(ERR + 'AccessDenied', r.stderr)

    def test_2_denied_by_polkit(self):
        type(self).polkit = Polkit(self.bus)
        if 'shared' not in self.vm_names():
            self.create('shared')
        path = vm_path('shared')

        r = self.create_as_nobody('mine')
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Not authorized to create VM 'mine'", r.stderr)
        self.assertIn(MANAGE, r.stderr)
        self.assertNotIn('mine', self.vm_names())

        for member in ('Start', 'Pause', 'Resume', 'Shutdown', 'Stop', 'Delete', 'OpenConsole',
                       'AbortJob'):
            r = self.call(path, VM_IFACE, member)
            self.assertNotEqual(r.returncode, 0, member)
            self.assertIn('Not authorized', r.stderr, member)
        r = self.call(path, VM_IFACE, 'MigrateSetMaxDowntime', 'tu', '1000', '0')
        self.assertIn(MIGRATE, r.stderr)
        self.assertIn('shared', self.vm_names())
        self.assertEqual(self.prop(path, 'State'), 'created')
        self.assertEqual(self.vm(path).MigrateGetMaxDowntime(dbus.UInt32(0)), 300)

        # Reading is open to everyone.
        r = self.call(MANAGER_PATH, MANAGER_IFACE, 'ListVMs')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('shared', r.stdout)
        r = self.busctl('get-property', BUS_NAME, path, VM_IFACE, 'State', user=NOBODY)
        self.assertEqual(r.stdout.strip(), 's "created"')
        r = self.call(path, VM_IFACE, 'GetJobStats', 'u', '0')
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.vmmctl('status', 'shared', user=NOBODY)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('State: created', r.stdout)

    def test_3_allowed_by_polkit(self):
        self.polkit.allow(MANAGE)
        r = self.create_as_nobody('mine')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(vm_path('mine'), r.stdout)
        r = self.vmmctl('pause', 'mine', user=NOBODY)  # authorized, then the state is wrong
        self.assertIn(ERR + 'InvalidState', r.stderr)

        # The migrate action is separate.
        path = vm_path('mine')
        r = self.call(path, VM_IFACE, 'MigrateSetMaxDowntime', 'tu', '1000', '0')
        self.assertIn('Not authorized', r.stderr)
        self.polkit.allow(MANAGE, MIGRATE)
        r = self.call(path, VM_IFACE, 'MigrateSetMaxDowntime', 'tu', '1000', '0')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.vm(path).MigrateGetMaxDowntime(dbus.UInt32(0)), 1000)

        r = self.call(path, VM_IFACE, 'Delete')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn('mine', self.vm_names())

        self.polkit.allow()
        r = self.create_as_nobody('again')
        self.assertIn('Not authorized', r.stderr)

    def test_4_asynchronous(self):
        self.polkit.allow(MANAGE)
        self.polkit.hang(True)
        try:
            cmd = ['busctl', f'--address={self.bus.address}', '--timeout=60',
                   '--allow-interactive-authorization=no', 'call', BUS_NAME, MANAGER_PATH,
                   MANAGER_IFACE, 'CreateVM', 'ss', 'slow', self.config('slow')]
            p = subprocess.Popen(as_user(cmd, NOBODY), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
            wait_until(self.polkit.have_hanging_calls, 30, 'the CheckAuthorization call')
            # vmmd answers others while polkit has not answered.
            t0 = time.monotonic()
            self.assertNotIn('slow', self.vm_names())
            self.assertLess(time.monotonic() - t0, 5)
            self.assertIsNone(p.poll())
            self.polkit.release()
            out, err = p.communicate(timeout=30)
            self.assertEqual(p.returncode, 0, err)
            self.assertIn('slow', self.vm_names())
        finally:
            self.polkit.hang(False)
            self.polkit.allow()

    def test_5_interactive_flag(self):
        log = os.path.join(self.tmpdir, 'monitor.txt')

        def read_log():
            with open(log) as f:
                return f.read()

        with open(log, 'w') as f:
            mon = subprocess.Popen(['dbus-monitor', '--address', self.bus.address,
                                    "type='method_call',member='CheckAuthorization'"],
                                   stdout=f, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            wait_until(lambda: 'NameAcquired' in read_log(), 30, 'dbus-monitor')
            self.create_as_nobody('flag0')
            self.call(MANAGER_PATH, MANAGER_IFACE, 'CreateVM', 'ss', 'flag1',
                      self.config('flag1'), interactive=True)
            wait_until(lambda: read_log().count('member=CheckAuthorization') >= 2, 30,
                       'two CheckAuthorization calls')
        finally:
            mon.terminate()
            mon.wait()
        calls = read_log().split('member=CheckAuthorization')[1:]
        # Arguments: subject, action, details, flags (uint32), cancellation id.
        flags = []
        for c in calls[:2]:
            self.assertIn('system-bus-name', c)
            self.assertIn(MANAGE, c)
            self.assertIn('"verb"', c)
            uints = [line.split()[1] for line in c.splitlines() if line.strip().startswith('uint32')]
            flags.append(uints[-1])
        self.assertEqual(flags, ['0', '1'])


if __name__ == '__main__':
    main()
