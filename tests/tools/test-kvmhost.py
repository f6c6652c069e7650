#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The host-KVM detection and the test routing of tools/kvmhost.py, fed the signals of
every kind of host the test command meets (and gather() run against fake /sys and
/proc trees, and against this host's real ones)."""
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import kvmhost as k  # noqa: E402

OK = {"node": True, "open": "ok", "api": 12, "create_vm": "ok"}


def sig(**kw):
    s = {"node": False, "open": None, "api": None, "create_vm": None, "modules": [], "cpu_flags": []}
    s.update(kw)
    return s


class Classify(unittest.TestCase):
    def test_no_node(self):
        self.assertEqual(k.classify(sig())[0], k.NONE)

    def test_node_that_does_not_open(self):
        kind, why = k.classify(sig(node=True, open="EACCES", modules=["kvm"]))
        self.assertEqual(kind, k.UNUSABLE)
        self.assertIn("EACCES", why)

    def test_node_that_cannot_create_a_vm(self):
        # The kvm_pvm of a host that is itself a kvm_pvm guest: the node is there, the
        # module loaded, but KVM_CREATE_VM fails.
        kind, why = k.classify(sig(node=True, open="ok", api=12, create_vm="ENODEV",
                                   modules=["kvm", "kvm_pvm"], cpu_flags=["hypervisor"]))
        self.assertEqual(kind, k.UNUSABLE)
        self.assertIn("KVM_CREATE_VM", why)

    def test_wrong_api(self):
        self.assertEqual(k.classify(sig(node=True, open="ok", api=11, create_vm="ok"))[0], k.UNUSABLE)

    def test_pvm(self):
        s = sig(**OK, modules=["kvm", "kvm_pvm"], cpu_flags=["hypervisor"])
        self.assertEqual(k.classify(s)[0], k.PVM)

    def test_vmx(self):
        s = sig(**OK, modules=["kvm", "kvm_intel"], cpu_flags=["vmx"])
        self.assertEqual(k.classify(s)[0], k.HW_VMX)

    def test_svm(self):
        # What the nested VM of tests/nested/ is: kvm_amd on an emulated SVM CPU.
        s = sig(**OK, modules=["kvm", "kvm_amd"], cpu_flags=["svm", "hypervisor"])
        self.assertEqual(k.classify(s)[0], k.HW_SVM)

    def test_vendor_module_without_the_cpu_flag(self):
        s = sig(**OK, modules=["kvm", "kvm_intel"], cpu_flags=["hypervisor"])
        self.assertEqual(k.classify(s)[0], k.UNKNOWN)


class Route(unittest.TestCase):
    KINDS = [k.NONE, k.UNUSABLE, k.PVM, k.HW_VMX, k.HW_SVM, k.UNKNOWN]

    def where(self, kind, suites, mode="auto"):
        return k.route(kind, suites, mode)[0]

    def test_unit_and_dbus_run_here_everywhere(self):
        for kind in self.KINDS:
            for mode in ("auto", "always", "never"):
                self.assertEqual(self.where(kind, ["unit"], mode), k.HOST)
                self.assertEqual(self.where(kind, ["dbus"], mode), k.HOST)

    def test_kvm_suite(self):
        for kind in (k.PVM, k.HW_VMX, k.HW_SVM, k.UNKNOWN):
            self.assertEqual(self.where(kind, ["dbus", "kvm"]), k.HOST, kind)
        for kind in (k.NONE, k.UNUSABLE):
            self.assertEqual(self.where(kind, ["kvm"]), k.NESTED, kind)

    def test_linux_suite_needs_hardware(self):
        self.assertEqual(self.where(k.HW_VMX, ["linux"]), k.HOST)
        self.assertEqual(self.where(k.HW_SVM, ["linux"]), k.HOST)
        # kvm_pvm emulates ring 0: a stock kernel goes to the nested VM there too.
        for kind in (k.PVM, k.UNKNOWN, k.NONE, k.UNUSABLE):
            self.assertEqual(self.where(kind, ["linux"]), k.NESTED, kind)
        # A test in kvm and linux is routed by linux.
        self.assertEqual(self.where(k.PVM, ["kvm", "linux"]), k.NESTED)

    def test_always_forces_the_nested_vm(self):
        for kind in self.KINDS:
            self.assertEqual(self.where(kind, ["kvm"], "always"), k.NESTED, kind)
            self.assertEqual(self.where(kind, ["linux"], "always"), k.NESTED, kind)

    def test_never(self):
        self.assertEqual(self.where(k.NONE, ["kvm"], "never"), k.HOST)  # it exits 77 there
        self.assertEqual(self.where(k.PVM, ["linux"], "never"), k.SKIP)
        self.assertEqual(self.where(k.HW_VMX, ["linux"], "never"), k.HOST)


class Gather(unittest.TestCase):
    def test_fake_trees(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "sys", "kvm_amd"))
            os.makedirs(os.path.join(d, "sys", "kvm"))
            with open(os.path.join(d, "cpuinfo"), "w") as f:
                f.write("processor\t: 0\nflags\t\t: fpu sse2 svm npt hypervisor\n")
            s = k.gather(dev=os.path.join(d, "kvm"), sysmod=os.path.join(d, "sys"),
                         cpuinfo=os.path.join(d, "cpuinfo"))
            self.assertFalse(s["node"])
            self.assertEqual(sorted(s["modules"]), ["kvm", "kvm_amd"])
            self.assertEqual(s["cpu_flags"], ["hypervisor", "svm"])
            self.assertEqual(k.classify(s)[0], k.NONE)
            # A regular file where the node should be is no device.
            open(os.path.join(d, "kvm"), "w").close()
            s = k.gather(dev=os.path.join(d, "kvm"), sysmod=os.path.join(d, "sys"),
                         cpuinfo=os.path.join(d, "cpuinfo"))
            self.assertFalse(s["node"])

    def test_this_host(self):
        s = k.gather()
        kind, why = k.classify(s)
        print("# this host: %s (%s)" % (kind, why))
        self.assertIn(kind, Route.KINDS)
        self.assertEqual(s["node"], os.path.exists("/dev/kvm"))
        if kind in (k.PVM, k.HW_VMX, k.HW_SVM, k.UNKNOWN):
            self.assertEqual(s["create_vm"], "ok")


if __name__ == "__main__":
    unittest.main(verbosity=2)
