# SPDX-License-Identifier: LGPL-2.1-or-later
"""Harness of the vmmd integration tests.

Each test program gets a private dbus-daemon configured like a system bus
(system-bus.conf.in, which includes vmmd's real bus policy), runs the vmmd under test on it
(started directly, or bus-activated from a generated activation file) with
DBUS_SYSTEM_BUS_ADDRESS pointing at it, and mocks polkit with python3-dbusmock when asked.

Paths come from meson (tests/dbus/meson.build) through the environment:
  VMMD_BIN, VMMCTL_BIN        the programs under test
  VMMD_TEST_BUS_CONF          system-bus.conf.in
  VMMD_BUS_POLICY             units/org.vmmd.VMM1.conf
  VMMD_TEST_GUEST             the test guest ELF (optional: a tiny PVH ELF is made if unset)

A program that cannot run here exits 77 (meson: SKIP).
"""

import ctypes
import json
import os
import pwd
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

EXIT_SKIP = 77

BUS_NAME = 'org.vmmd.VMM1'
MANAGER_PATH = '/org/vmmd/VMM1'
MANAGER_IFACE = 'org.vmmd.VMM1.Manager'
VM_IFACE = 'org.vmmd.VMM1.VM'
JOB_IFACE = 'org.vmmd.VMM1.Job'
VM_PREFIX = '/org/vmmd/VMM1/vm/'
ERR = 'org.vmmd.VMM1.Error.'
PROPS_IFACE = 'org.freedesktop.DBus.Properties'
OM_IFACE = 'org.freedesktop.DBus.ObjectManager'


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """preexec_fn: a child the test started goes when the test goes (meson's timeout kill)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def skip(why):
    print(f'SKIP: {why}', flush=True)
    sys.exit(EXIT_SKIP)


try:
    import dbus
    import dbus.mainloop.glib
    from gi.repository import GLib
except ImportError as e:  # run with /usr/bin/python3 and python3-dbus, python3-gi
    skip(f'python3-dbus/python3-gi missing ({e})')

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)


def env_path(name, required=True):
    p = os.environ.get(name)
    if required and (not p or not os.path.exists(p)):
        skip(f'${name} not set or missing (run through meson test)')
    return p


def have_kvm():
    return os.access('/dev/kvm', os.R_OK | os.W_OK)


def nobody():
    try:
        pw = pwd.getpwnam('nobody')
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def as_user(cmd, ids):
    """cmd run as uid/gid 'ids' through setpriv (util-linux)."""
    uid, gid = ids
    return ['setpriv', f'--reuid={uid}', f'--regid={gid}', '--clear-groups', '--'] + cmd


def make_pvh_elf(path):
    """A minimal x86-64 ELF with one PT_LOAD and the PVH entry note: enough for config
    validation (it is never booted)."""
    note_name = b'Xen\0'
    note = struct.pack('<III', 4, 4, 18) + note_name + struct.pack('<I', 0x100000)
    ehdr_size, phdr_size = 64, 56
    note_off = ehdr_size + 2 * phdr_size
    code_off = note_off + len(note)
    code = b'\xf4' * 16  # hlt
    ehdr = b'\x7fELF' + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr += struct.pack('<HHIQQQIHHHHHH', 2, 62, 1, 0x100000, ehdr_size, 0, 0, ehdr_size,
                        phdr_size, 2, 0, 0, 0)
    load = struct.pack('<IIQQQQQQ', 1, 5, code_off, 0x100000, 0x100000, len(code), len(code),
                       0x1000)
    pnote = struct.pack('<IIQQQQQQ', 4, 4, note_off, 0, 0, len(note), len(note), 4)
    with open(path, 'wb') as f:
        f.write(ehdr + load + pnote + note + code)


class NotifySocket:
    """The sd_notify() receiver: what systemd would see. A thread keeps reading, as systemd
    does (sd_notify() blocks once the socket buffer is full)."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(path)
        self.messages = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        while True:
            try:
                m = self.sock.recv(4096).decode()
            except OSError:
                return
            with self.cond:
                self.messages.append(m)
                self.cond.notify_all()

    def wait_for(self, key, timeout=20):
        def found():
            for m in self.messages:
                if any(line.startswith(key) for line in m.split('\n')):
                    return m
            return None

        with self.cond:
            if not self.cond.wait_for(found, timeout):
                raise TimeoutError(f'no {key} from vmmd; got {self.messages}')
            return found()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Bus:
    """A private dbus-daemon that behaves like the system bus."""

    def __init__(self, tmpdir, activation_args=None, extra_env=None):
        self.tmpdir = tmpdir
        self.servicedir = os.path.join(tmpdir, 'services')
        os.makedirs(self.servicedir, exist_ok=True)
        self.socket_path = os.path.join(tmpdir, 'system_bus_socket')
        self.address = f'unix:path={self.socket_path}'
        self.log_path = os.path.join(tmpdir, 'bus.log')

        with open(env_path('VMMD_TEST_BUS_CONF')) as f:
            conf = f.read()
        conf = (conf.replace('@LISTEN@', self.address)
                .replace('@SERVICEDIR@', self.servicedir)
                .replace('@TEST_USER@', pwd.getpwuid(os.getuid()).pw_name)
                .replace('@VMMD_POLICY@', env_path('VMMD_BUS_POLICY')))
        self.conf_path = os.path.join(tmpdir, 'system-bus.conf')
        with open(self.conf_path, 'w') as f:
            f.write(conf)

        if activation_args is not None:
            self.write_activation_file(activation_args)

        env = dict(os.environ)
        # An activated vmmd inherits this environment (not its caller's).
        env['DBUS_SYSTEM_BUS_ADDRESS'] = self.address
        env.setdefault('VMMD_LOG_LEVEL', 'debug')
        env.update(extra_env or {})
        self.log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(['dbus-daemon', f'--config-file={self.conf_path}', '--nofork',
                                      '--print-address=1'],
                                     stdout=subprocess.PIPE, stderr=self.log, env=env,
                                     close_fds=True, preexec_fn=die_with_parent)
        line = self.proc.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError(f'dbus-daemon did not start: {self.read_log()}')
        self.conn = dbus.bus.BusConnection(self.address)

    def write_activation_file(self, args):
        with open(os.path.join(self.servicedir, f'{BUS_NAME}.service'), 'w') as f:
            f.write('[D-BUS Service]\n'
                    f'Name={BUS_NAME}\n'
                    f'Exec={" ".join([env_path("VMMD_BIN")] + list(args))}\n'
                    'User=root\n'
                    'SystemdService=vmmd.service\n')

    def read_log(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def owner_pid(self, name=BUS_NAME):
        try:
            return int(self.conn.call_blocking('org.freedesktop.DBus', '/org/freedesktop/DBus',
                                               'org.freedesktop.DBus',
                                               'GetConnectionUnixProcessID', 's', [name]))
        except dbus.exceptions.DBusException:
            return None

    def has_owner(self, name=BUS_NAME):
        return bool(self.conn.call_blocking('org.freedesktop.DBus', '/org/freedesktop/DBus',
                                            'org.freedesktop.DBus', 'NameHasOwner', 's', [name]))

    def close(self):
        try:
            self.conn.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


class Daemon:
    """vmmd started by the test (not by the bus): its stderr and sd_notify() are ours."""

    def __init__(self, bus, args=(), env=None):
        self.bus = bus
        self.log_path = os.path.join(bus.tmpdir, 'vmmd.log')
        self.notify = NotifySocket(os.path.join(bus.tmpdir, f'notify-{time.monotonic_ns()}'))
        e = dict(os.environ)
        e['DBUS_SYSTEM_BUS_ADDRESS'] = bus.address
        e['NOTIFY_SOCKET'] = self.notify.path
        e['VMMD_LOG_LEVEL'] = 'debug'
        e.pop('DBUS_STARTER_BUS_TYPE', None)
        e.update(env or {})
        self.log = open(self.log_path, 'a')
        self.proc = subprocess.Popen([env_path('VMMD_BIN')] + list(args), env=e,
                                     stdout=self.log, stderr=self.log, close_fds=True,
                                     preexec_fn=die_with_parent)
        self.notify.wait_for('READY=1')

    def read_log(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def terminate(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        self.log.close()


class Polkit:
    """The polkitd mock of python3-dbusmock: denies every action until allowed."""

    def __init__(self, bus):
        self.bus = bus
        self.log = open(os.path.join(bus.tmpdir, 'polkit.log'), 'w')
        env = dict(os.environ)
        env['DBUS_SYSTEM_BUS_ADDRESS'] = bus.address
        self.proc = subprocess.Popen(['/usr/bin/python3', '-m', 'dbusmock', '--system',
                                      '--template', 'polkitd'],
                                     stdout=self.log, stderr=self.log, env=env, close_fds=True,
                                     preexec_fn=die_with_parent)
        wait_until(lambda: bus.has_owner('org.freedesktop.PolicyKit1'), 30,
                   'the polkit mock to own its name')
        self.mock = dbus.Interface(bus.conn.get_object('org.freedesktop.PolicyKit1',
                                                       '/org/freedesktop/PolicyKit1/Authority'),
                                   'org.freedesktop.DBus.Mock')

    def allow(self, *actions):
        self.mock.SetAllowed(dbus.Array(actions, signature='s'))

    def hang(self, b):
        self.mock.SimulateHang(b)

    def release(self):
        self.mock.ReleaseHangingCalls()

    def have_hanging_calls(self):
        return bool(self.mock.HaveHangingCalls())

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def spin(timeout=0.05):
    """Runs the GLib loop (signal delivery) for 'timeout' seconds."""
    done = []
    GLib.timeout_add(int(timeout * 1000), lambda: done.append(1) and False)
    ctx = GLib.MainContext.default()
    while not done:
        ctx.iteration(True)


def wait_until(pred, timeout, what):
    """Runs the GLib loop until pred() holds; pred() is looked at on every event and every
    50 ms (for conditions that need a call to see)."""
    ctx = GLib.MainContext.default()
    expired = []
    timer = GLib.timeout_add(int(timeout * 1000), lambda: expired.append(1) and False)
    tick = GLib.timeout_add(50, lambda: True)
    try:
        while not pred():
            if expired:
                raise TimeoutError(f'timed out after {timeout} s waiting for {what}')
            ctx.iteration(True)
    finally:
        GLib.source_remove(tick)
        if not expired:
            GLib.source_remove(timer)


def vm_path(name):
    """sd_bus_path_encode(): [A-Za-z0-9] stay, anything else and a leading digit become _xx."""
    if not name:
        return VM_PREFIX.rstrip('/') + '/_'
    out = []
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.isalpha() or (ch.isdigit() and i > 0)):
            out.append(ch)
        else:
            out.append('_%02x' % ord(ch))
    return VM_PREFIX + ''.join(out)


def unit_commands(unit_in, instance, sysconfdir):
    """The Exec*= lines of units/vmmd-vm@.service.in for 'instance', as systemd would run
    them (%i expanded, the '-' prefix noted), with this build's vmmctl: {key: [(ignore
    failure, argv)]}. systemd is not PID 1 here, so tests run these commands themselves,
    in the order systemd does."""
    out = {}
    with open(unit_in) as f:
        for line in f:
            line = line.strip()
            key, sep, value = line.partition('=')
            if not sep or not key.startswith('Exec'):
                continue
            ignore = value.startswith('-')
            value = value.lstrip('-')
            value = (value.replace('@BINDIR@', os.path.dirname(env_path('VMMCTL_BIN')))
                     .replace('@SYSCONFDIR@', sysconfdir).replace('%i', instance))
            out.setdefault(key, []).append((ignore, value.split()))
    return out


class VmmdTestCase(unittest.TestCase):
    """Base: a tmpdir, a bus, helpers. Subclasses start what they need in setUpClass."""

    tmpdir = None
    bus = None
    daemon = None
    polkit = None

    @classmethod
    def make_env(cls, activation_args=None, daemon_args=None, with_polkit=False,
                 start_daemon=True):
        cls.tmpdir = tempfile.mkdtemp(prefix='vmmd-test-')
        os.chmod(cls.tmpdir, 0o755)  # uid nobody reaches the bus socket
        cls.bus = Bus(cls.tmpdir, activation_args)
        if with_polkit:
            cls.polkit = Polkit(cls.bus)
        if start_daemon:
            cls.daemon = Daemon(cls.bus, daemon_args or ())
        guest = os.environ.get('VMMD_TEST_GUEST')
        if guest and os.path.exists(guest):
            cls.kernel = guest
        else:
            cls.kernel = os.path.join(cls.tmpdir, 'pvh.elf')
            make_pvh_elf(cls.kernel)

    @classmethod
    def tearDownClass(cls):
        failed = getattr(cls, '_failed', False)
        if cls.bus and (failed or os.environ.get('VMMD_TEST_VERBOSE')):
            print('--- bus log (with bus-activated vmmd) ---\n' + cls.bus.read_log(),
                  file=sys.stderr)
            if cls.daemon:
                print('--- vmmd log ---\n' + cls.daemon.read_log(), file=sys.stderr)
        for o in (cls.daemon, cls.polkit):
            if o:
                o.close()
        if cls.bus:
            cls.bus.close()
        if cls.tmpdir and not failed:
            shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def run(self, result=None):
        result = super().run(result)
        if result and (result.failures or result.errors):
            type(self)._failed = True
        return result

    # --- helpers ---

    def config(self, name='vm', **over):
        c = {
            'vcpus': 1,
            'memory_mib': 32,
            'kernel': self.kernel,
            'cmdline': 'work=idle hb=100',
            'serial': {'mode': 'file', 'path': os.path.join(self.tmpdir, f'{name}.console')},
        }
        c.update(over)
        return json.dumps(c)

    def manager(self):
        return dbus.Interface(self.bus.conn.get_object(BUS_NAME, MANAGER_PATH, introspect=False), MANAGER_IFACE)

    def vm(self, path, iface=VM_IFACE):
        return dbus.Interface(self.bus.conn.get_object(BUS_NAME, path, introspect=False), iface)

    def props(self, path):
        return self.vm(path, PROPS_IFACE).GetAll(VM_IFACE)

    def prop(self, path, name, iface=VM_IFACE):
        return self.vm(path, PROPS_IFACE).Get(iface, name)

    def create(self, name='vm', **over):
        return str(self.manager().CreateVM(name, self.config(name, **over)))

    def assertDBusError(self, name, fn, *args, **kwargs):
        with self.assertRaises(dbus.exceptions.DBusException) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.get_dbus_name(), name, cm.exception.get_dbus_message())
        return cm.exception.get_dbus_message()

    def assertServing(self):
        """The daemon still answers (after a bad call)."""
        self.manager().ListVMs()
        if self.daemon:
            self.assertTrue(self.daemon.alive(), 'vmmd died')

    def busctl(self, *args, user=None, check=False):
        cmd = ['busctl', f'--address={self.bus.address}'] + list(args)
        if user:
            cmd = as_user(cmd, user)
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)

    def vmmctl(self, *args, user=None, stdin=None):
        cmd = [env_path('VMMCTL_BIN'), f'--address={self.bus.address}'] + list(args)
        if user:
            cmd = as_user(cmd, user)
        return subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=120)


def main():
    r = unittest.main(verbosity=2, exit=False)
    res = r.result
    if res.failures or res.errors:
        sys.exit(1)
    if res.testsRun > 0 and len(res.skipped) == res.testsRun:
        sys.exit(EXIT_SKIP)
    sys.exit(0)
