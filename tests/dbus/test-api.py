#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The bus API without a running guest: every Manager and VM member, properties, the
ObjectManager signals, each bad input with its named error (and vmmd still serving), the
introspection data against the installed XML, sd_notify() and a clean SIGTERM. Runs without
/dev/kvm."""

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import dbus

from vmmd_test import (BUS_NAME, ERR, JOB_IFACE, MANAGER_IFACE, MANAGER_PATH, OM_IFACE, PROPS_IFACE, VM_IFACE,
                       VmmdTestCase, env_path, have_kvm, main, vm_path, wait_until)

MAX_VMS = 4


class ApiTest(VmmdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.make_env(daemon_args=[f'--max-vms={MAX_VMS}'])
        cls.om_signals = []
        cls.bus.conn.add_signal_receiver(
            lambda *a, **kw: cls.om_signals.append((kw['member'], a)),
            dbus_interface=OM_IFACE, path=MANAGER_PATH, member_keyword='member')

    def tearDown(self):
        # Each test leaves no VM behind (and after test_zz_sigterm there is no daemon).
        if self.daemon.alive():
            for name, path in self.manager().ListVMs():
                self.vm(path).Delete()

    # --- notify ---

    def test_notify_ready_and_status(self):
        self.assertIn('READY=1', self.daemon.notify.wait_for('READY=1'))
        self.assertIn('STATUS=', self.daemon.notify.wait_for('STATUS='))

    # --- Manager ---

    def test_manager_version(self):
        v = self.bus.conn.get_object(BUS_NAME, MANAGER_PATH, introspect=False).Get(
            MANAGER_IFACE, 'Version', dbus_interface='org.freedesktop.DBus.Properties')
        self.assertRegex(str(v), r'^\d+\.\d+')

    def test_create_get_list_properties_delete(self):
        serial = os.path.join(self.tmpdir, 'alpha.console')
        path = self.manager().CreateVM('alpha', self.config('alpha', vcpus=2, memory_mib=48))
        self.assertEqual(path, vm_path('alpha'))
        self.assertEqual(self.manager().GetVM('alpha'), path)
        self.assertIn(('alpha', path), [(str(n), p) for n, p in self.manager().ListVMs()])

        p = self.props(path)
        self.assertEqual(p['Name'], 'alpha')
        self.assertEqual(p['State'], 'created')
        self.assertEqual(p['VCPUs'], 2)
        self.assertEqual(p['MemoryBytes'], 48 * 1024 * 1024)
        self.assertEqual(p['Job'], '/')
        self.assertEqual(p['ConsolePath'], serial)
        config = json.loads(str(p['Config']))
        self.assertEqual(config['vcpus'], 2)
        self.assertEqual(config['memory_mib'], 48)
        self.assertEqual(config['kernel'], self.kernel)
        self.assertEqual(config['serial']['mode'], 'file')
        self.assertEqual(set(p.keys()), {'Name', 'State', 'VCPUs', 'MemoryBytes', 'Config', 'Job',
                                         'ConsolePath'})

        self.vm(path).Delete()
        self.assertDBusError(ERR + 'NoSuchVM', self.manager().GetVM, 'alpha')
        self.assertDBusError('org.freedesktop.DBus.Error.UnknownObject', self.prop, path, 'State')
        self.assertNotIn('alpha', [str(n) for n, _ in self.manager().ListVMs()])

    def test_list_vms_in_creation_order(self):
        for n in ('c', 'a', 'b'):
            self.create(n)
        self.assertEqual([str(n) for n, _ in self.manager().ListVMs()], ['c', 'a', 'b'])

    def test_object_manager_signals(self):
        def signal_for(member, path):
            for m, args in self.om_signals:
                if m == member and args[0] == path:
                    return args
            return None

        path = self.create('om')
        wait_until(lambda: signal_for('InterfacesAdded', path), 10, 'InterfacesAdded')
        _, ifaces = signal_for('InterfacesAdded', path)
        self.assertIn(VM_IFACE, ifaces)
        self.assertEqual(ifaces[VM_IFACE]['Name'], 'om')
        self.assertEqual(ifaces[VM_IFACE]['State'], 'created')
        self.assertEqual(ifaces[VM_IFACE]['Job'], '/')

        objects = self.vm(MANAGER_PATH, OM_IFACE).GetManagedObjects()
        self.assertIn(path, objects)
        self.assertEqual(objects[path][VM_IFACE]['Name'], 'om')

        self.vm(path).Delete()
        wait_until(lambda: signal_for('InterfacesRemoved', path), 10, 'InterfacesRemoved')
        _, ifaces = signal_for('InterfacesRemoved', path)
        self.assertIn(VM_IFACE, ifaces)
        self.assertNotIn(path, self.vm(MANAGER_PATH, OM_IFACE).GetManagedObjects())

    def test_list_jobs_empty(self):
        jobs = self.manager().ListJobs()
        self.assertEqual(jobs.signature, '(usso)')
        self.assertEqual(len(jobs), 0)

    def test_receive_migration_bad_input(self):
        opts = lambda d: dbus.Dictionary(d, signature='sv')
        m = self.manager()
        self.assertDBusError(ERR + 'InvalidName', m.ReceiveMigration, 'bad/name', 'unix:/tmp/x.sock', opts({}))
        msg = self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', m.ReceiveMigration, 'in1',
                                   'ftp:somewhere', opts({}))
        self.assertIn('tcp:HOST:PORT or unix:PATH', msg)
        msg = self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', m.ReceiveMigration, 'in1',
                                   'unix:/tmp/x.sock', opts({'colour': 'blue'}))
        self.assertIn("Unknown option 'colour'", msg)
        msg = self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', m.ReceiveMigration, 'in1',
                                   'unix:/tmp/x.sock', opts({'timeout_s': dbus.String('5')}))
        self.assertIn("'timeout_s' must be of type 't'", msg)
        msg = self.assertDBusError(ERR + 'InvalidConfig', m.ReceiveMigration, 'in1',
                                   'unix:/tmp/x.sock', opts({'config': '[1, 2]'}))
        self.assertIn('expected a JSON object', msg)
        self.assertEqual(len(m.ListVMs()), 0)
        self.assertEqual(len(m.ListJobs()), 0)
        self.assertServing()

    def test_receive_migration_job_cancelled(self):
        """An incoming migration that is aborted before any source came: the job ends
        cancelled, its object stays readable, the VM is stopped; deleting the VM removes
        the job (JobRemoved)."""
        sock = os.path.join(self.tmpdir, 'in.sock')
        signals = []
        self.bus.conn.add_signal_receiver(lambda *a, **kw: signals.append((kw['member'], a)),
                                     dbus_interface=MANAGER_IFACE, member_keyword='member')
        vm_path, job_path = self.manager().ReceiveMigration(
            'incoming', 'unix:' + sock, dbus.Dictionary({'timeout_s': dbus.UInt64(600)}, signature='sv'))
        self.assertTrue(os.path.exists(sock))
        self.assertEqual(self.prop(vm_path, 'State'), 'incoming')
        self.assertEqual(self.prop(vm_path, 'Config'), '')
        self.assertEqual(self.prop(vm_path, 'VCPUs'), 0)
        self.assertEqual(self.prop(vm_path, 'Job'), job_path)
        job = self.bus.conn.get_object(BUS_NAME, job_path, introspect=False)
        props = job.GetAll(JOB_IFACE, dbus_interface=PROPS_IFACE)
        self.assertEqual(props['Operation'], 'migration-in')
        self.assertEqual(props['State'], 'setup')
        self.assertEqual(props['VM'], vm_path)
        self.assertTrue(props['Cancelable'])
        self.assertEqual(props['StartedByUID'], os.getuid())
        jobs = self.manager().ListJobs()
        self.assertEqual([(int(j[0]), str(j[1]), str(j[3])) for j in jobs],
                         [(int(props['Id']), 'migration-in', job_path)])
        wait_until(lambda: any(n == 'JobNew' for n, _ in signals), 10, 'JobNew')

        # A second migration into the same name is refused.
        self.assertDBusError(ERR + 'VMExists', self.manager().ReceiveMigration, 'incoming',
                             'unix:' + sock + '2', dbus.Dictionary({}, signature='sv'))
        # Delete is refused while the job runs.
        self.assertDBusError(ERR + 'InvalidState', self.vm(vm_path).Delete)

        self.vm(vm_path).AbortJob()
        ok, name, message = job.Wait(dbus_interface=JOB_IFACE, timeout=60)
        self.assertFalse(ok)
        self.assertEqual(name, ERR + 'Cancelled')
        self.assertIn('cancelled', message)
        self.assertEqual(self.prop(job_path, 'State', JOB_IFACE), 'cancelled')
        self.assertFalse(self.prop(job_path, 'Cancelable', JOB_IFACE))
        wait_until(lambda: self.prop(vm_path, 'State') == 'stopped', 10, 'VM stopped')
        msg = self.assertDBusError(ERR + 'InvalidState', self.vm(vm_path).Start)
        self.assertIn('no configuration', msg)
        t, stats = self.vm(vm_path).GetJobStats(dbus.UInt32(1))
        self.assertEqual(t, 5)  # VIR_DOMAIN_JOB_CANCELLED
        self.assertFalse(stats['success'])
        self.assertIn('cancelled', stats['errmsg'])
        self.assertEqual(stats['operation'], 2)
        # Without "keep completed" the completed stats are handed out once.
        t, stats = self.vm(vm_path).GetJobStats(dbus.UInt32(1))
        self.assertEqual(t, 0)
        # Cancelling a finished job is an error; the job object stays.
        self.assertDBusError(ERR + 'InvalidState', job.Cancel, dbus_interface=JOB_IFACE)
        self.vm(vm_path).Delete()
        wait_until(lambda: any(n == 'JobRemoved' for n, _ in signals), 10, 'JobRemoved')
        removed = [a for n, a in signals if n == 'JobRemoved'][0]
        self.assertEqual((str(removed[1]), str(removed[2])), (job_path, 'cancelled'))
        self.assertEqual(len(self.manager().ListJobs()), 0)
        self.assertServing()

    # --- VM methods ---

    def test_wrong_state_calls(self):
        path = self.create('idle')
        for method in ('Pause', 'Resume', 'Shutdown', 'Stop'):
            msg = self.assertDBusError(ERR + 'InvalidState', getattr(self.vm(path), method))
            self.assertIn("'idle'", msg)
            self.assertIn('created', msg)
            self.assertEqual(self.prop(path, 'State'), 'created')
        self.assertServing()

    def test_start_without_kvm(self):
        if have_kvm():
            self.skipTest('/dev/kvm present: tests/dbus/test-lifecycle.py starts guests')
        path = self.create('nokvm')
        msg = self.assertDBusError(ERR + 'Failed', self.vm(path).Start)
        self.assertIn('/dev/kvm', msg)
        self.assertEqual(self.prop(path, 'State'), 'created')
        self.assertServing()

    def test_migrate_bad_input(self):
        path = self.create('mig')
        vm = self.vm(path)
        opts = lambda d: dbus.Dictionary(d, signature='sv')
        msg = self.assertDBusError(ERR + 'InvalidState', vm.Migrate, 'tcp:127.0.0.1:4444', opts({}))
        self.assertIn('created', msg)
        for bad, text in (({'speed': dbus.UInt64(1)}, "Unknown option 'speed'"),
                          ({'connections': dbus.UInt64(2)}, "'connections' must be of type 'u'"),
                          ({'connections': dbus.UInt32(0)}, 'connections must be between 1 and 16'),
                          ({'max_downtime_ms': dbus.UInt64(0)}, 'max_downtime_ms must be between'),
                          ({'zerocopy': 'maybe'}, 'zerocopy must be')):
            msg = self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', vm.Migrate,
                                       'tcp:127.0.0.1:4444', opts(bad))
            self.assertIn(text, msg)
        self.assertEqual(self.prop(path, 'State'), 'created')
        self.assertEqual(self.prop(path, 'Job'), '/')
        self.assertServing()

    def test_job_stats_and_abort(self):
        path = self.create('jobs')
        vm = self.vm(path)
        for flags in (0, 1, 3):
            t, stats = vm.GetJobStats(dbus.UInt32(flags))
            self.assertEqual(t, 0)  # VIR_DOMAIN_JOB_NONE
            self.assertEqual(len(stats), 0)
        for flags in (2, 4):
            self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs', vm.GetJobStats,
                                 dbus.UInt32(flags))
        self.assertDBusError(ERR + 'InvalidState', vm.AbortJob)
        self.assertServing()

    def test_migration_settings(self):
        path = self.create('tune')
        vm = self.vm(path)
        self.assertEqual(vm.MigrateGetMaxDowntime(dbus.UInt32(0)), 300)
        vm.MigrateSetMaxDowntime(dbus.UInt64(1234), dbus.UInt32(0))
        self.assertEqual(vm.MigrateGetMaxDowntime(dbus.UInt32(0)), 1234)
        self.assertEqual(vm.MigrateGetMaxSpeed(dbus.UInt32(0)), 0)
        vm.MigrateSetMaxSpeed(dbus.UInt64(100), dbus.UInt32(0))
        self.assertEqual(vm.MigrateGetMaxSpeed(dbus.UInt32(0)), 100)

        bad = 'org.freedesktop.DBus.Error.InvalidArgs'
        self.assertDBusError(bad, vm.MigrateSetMaxDowntime, dbus.UInt64(0), dbus.UInt32(0))
        self.assertDBusError(bad, vm.MigrateSetMaxDowntime, dbus.UInt64(10**9), dbus.UInt32(0))
        self.assertDBusError(bad, vm.MigrateSetMaxDowntime, dbus.UInt64(10), dbus.UInt32(1))
        self.assertDBusError(bad, vm.MigrateSetMaxSpeed, dbus.UInt64(2**60), dbus.UInt32(0))
        self.assertDBusError(bad, vm.MigrateGetMaxSpeed, dbus.UInt32(7))
        self.assertEqual(vm.MigrateGetMaxDowntime(dbus.UInt32(0)), 1234)
        self.assertServing()

    def test_open_console_file(self):
        path = self.create('con')
        console = os.path.join(self.tmpdir, 'con.console')
        with open(console, 'a') as f:
            f.write('hello from the console file\n')
        fd = self.vm(path).OpenConsole().take()
        try:
            self.assertIn(b'hello from the console file', os.read(fd, 4096))
            with self.assertRaises(OSError):  # read-only
                os.write(fd, b'x')
        finally:
            os.close(fd)

    def test_open_console_pty(self):
        path = self.create('tty', serial={'mode': 'pty'})
        self.assertTrue(str(self.prop(path, 'ConsolePath')).startswith('/dev/pts/'))
        fd = self.vm(path).OpenConsole().take()
        try:
            self.assertTrue(os.isatty(fd))
            self.assertEqual(os.ttyname(fd), str(self.prop(path, 'ConsolePath')))
        finally:
            os.close(fd)

    def test_open_console_none(self):
        path = self.create('mute', serial={'mode': 'none'})
        self.assertEqual(self.prop(path, 'ConsolePath'), '')
        self.assertDBusError(ERR + 'NoConsole', self.vm(path).OpenConsole)
        self.assertServing()

    def test_properties_are_read_only(self):
        path = self.create('ro')
        self.assertDBusError('org.freedesktop.DBus.Error.PropertyReadOnly',
                             self.vm(path, 'org.freedesktop.DBus.Properties').Set, VM_IFACE,
                             'State', 'running')
        self.assertEqual(self.prop(path, 'State'), 'created')

    # --- bad input ---

    def test_names(self):
        for bad in ('', 'x' * 65, 'bad name', 'a/b', '.hidden', '-opt', 'caf\u00e9', 'a\nb'):
            self.assertDBusError(ERR + 'InvalidName', self.manager().CreateVM, bad,
                                 self.config('bad'))
            self.assertDBusError(ERR + 'InvalidName', self.manager().GetVM, bad)
        for good in ('x' * 64, 'A-b_c.9', '9lives'):
            path = self.create(good)
            self.assertEqual(path, vm_path(good))
            self.assertEqual(self.prop(path, 'Name'), good)
            self.vm(path).Delete()
        self.assertServing()

    def test_unknown_vm(self):
        self.assertDBusError(ERR + 'NoSuchVM', self.manager().GetVM, 'ghost')
        self.assertDBusError('org.freedesktop.DBus.Error.UnknownObject', self.vm(vm_path('ghost')).Start)
        self.assertServing()

    def test_duplicate_name(self):
        self.create('twin')
        msg = self.assertDBusError(ERR + 'VMExists', self.create, 'twin')
        self.assertIn("'twin'", msg)
        self.assertEqual(len(self.manager().ListVMs()), 1)
        self.assertServing()

    def test_bad_configs(self):
        k = self.kernel
        not_a_kernel = os.path.join(self.tmpdir, 'not-a-kernel')
        with open(not_a_kernel, 'w') as f:
            f.write('plain text\n')
        cases = [
            ('{', 'config'),
            ('[1, 2]', ''),
            (json.dumps({'vcpus': 1, 'memory_mib': 32, 'kernel': k, 'bogus': 1}), 'bogus'),
            (json.dumps({'vcpus': '2', 'memory_mib': 32, 'kernel': k}), 'vcpus'),
            (json.dumps({'vcpus': 0, 'memory_mib': 32, 'kernel': k}), 'vcpus'),
            (json.dumps({'vcpus': 1000, 'memory_mib': 32, 'kernel': k}), 'vcpus'),
            (json.dumps({'vcpus': 1, 'memory_mib': 1, 'kernel': k}), 'memory_mib'),
            (json.dumps({'vcpus': 1, 'memory_mib': 32}), 'kernel'),
            (json.dumps({'vcpus': 1, 'memory_mib': 32, 'kernel': '/nonexistent/vmlinuz'}),
             'kernel'),
            (json.dumps({'vcpus': 1, 'memory_mib': 32, 'kernel': not_a_kernel}), 'kernel'),
            (json.dumps({'vcpus': 1, 'memory_mib': 32, 'kernel': k,
                         'serial': {'mode': 'telepathy'}}), 'serial.mode'),
            (json.dumps({'vcpus': 1, 'memory_mib': 32, 'kernel': k, 'cmdline': 'x' * 70000}),
             '65536'),
        ]
        for text, key in cases:
            msg = self.assertDBusError(ERR + 'InvalidConfig', self.manager().CreateVM, 'bad',
                                       text)
            self.assertIn(key, msg, f'{text[:80]!r}: {msg}')
        self.assertEqual(len(self.manager().ListVMs()), 0)
        self.assertServing()

    def test_vm_limit(self):
        paths = [self.create(f'n{i}') for i in range(MAX_VMS)]
        msg = self.assertDBusError(ERR + 'LimitExceeded', self.create, 'one-too-many')
        self.assertIn(str(MAX_VMS), msg)
        self.vm(paths[0]).Delete()
        self.create('fits-again')
        self.assertServing()

    def test_wrong_argument_types(self):
        vm = self.create('typed')
        # busctl prints the error's message; python-dbus below checks the names.
        cases = [
            (MANAGER_PATH, MANAGER_IFACE, 'CreateVM', ['s', 'x'], 'invalid arguments'),
            (MANAGER_PATH, MANAGER_IFACE, 'CreateVM', ['su', 'x', '1'], 'invalid arguments'),
            (MANAGER_PATH, MANAGER_IFACE, 'GetVM', ['u', '5'], 'invalid arguments'),
            (MANAGER_PATH, MANAGER_IFACE, 'ListVMs', ['s', 'extra'], 'invalid arguments'),
            (vm, VM_IFACE, 'GetJobStats', ['s', 'x'], 'invalid arguments'),
            (vm, VM_IFACE, 'MigrateSetMaxDowntime', ['u', '1'], 'invalid arguments'),
            (vm, VM_IFACE, 'Start', ['s', 'now'], 'invalid arguments'),
            (vm, VM_IFACE, 'Reboot', [], 'unknown method'),
            (vm_path('ghost'), VM_IFACE, 'Start', [], 'unknown object'),
        ]
        for path, iface, member, args, err in cases:
            r = self.busctl('call', BUS_NAME, path, iface, member, *args)
            self.assertNotEqual(r.returncode, 0, f'{member} {args}: {r.stdout}')
            self.assertIn(err, r.stderr.lower(), f'{member} {args}')
            self.assertServing()
        self.assertEqual(self.prop(vm, 'State'), 'created')
        # The same through python-dbus, which reports the error names.
        for member, sig, args in (('CreateVM', 'su', ['x', 1]), ('GetVM', 'u', [5]),
                                  ('CreateVM', 's', ['x'])):
            self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs',
                                 self.bus.conn.call_blocking, BUS_NAME, MANAGER_PATH,
                                 MANAGER_IFACE, member, sig, args)
        self.assertDBusError('org.freedesktop.DBus.Error.InvalidArgs',
                             self.bus.conn.call_blocking, BUS_NAME, vm, VM_IFACE, 'GetJobStats',
                             's', ['x'])
        self.assertServing()

    # --- introspection ---

    def test_introspection_matches_installed_xml(self):
        units = env_path('VMMD_UNITS_DIR')

        def members(root, iface_name):
            iface = root.find(f"interface[@name='{iface_name}']")
            self.assertIsNotNone(iface, iface_name)
            out = set()
            for m in iface.findall('method'):
                ins = ''.join(a.get('type') for a in m.findall('arg')
                              if a.get('direction', 'in') == 'in')
                outs = ''.join(a.get('type') for a in m.findall('arg')
                               if a.get('direction') == 'out')
                names = tuple(a.get('name') for a in m.findall('arg'))
                out.add(('method', m.get('name'), ins, outs, names))
            for s in iface.findall('signal'):
                out.add(('signal', s.get('name'),
                         ''.join(a.get('type') for a in s.findall('arg')),
                         tuple(a.get('name') for a in s.findall('arg'))))
            for p in iface.findall('property'):
                out.add(('property', p.get('name'), p.get('type'), p.get('access')))
            return out

        path = self.create('intro')
        in_path, job_path = self.manager().ReceiveMigration(
            'intro-in', 'unix:' + os.path.join(self.tmpdir, 'intro.sock'),
            dbus.Dictionary({}, signature='sv'))
        for obj, iface, xml in ((MANAGER_PATH, MANAGER_IFACE, 'org.vmmd.VMM1.Manager.xml'),
                                (path, VM_IFACE, 'org.vmmd.VMM1.VM.xml'),
                                (job_path, JOB_IFACE, 'org.vmmd.VMM1.Job.xml')):
            live = ET.fromstring(str(self.bus.conn.get_object(BUS_NAME, obj).Introspect(
                dbus_interface='org.freedesktop.DBus.Introspectable')))
            installed = ET.parse(os.path.join(units, xml)).getroot()
            self.assertEqual(members(live, iface), members(installed, iface), xml)
        self.vm(in_path).AbortJob()
        wait_until(lambda: self.prop(in_path, 'State') == 'stopped', 30, 'incoming VM stopped')

        gdbus = shutil.which('gdbus')
        if not gdbus:
            self.skipTest('gdbus (libglib2.0-bin) not installed')
        for obj, iface, expect in ((MANAGER_PATH, MANAGER_IFACE, ['CreateVM(', 'ListJobs(',
                                                                  'JobNew(', 'Version']),
                                   (MANAGER_PATH, OM_IFACE, ['GetManagedObjects(']),
                                   (path, VM_IFACE, ['OpenConsole(out h fd)', 'State =',
                                                     'MigrationIteration('])):
            r = subprocess.run([gdbus, 'introspect', '--address', self.bus.address, '--dest',
                                BUS_NAME, '--object-path', obj], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f'interface {iface} {{', r.stdout)
            for e in expect:
                self.assertIn(e, r.stdout)

    # --- last: SIGTERM ---

    def test_zz_sigterm(self):
        self.create('bystander')
        self.assertEqual(self.daemon.terminate(), 0)
        self.assertIn('STOPPING=1', self.daemon.notify.wait_for('STOPPING=1'))
        log = self.daemon.read_log()
        self.assertIn('Received Terminated', log)
        self.assertIn('vmmd exiting', log)
        wait_until(lambda: not self.bus.has_owner(), 10, 'the name to be released')


if __name__ == '__main__':
    main()
