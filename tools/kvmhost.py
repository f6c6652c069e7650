# SPDX-License-Identifier: LGPL-2.1-or-later
"""What this host's KVM is, and where each test suite runs because of it.

The test command (tools/run-tests.sh) asks this once. Machines of our kind differ: some
have no /dev/kvm, some have one that cannot be used, some have kvm_pvm (software
virtualization inside a cloud VM: guest ring 3 runs natively, guest ring 0 goes through
KVM's instruction emulator at about a million instructions a second), and some have
hardware VMX/SVM. The classification is a pure function of the signals gathered here, so
tests/tools/test-kvmhost.py can feed it the signals of every host kind.

    python3 tools/kvmhost.py            prints the kind and the signals
    python3 tools/kvmhost.py --kind     prints only the kind
"""
import errno
import fcntl
import json
import os
import stat
import sys

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12

# Host kinds.
NONE = "none"              # no /dev/kvm
UNUSABLE = "unusable"      # /dev/kvm exists but cannot be opened or cannot create a VM
PVM = "kvm_pvm"            # software virtualization: ring 0 emulated
HW_VMX = "hardware-vmx"    # kvm_intel on a CPU with VMX
HW_SVM = "hardware-svm"    # kvm_amd on a CPU with SVM
UNKNOWN = "unknown"        # a working KVM whose kind we cannot tell

# Suites, from the least to the most demanding. A test in several suites is routed by
# its most demanding one.
#   kvm:   our own test guest (ring-3 workloads): runs wherever KVM works.
#   linux: a stock Linux kernel, whose ring 0 must run at speed: hardware KVM only, so
#          the nested VM (tests/nested/) wherever the host's KVM is not hardware.
SUITE_RANK = {"linux": 2, "kvm": 1}

HOST = "host"
NESTED = "nested"
SKIP = "skip"


def gather(dev="/dev/kvm", sysmod="/sys/module", cpuinfo="/proc/cpuinfo"):
    """Reads the signals of this host: the device node, whether it opens and creates a VM,
    the loaded KVM modules and the CPU's virtualization flags."""
    s = {"node": False, "open": None, "api": None, "create_vm": None,
         "modules": [], "cpu_flags": []}
    for m in ("kvm", "kvm_pvm", "kvm_intel", "kvm_amd"):
        if os.path.isdir(os.path.join(sysmod, m)):
            s["modules"].append(m)
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    s["cpu_flags"] = sorted(flags & {"vmx", "svm", "hypervisor"})
                    break
    except OSError:
        pass
    try:
        st = os.stat(dev)
    except OSError:
        return s
    s["node"] = stat.S_ISCHR(st.st_mode)
    if not s["node"]:
        return s
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        s["open"] = errno.errorcode.get(e.errno, str(e.errno))
        return s
    s["open"] = "ok"
    try:
        s["api"] = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
        s["create_vm"] = "ok"
    except OSError as e:
        s["create_vm"] = errno.errorcode.get(e.errno, str(e.errno))
    finally:
        os.close(fd)
    return s


def classify(s):
    """The host kind and a reason a person can read, from gather()'s signals."""
    if not s.get("node"):
        return NONE, "no /dev/kvm"
    if s.get("open") != "ok":
        return UNUSABLE, "/dev/kvm does not open (%s)" % s.get("open")
    if s.get("api") != KVM_API_VERSION:
        return UNUSABLE, "KVM API version %s, not %d" % (s.get("api"), KVM_API_VERSION)
    if s.get("create_vm") != "ok":
        return UNUSABLE, "KVM_CREATE_VM fails (%s)" % s.get("create_vm")
    mods = set(s.get("modules", []))
    flags = set(s.get("cpu_flags", []))
    # Only one vendor module backs /dev/kvm at a time; kvm_pvm needs no VMX/SVM.
    if "kvm_pvm" in mods:
        return PVM, "kvm_pvm loaded (software virtualization, guest ring 0 emulated)"
    if "kvm_intel" in mods and "vmx" in flags:
        return HW_VMX, "kvm_intel on a CPU with VMX"
    if "kvm_amd" in mods and "svm" in flags:
        return HW_SVM, "kvm_amd on a CPU with SVM"
    return UNKNOWN, "KVM works, vendor module unknown (modules: %s)" % ",".join(sorted(mods))


def kvm_usable(kind):
    return kind in (PVM, HW_VMX, HW_SVM, UNKNOWN)


def hardware(kind):
    return kind in (HW_VMX, HW_SVM)


def route(kind, suites, nested_mode="auto"):
    """Where a test of these suites runs on a host of this kind: (HOST|NESTED|SKIP, why).

    nested_mode: "auto" (by what the test needs), "always" (every kvm and linux test in
    the nested VM), "never" (no nested VM: what would need it is skipped, or run here
    where it can only skip)."""
    need = max((SUITE_RANK.get(x, 0) for x in suites), default=0)
    if need == 0:
        return HOST, "needs no KVM"
    if nested_mode == "always":
        return NESTED, "VMMD_NESTED=always"
    if need == SUITE_RANK["kvm"]:
        if kvm_usable(kind):
            return HOST, "KVM works here"
        if nested_mode == "never":
            return HOST, "no usable KVM and VMMD_NESTED=never: it will skip"
        return NESTED, "no usable KVM here"
    # linux
    if hardware(kind):
        return HOST, "hardware KVM"
    if nested_mode == "never":
        return SKIP, "a stock kernel needs hardware KVM or the nested VM; VMMD_NESTED=never"
    return NESTED, "a stock kernel's ring 0 needs hardware KVM (%s here)" % kind


def main(argv):
    s = gather()
    kind, why = classify(s)
    if "--kind" in argv:
        print(kind)
    elif "--json" in argv:
        print(json.dumps({"kind": kind, "reason": why, "signals": s}))
    else:
        print("%s: %s" % (kind, why))
        print("signals: %s" % json.dumps(s, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
