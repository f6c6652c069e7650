#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Live-migrates the test guest between two QEMU processes (KVM, same host, unix socket)
and prints QEMU's own figures (query-migrate): total time, downtime, bytes, throughput.
The peer bench/run.sh compares vmmd against. Needs qemu-system-x86 and /dev/kvm.

  qemu-migrate.py GUEST_ELF MEM_MIB "CMDLINE" [RUNS] [WARMUP_S]
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


class Qmp:
    def __init__(self, path):
        for _ in range(200):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError('no QMP socket ' + path)
        self.f = self.s.makefile('rw')
        json.loads(self.f.readline())  # greeting
        self.cmd('qmp_capabilities')

    def cmd(self, name, **args):
        self.f.write(json.dumps({'execute': name, 'arguments': args}) + '\n')
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if 'return' in msg:
                return msg['return']
            if 'error' in msg:
                raise RuntimeError(f"{name}: {msg['error']}")


def qemu(tmp, name, guest, mem, cmdline, incoming):
    qmp = os.path.join(tmp, name + '.qmp')
    args = ['qemu-system-x86_64', '-machine', 'q35,accel=kvm', '-cpu', 'host', '-m', str(mem),
            '-display', 'none', '-serial', 'none', '-monitor', 'none', '-nodefaults',
            '-kernel', guest, '-append', cmdline, '-qmp', f'unix:{qmp},server=on,wait=off']
    if incoming:
        args += ['-incoming', 'defer']
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return p, Qmp(qmp)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    guest, mem, cmdline = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    warmup = float(sys.argv[5]) if len(sys.argv) > 5 else 3
    if not shutil.which('qemu-system-x86_64'):
        print('SKIP: qemu-system-x86_64 is not installed')
        sys.exit(77)
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        print('SKIP: no usable /dev/kvm')
        sys.exit(77)
    print(f'qemu-migrate: {mem} MiB guest, "{cmdline}", QEMU '
          + subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True)
          .stdout.split('\n')[0])
    totals, downs, sent = [], [], []
    for run in range(runs):
        tmp = tempfile.mkdtemp(prefix='qemu-mig-')
        src, sq = qemu(tmp, 'src', guest, mem, cmdline, False)
        dst, dq = qemu(tmp, 'dst', guest, mem, cmdline, True)
        try:
            time.sleep(warmup)
            uri = 'unix:' + os.path.join(tmp, 'mig.sock')
            dq.cmd('migrate-incoming', uri=uri)
            # Lift QEMU's 128 MiB/s default: compare the engines, not the defaults.
            sq.cmd('migrate-set-parameters', **{'max-bandwidth': 100 << 30, 'downtime-limit': 300})
            sq.cmd('migrate', uri=uri)
            while True:
                st = sq.cmd('query-migrate')
                if st.get('status') in ('completed', 'failed', 'cancelled'):
                    break
                time.sleep(0.02)
            if st['status'] != 'completed':
                print(f'run {run + 1}: {st["status"]}: {st.get("error-desc", "")}')
                sys.exit(1)
            ram = st.get('ram', {})
            total, down = st['total-time'], st['downtime']
            b = ram.get('total', 0) and ram.get('transferred', 0)
            print(f'run {run + 1}: total {total} ms, downtime {down * 1000} us, {b >> 20} MiB sent, '
                  f'{(b / total * 1000 if total else 0) / (1 << 20):.0f} MiB/s, '
                  f'{ram.get("dirty-sync-count", 0)} dirty syncs, {ram.get("duplicate", 0)} zero + '
                  f'{ram.get("normal", 0)} data pages')
            totals.append(total)
            downs.append(down)
            sent.append(b)
        finally:
            for p in (src, dst):
                p.kill()
                p.wait()
            shutil.rmtree(tmp, ignore_errors=True)
    n = len(totals)
    print(f'mean of {n}: total {sum(totals) // n} ms, downtime {sum(downs) * 1000 // n} us, '
          f'{(sum(sent) // n) >> 20} MiB sent, throughput '
          f'{(sum(sent) / n) / (sum(totals) / n) * 1000 / (1 << 20):.0f} MiB/s')


if __name__ == '__main__':
    main()
