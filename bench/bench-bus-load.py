#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A migration's rate with and without 20 bus clients reading the job as fast as they can.

One vmmd on a private bus (tests/dbus/vmmd_test.py) runs the test guest (work=verify over
a working set, so there is data to send) and migrates it to itself over a unix socket;
runs alternate between unloaded and loaded, where 20 client processes each read all the
Job's properties and call GetJobStats(0) in a tight loop for the whole migration. Prints
each run's rate (the source job's final Rate: bytes over the whole job) and the daemon's
RSS before and after the loaded runs, and the loaded/unloaded ratio of the median rates.
Clients run at the daemon's priority (CLIENT_NICE=1: at nice 19, where on a busy 2-core
machine they starve and the load vanishes): on 2 cores, 20 busy client processes take CPU
from the migration itself, so the figure measures the scheduler as much as the daemon. Each run also prints the CPU time of the daemon's event
loop thread. Asserts nothing.

  VMMD_BIN=... VMMCTL_BIN=... VMMD_TEST_BUS_CONF=... VMMD_BUS_POLICY=... VMMD_TEST_GUEST=... \\
  /usr/bin/python3 bench/bench-bus-load.py [RUNS] [MEM_MIB] [WORKING_SET_MIB]
"""

import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'dbus'))

import dbus  # noqa: E402

from vmmd_test import JOB_IFACE, VmmdTestCase, wait_until  # noqa: E402

CLIENTS = 20
CLIENT = r'''
import dbus, sys, time
c = dbus.bus.BusConnection(sys.argv[1])
job = c.get_object('org.vmmd.VMM1', sys.argv[2], introspect=False)
vm = c.get_object('org.vmmd.VMM1', sys.argv[3], introspect=False)
n = 0
end = time.monotonic() + 120
while time.monotonic() < end:
    try:
        p = job.GetAll('org.vmmd.VMM1.Job', dbus_interface='org.freedesktop.DBus.Properties')
        vm.GetJobStats(dbus.UInt32(0), dbus_interface='org.vmmd.VMM1.VM')
    except dbus.exceptions.DBusException:
        break
    n += 1
    if str(p['State']) in ('completed', 'failed', 'cancelled'):
        break
print(n, flush=True)
'''


def rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def loop_cpu_ms(pid):
    """CPU time of the daemon's main thread (its event loop), ms."""
    with open(f'/proc/{pid}/task/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf('SC_CLK_TCK')


class Bench(VmmdTestCase):
    runs, mem, ws = 3, 1024, 512
    nice = os.environ.get('CLIENT_NICE', '0') != '0'

    def test_bench(self):
        self.make_env()
        try:
            self.bench()
        finally:
            type(self).tearDownClass()

    def migrate(self, i, loaded):
        name = f'r{i}'
        src = self.create(f'{name}src', memory_mib=self.mem, cmdline=f'work=verify mib={self.ws} hb=100')
        self.vm(src).Start()
        time.sleep(3)  # the guest fills its working set
        sock = os.path.join(self.tmpdir, f'{name}.sock')
        dvm, djob = self.manager().ReceiveMigration(f'{name}dst', f'unix:{sock}',
                                                    dbus.Dictionary({}, signature='sv'))
        job = str(self.vm(src).Migrate(f'unix:{sock}', dbus.Dictionary({}, signature='sv')))
        clients = []
        if loaded:
            clients = [subprocess.Popen(['/usr/bin/python3', '-c', CLIENT, self.bus.address, job, src],
                                        stdout=subprocess.PIPE, text=True,
                                        preexec_fn=(lambda: os.nice(19)) if self.nice else None)
                       for _ in range(CLIENTS)]
        loop0 = loop_cpu_ms(self.daemon.proc.pid)
        jp = self.vm(job, 'org.freedesktop.DBus.Properties')
        wait_until(lambda: jp.Get(JOB_IFACE, 'State') in ('completed', 'failed'), 300, 'the job')
        st = self.vm(src).GetJobStats(dbus.UInt32(1 | 2))[1]
        calls = sum(int(c.communicate()[0] or 0) for c in clients)
        loop_ms = loop_cpu_ms(self.daemon.proc.pid) - loop0
        rate = int(st['memory_bps'])
        print(f'run {i} {"loaded  " if loaded else "unloaded"}: {jp.Get(JOB_IFACE, "State")}, '
              f'{int(st["data_processed"]) >> 20} MiB in {int(st["time_elapsed"])} ms, rate '
              f'{rate / (1 << 20):.0f} MiB/s' + (f', {calls} client round trips' if loaded else '')
              + f', event loop thread CPU {loop_ms} ms',
              flush=True)
        self.vm(str(dvm)).Stop()
        for v in (src, str(dvm)):
            wait_until(lambda: str(self.prop(v, 'State')) in ('stopped', 'migrated'), 30, 'stopped')
            self.vm(v).Delete()
        return rate

    def bench(self):
        pid = self.daemon.proc.pid
        unloaded, loaded = [], []
        self.migrate(0, False)  # warm-up
        rss0 = rss_kib(pid)
        for i in range(1, self.runs + 1):
            unloaded.append(self.migrate(2 * i - 1, False))
            loaded.append(self.migrate(2 * i, True))
        rss1 = rss_kib(pid)
        mu, ml = statistics.median(unloaded), statistics.median(loaded)
        print(f'median rate unloaded {mu / (1 << 20):.0f} MiB/s, with {CLIENTS} clients '
              f'{ml / (1 << 20):.0f} MiB/s: {100 * ml / mu:.1f} %', flush=True)
        print(f'vmmd RSS {rss0} KiB after the warm-up, {rss1} KiB after {self.runs} loaded and '
              f'{self.runs} unloaded runs (VMs deleted)', flush=True)


if __name__ == '__main__':
    args = sys.argv[1:]
    sys.argv[1:] = []
    if args:
        Bench.runs = int(args[0])
    if len(args) > 1:
        Bench.mem = int(args[1])
    if len(args) > 2:
        Bench.ws = int(args[2])
    import unittest
    unittest.main(verbosity=1)
