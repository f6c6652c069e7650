#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Bus activation from the activation file, and exit on idle: vmmd started by the bus goes
away after --idle-timeout with no VM and no call, a VM keeps it, calls push the deadline
back, and the next call starts it again."""

import os
import re

from vmmd_test import VmmdTestCase, main, spin, vm_path, wait_until

IDLE = 2  # seconds


def alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().split(') ', 1)[1][0] != 'Z'
    except FileNotFoundError:
        return False


class ActivationTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.make_env(activation_args=[f'--idle-timeout={IDLE}'], start_daemon=False)

    def activate(self):
        self.manager().ListVMs()  # the call that starts it
        pid = self.bus.owner_pid()
        self.assertIsNotNone(pid)
        return pid

    def wait_gone(self, pid):
        wait_until(lambda: not self.bus.has_owner(), IDLE + 20, 'vmmd to exit when idle')
        wait_until(lambda: not alive(pid), 20, f'process {pid} to end')

    def test_1_activation(self):
        self.assertFalse(self.bus.has_owner())
        pid = self.activate()
        log = self.bus.read_log()
        self.assertIn("Activating service name='org.vmmd.VMM1'", log)
        self.assertIn("Successfully activated service 'org.vmmd.VMM1'", log)
        # The activation file's Exec= line is what runs.
        with open(f'/proc/{pid}/cmdline') as f:
            self.assertIn(f'--idle-timeout={IDLE}', f.read().replace('\0', ' '))
        self.wait_gone(pid)
        self.assertIn('exiting', self.bus.read_log())

    def test_2_reactivation(self):
        pid1 = self.activate()
        self.wait_gone(pid1)
        pid2 = self.activate()
        self.assertNotEqual(pid1, pid2)
        self.wait_gone(pid2)

    def test_3_vm_keeps_it(self):
        pid = self.activate()
        path = self.create('keeper')
        self.assertEqual(path, vm_path('keeper'))
        spin(IDLE * 2 + 1)
        self.assertEqual(self.bus.owner_pid(), pid)
        self.vm(path).Delete()
        self.wait_gone(pid)

    def test_4_calls_push_the_deadline(self):
        pid = self.activate()
        for _ in range(IDLE * 3):
            spin(IDLE / 2)
            self.manager().ListVMs()
            self.assertEqual(self.bus.owner_pid(), pid)
        self.wait_gone(pid)

    def test_5_exit_is_clean(self):
        pid = self.activate()
        self.wait_gone(pid)
        starts = len(re.findall(r'ready on the bus', self.bus.read_log()))
        exits = len(re.findall(r'vmmd exiting', self.bus.read_log()))
        self.assertEqual(starts, exits)
        vmmd_lines = [l for l in self.bus.read_log().splitlines() if l.startswith('vmmd:')]
        self.assertFalse([l for l in vmmd_lines if 'Failed' in l or 'failed' in l], vmmd_lines)


if __name__ == '__main__':
    main()
