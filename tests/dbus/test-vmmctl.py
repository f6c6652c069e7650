#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""vmmctl over the bus: create (file and stdin), list and status as tables and JSON,
delete, console, wait and shutdown on a VM that is down, and errors as one line with a
non-zero exit. Runs without /dev/kvm."""

import json
import os
import select
import subprocess

from vmmd_test import (ERR, VmmdTestCase, die_with_parent, env_path, have_kvm, main,
                       unit_commands, vm_path)


class VmmctlTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.make_env()

    def tearDown(self):
        for name, path in self.manager().ListVMs():
            self.vm(path).Delete()

    def write_config(self, name, **over):
        p = os.path.join(self.tmpdir, f'{name}.json')
        with open(p, 'w') as f:
            f.write(self.config(name, **over))
        return p

    def ok(self, *args, stdin=None):
        r = self.vmmctl(*args, stdin=stdin)
        self.assertEqual(r.returncode, 0, f'vmmctl {args}: {r.stderr}')
        return r

    def fails(self, error, *args, rc=1, stdin=None):
        r = self.vmmctl(*args, stdin=stdin)
        self.assertEqual(r.returncode, rc, f'vmmctl {args}: {r.stdout} {r.stderr}')
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith('vmmctl: '), lines[0])
        if error:
            self.assertIn(error, lines[0])
        self.assertEqual(r.stdout, '')
        return lines[0]

    def test_create_list_status_delete(self):
        r = self.ok('create', 'web', self.write_config('web', vcpus=2, memory_mib=64))
        self.assertEqual(r.stdout, '')
        self.assertEqual(self.manager().GetVM('web'), vm_path('web'))

        table = self.ok('list').stdout.splitlines()
        self.assertEqual(table[0].split(), ['NAME', 'STATE', 'VCPUS', 'MEMORY', 'CONSOLE'])
        self.assertEqual(table[1].split()[:4], ['web', 'created', '2', '64M'])

        listed = json.loads(self.ok('--json', 'list').stdout)
        self.assertEqual(len(listed), 1)
        self.assertEqual(listed[0]['name'], 'web')
        self.assertEqual(listed[0]['state'], 'created')
        self.assertEqual(listed[0]['vcpus'], 2)
        self.assertEqual(listed[0]['memory_bytes'], 64 << 20)
        self.assertEqual(listed[0]['path'], vm_path('web'))
        self.assertIsNone(listed[0]['job'])

        status = self.ok('status', 'web').stdout
        self.assertIn('State: created', status)
        self.assertIn('VCPUs: 2', status)
        self.assertIn('Memory: 64M', status)
        status = json.loads(self.ok('status', '--json', 'web').stdout)
        self.assertEqual(status['config']['memory_mib'], 64)
        self.assertEqual(status['console_path'], os.path.join(self.tmpdir, 'web.console'))

        self.ok('delete', 'web')
        self.assertEqual(self.ok('list').stdout, 'No VMs.\n')
        self.assertEqual(json.loads(self.ok('list', '--json').stdout), [])

    def test_create_from_stdin(self):
        self.ok('create', 'piped', '-', stdin=self.config('piped'))
        self.assertEqual(self.prop(vm_path('piped'), 'State'), 'created')

    def test_errors_are_one_line(self):
        self.ok('create', 'dup', self.write_config('dup'))
        self.fails("No VM named 'ghost' (" + ERR + 'NoSuchVM)', 'status', 'ghost')
        self.fails(ERR + 'NoSuchVM', 'start', 'ghost')
        self.fails(ERR + 'VMExists', 'create', 'dup', self.write_config('dup'))
        self.fails(ERR + 'InvalidName', 'create', 'bad name', self.write_config('x'))
        msg = self.fails(ERR + 'InvalidConfig', 'create', 'cfg', '-',
                         stdin='{"vcpus": 1, "memory_mib": 32, "kernel": "/nonexistent"}')
        self.assertIn('kernel', msg)
        self.fails(ERR + 'InvalidState', 'pause', 'dup')
        self.fails(ERR + 'InvalidState', 'resume', 'dup')
        self.fails(ERR + 'InvalidState', 'stop', 'dup')
        self.fails(ERR + 'InvalidState', 'shutdown', 'dup')
        self.fails('Cannot read', 'create', 'nofile', '/nonexistent/config.json')
        if not have_kvm():
            self.fails('/dev/kvm', 'start', 'dup')
        self.fails('Failed to connect', '--address=unix:path=/nonexistent/bus', 'list')

    def test_usage_errors(self):
        for args in ([], ['frobnicate'], ['start'], ['create', 'x'], ['list', 'extra'],
                     ['--timeout=soon', 'list'], ['--no-such-option', 'list']):
            r = self.vmmctl(*args)
            self.assertEqual(r.returncode, 2, f'{args}: {r.stderr}')
            self.assertEqual(r.stdout, '')

    def test_help_and_version(self):
        r = subprocess.run([env_path('VMMCTL_BIN'), '--help'], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        for verb in ('list', 'status', 'create', 'start', 'pause', 'resume', 'shutdown', 'stop',
                     'delete', 'console', 'wait'):
            self.assertIn(f'  {verb} ', r.stdout)
        r = subprocess.run([env_path('VMMCTL_BIN'), '--version'], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith('vmmctl '))

    def test_down_vm_wait_shutdown_delete_force(self):
        self.ok('create', 'down', self.write_config('down'))
        # A VM that is not running: wait returns, shutdown --timeout has nothing to do.
        self.ok('wait', 'down')
        self.ok('shutdown', '--timeout=5', '--force', 'down')
        self.ok('--timeout=5', 'shutdown', 'down')
        self.ok('delete', '--force', 'down')
        self.fails(ERR + 'NoSuchVM', 'wait', 'down')

    def test_console_file(self):
        self.ok('create', 'con', self.write_config('con'))
        console = os.path.join(self.tmpdir, 'con.console')
        with open(console, 'a') as f:
            f.write('line one\n')
        self.assertEqual(self.ok('console', '--no-follow', 'con').stdout, 'line one\n')

        # Following: new output shows up as the file grows.
        p = subprocess.Popen([env_path('VMMCTL_BIN'), f'--address={self.bus.address}',
                              'console', 'con'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=die_with_parent)
        try:
            got = b''
            with open(console, 'a') as f:
                f.write('line two\n')
            while b'line two' not in got:
                r, _, _ = select.select([p.stdout], [], [], 20)
                self.assertTrue(r, f'no console output; got {got!r}')
                chunk = os.read(p.stdout.fileno(), 4096)
                self.assertTrue(chunk, 'console ended')
                got += chunk
            self.assertTrue(got.startswith(b'line one\n'))
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()

    def test_console_none(self):
        self.ok('create', 'mute', self.write_config('mute', serial={'mode': 'none'}))
        self.fails(ERR + 'NoConsole', 'console', 'mute')

    def test_unit_commands_clean_up_a_failed_start(self):
        # vmmd-vm@.service's commands as systemd runs them when the guest cannot start
        # (no /dev/kvm): create succeeds, start fails, ExecStopPost deletes the VM.
        if have_kvm():
            self.skipTest('KVM works: tests/dbus/test-lifecycle.py runs the unit commands')
        etc = os.path.join(self.tmpdir, 'etc')
        os.makedirs(os.path.join(etc, 'vmmd', 'vms'), exist_ok=True)
        with open(os.path.join(etc, 'vmmd', 'vms', 'unit1.json'), 'w') as f:
            f.write(self.config('unit1'))
        cmds = unit_commands(os.path.join(env_path('VMMD_UNITS_DIR'), 'vmmd-vm@.service.in'),
                             'unit1', etc)
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=self.bus.address)
        create, start = cmds['ExecStartPre']
        r = subprocess.run(create[1], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.prop(vm_path('unit1'), 'State'), 'created')
        r = subprocess.run(start[1], env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn('/dev/kvm', r.stderr)
        # systemd skips ExecStart= and ExecStop= after a failed ExecStartPre=.
        [(ignore, post)] = cmds['ExecStopPost']
        self.assertTrue(ignore)
        r = subprocess.run(post, env=env, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn('unit1', [str(n) for n, _ in self.manager().ListVMs()])


if __name__ == '__main__':
    main()
