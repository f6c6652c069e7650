#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Guests that run: create -> start -> pause -> resume -> shutdown/stop -> delete with the
State property and PropertiesChanged observed, OpenConsole reading the test guest's
heartbeat (file and pty consoles), vmmctl driving a VM, and SIGTERM shutting running guests
down. Needs /dev/kvm (exits 77 without it)."""

import os
import re
import select
import subprocess


from vmmd_test import (ERR, PROPS_IFACE, VM_IFACE, VmmdTestCase, die_with_parent, env_path,
                       have_kvm, main, skip, spin, unit_commands, vm_path, wait_until)

if not have_kvm():
    skip('no usable /dev/kvm: guests cannot run here (tests/nested/run-in-vm.sh runs them)')
if not os.environ.get('VMMD_TEST_GUEST'):
    skip('$VMMD_TEST_GUEST (the test guest ELF) not set')

BOOT_TIMEOUT = 120  # the guest's ring 0 is emulated on kvm_pvm hosts: boot is slow
HB = re.compile(rb'HB seq=(\d+)')


class LifecycleTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.make_env(daemon_args=['--shutdown-timeout=30'])
        cls.changes = []
        cls.bus.conn.add_signal_receiver(
            lambda iface, changed, invalidated, path=None:
                cls.changes.append((str(path), str(iface), dict(changed))),
            signal_name='PropertiesChanged', dbus_interface=PROPS_IFACE, path_keyword='path')

    def seen_states(self, path):
        return [str(c['State']) for p, i, c in self.changes if p == path and i == VM_IFACE
                and 'State' in c]

    def wait_state(self, path, state, timeout=BOOT_TIMEOUT):
        wait_until(lambda: self.seen_states(path)[-1:] == [state], timeout,
                   f'PropertiesChanged State={state} (seen {self.seen_states(path)})')
        self.assertEqual(self.prop(path, 'State'), state)

    def read_until(self, fd, pattern, timeout=BOOT_TIMEOUT, after=-1):
        """Reads the console fd until a heartbeat with seq > 'after'; returns that seq."""
        buf = b''
        deadline_spins = int(timeout / 0.1)
        for _ in range(deadline_spins):
            r, _, _ = select.select([fd], [], [], 0.1)
            data = os.read(fd, 65536) if r else b''
            buf += data
            seqs = [int(m) for m in pattern.findall(buf)]
            if seqs and max(seqs) > after:
                return max(seqs)
            if not data:
                spin(0.1)  # a regular file is always "readable": wait for it to grow
        self.fail(f'no heartbeat after seq {after} in {timeout} s; console: {buf[-500:]!r}')

    def test_1_lifecycle(self):
        path = self.create('life')
        vm = self.vm(path)
        vm.Start()
        self.wait_state(path, 'running')
        fd = vm.OpenConsole().take()
        try:
            seq = self.read_until(fd, HB)

            for wrong in ('Start', 'Resume', 'Delete'):
                self.assertDBusError(ERR + 'InvalidState', getattr(vm, wrong))

            vm.Pause()
            self.wait_state(path, 'paused', 30)
            self.assertDBusError(ERR + 'InvalidState', vm.Pause)
            vm.Resume()
            self.wait_state(path, 'running', 30)
            seq = self.read_until(fd, HB, after=seq)

            vm.Shutdown()  # the guest sees the power button and powers off
            self.wait_state(path, 'stopped')
            with open(os.path.join(self.tmpdir, 'life.console'), 'rb') as f:
                self.assertIn(b'POWEROFF', f.read())
        finally:
            os.close(fd)

        vm.Start()
        self.wait_state(path, 'running')
        vm.Stop()
        self.wait_state(path, 'stopped', 30)
        self.assertEqual(self.seen_states(path),
                         ['running', 'paused', 'running', 'stopped', 'running', 'stopped'])
        vm.Delete()
        self.assertDBusError('org.freedesktop.DBus.Error.UnknownObject', self.prop, path,
                             'State')

    def test_2_pty_console_heartbeat(self):
        path = self.create('tty', serial={'mode': 'pty'})
        vm = self.vm(path)
        vm.Start()
        self.wait_state(path, 'running')
        fd = vm.OpenConsole().take()
        try:
            self.assertTrue(os.isatty(fd))
            self.read_until(fd, HB)
        finally:
            os.close(fd)

        # vmmctl console copies it to stdout.
        p = subprocess.Popen([env_path('VMMCTL_BIN'), f'--address={self.bus.address}',
                              'console', 'tty'], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=die_with_parent)
        try:
            self.read_until(p.stdout.fileno(), HB)
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()
        vm.Stop()
        self.wait_state(path, 'stopped', 30)
        vm.Delete()

    def test_3_vmmctl(self):
        cfg = os.path.join(self.tmpdir, 'ctl.json')
        with open(cfg, 'w') as f:
            f.write(self.config('ctl'))
        r = self.vmmctl('create', '--start', 'ctl', cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        path = str(self.manager().GetVM('ctl'))
        self.wait_state(path, 'running')
        waiter = subprocess.Popen([env_path('VMMCTL_BIN'), f'--address={self.bus.address}',
                                   'wait', 'ctl'], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent)
        for verb, state in (('pause', 'paused'), ('resume', 'running')):
            r = self.vmmctl(verb, 'ctl')
            self.assertEqual(r.returncode, 0, r.stderr)
            self.wait_state(path, state, 30)
        self.assertIsNone(waiter.poll())
        r = self.vmmctl('shutdown', '--timeout=60', '--force', 'ctl')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.prop(path, 'State'), 'stopped')
        out, err = waiter.communicate(timeout=30)
        self.assertEqual(waiter.returncode, 0, err)
        self.assertIn('State: stopped', self.vmmctl('status', 'ctl').stdout)
        r = self.vmmctl('delete', 'ctl')
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_4_unit_commands(self):
        # vmmd-vm@.service's commands in systemd's order: start creates and boots the VM
        # and waits on it; stop shuts it down and deletes it.
        etc = os.path.join(self.tmpdir, 'etc')
        os.makedirs(os.path.join(etc, 'vmmd', 'vms'), exist_ok=True)
        with open(os.path.join(etc, 'vmmd', 'vms', 'unit1.json'), 'w') as f:
            f.write(self.config('unit1'))
        cmds = unit_commands(os.path.join(env_path('VMMD_UNITS_DIR'), 'vmmd-vm@.service.in'),
                             'unit1', etc)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus.address)
        path = vm_path('unit1')

        def run(argv):
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, f'{argv}: {r.stderr}')

        for ignore, argv in cmds['ExecStartPre']:
            run(argv)
        self.wait_state(path, 'running')
        [(_, main_argv)] = cmds['ExecStart']
        main_proc = subprocess.Popen(main_argv, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     preexec_fn=die_with_parent)
        fd = self.vm(path).OpenConsole().take()
        try:
            self.read_until(fd, HB)
        finally:
            os.close(fd)
        self.assertIsNone(main_proc.poll())  # the unit is active while the guest runs

        for ignore, argv in cmds['ExecStop']:
            run(argv)
        out, err = main_proc.communicate(timeout=60)
        self.assertEqual(main_proc.returncode, 0, err)  # the guest powered off: clean
        for ignore, argv in cmds['ExecStopPost']:
            run(argv)
        self.assertNotIn('unit1', [str(n) for n, _ in self.manager().ListVMs()])

    def test_zz_sigterm_shuts_guests_down(self):
        path = self.create('last')
        self.vm(path).Start()
        self.wait_state(path, 'running')
        fd = self.vm(path).OpenConsole().take()
        try:
            self.read_until(fd, HB)  # booted: it can see the power button
        finally:
            os.close(fd)
        self.assertEqual(self.daemon.terminate(timeout=90), 0)
        log = self.daemon.read_log()
        self.assertIn('Asking the guest of VM last to power off', log)
        self.assertIn('All VMs are down', log)


if __name__ == '__main__':
    main()
