#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The whole test suite (tools/run-tests.sh runs this after installing what is missing).

Parts, in this order (VMMD_TEST_PARTS=plain,asan,tsan,fuzz picks some):
  plain  gcc, -Werror: every meson test.
  asan   gcc, ASan+UBSan (halt_on_error=1): the unit, D-Bus and engine tests.
  tsan   clang, ThreadSanitizer: the threaded engine tests (tests/migration).
  fuzz   clang, libFuzzer + ASan+UBSan: every fuzz target for VMMD_FUZZ_SECONDS (60) from
         its seed corpus in tests/fuzz/corpus/NAME/.
Each test is routed by what it needs (tools/kvmhost.py): on this host, or in the nested
VM of tests/nested/ (QEMU TCG with emulated SVM) where this host's KVM cannot run it.

Accounting: every test of every part is counted once, by its last attempt. A test that
fails is run once more (in a fresh nested VM when it ran there); if it passes then it is
"flaky": counted as passed, named below the closing line, and more than one flaky test
fails the run. A nested VM that hangs or dies is started again (3 VMs at most) for the
tests that had no result yet; the test that was running when it hung has had its try,
and one that never reports a result is failed. A skip of every test of the kvm or
linux suite fails the run unless VMMD_ALLOW_SKIP names that suite.

Environment: VMMD_NESTED=auto|always|never, VMMD_ALLOW_SKIP=kvm,linux,
VMMD_TEST_PARTS, VMMD_FUZZ_SECONDS, VMMD_NESTED_TIMEOUT (s per nested VM, 1500),
VMMD_NESTED_STALL_S (180), MESON_TEST_ARGS (extra arguments for every meson test).
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(top, "tools"))
import kvmhost  # noqa: E402

PASS = ("OK", "EXPECTEDFAIL")


def say(msg):
    print(msg, flush=True)


def env_list(name, default):
    v = os.environ.get(name)
    return [x for x in (v if v is not None else default).replace(" ", ",").split(",") if x]


class Part:
    def __init__(self, name, builddir, cc, options, select, setup=None, env=None):
        self.name, self.builddir, self.cc, self.options = name, builddir, cc, options
        self.select, self.setup, self.env = select, setup, env or {}


def parts_for(builddir):
    san_env = {"ASAN_OPTIONS": "halt_on_error=1:abort_on_error=1:detect_leaks=1",
               "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    return [
        Part("plain", builddir, "gcc", ["-Dtests=enabled", "-Dwerror=true"],
             lambda t: "fuzz" not in t["suites"]),
        Part("asan", builddir + "-asan", "gcc",
             ["-Dtests=enabled", "-Dwerror=true", "-Db_sanitize=address,undefined", "-Db_lundef=false"],
             lambda t: ({"unit", "dbus"} & set(t["suites"]) or t["name"] == "migration")
             and "linux" not in t["suites"], setup="asan"),
        Part("tsan", builddir + "-tsan", "clang",
             ["-Dtests=enabled", "-Dwerror=true", "-Db_sanitize=thread", "-Db_lundef=false"],
             lambda t: t["name"] == "migration", setup="tsan"),
        Part("fuzz", builddir + "-fuzz", "clang",
             ["-Dtests=enabled", "-Dwerror=true", "-Dfuzz=true", "-Db_sanitize=address,undefined",
              "-Db_lundef=false"],
             None, env=san_env),
    ]


def run(cmd, env=None, **kw):
    say("+ " + " ".join(shlex.quote(c) for c in cmd))
    return subprocess.run(cmd, env=env, **kw).returncode


def build(part):
    bd = os.path.join(top, part.builddir)
    if not os.path.exists(os.path.join(bd, "build.ninja")):
        env = dict(os.environ, CC=part.cc)
        if run(["meson", "setup", bd] + part.options, env=env) != 0:
            return False
    return run(["ninja", "-C", bd]) == 0


def meson_tests(part):
    out = subprocess.run(["meson", "introspect", os.path.join(top, part.builddir), "--tests"],
                         capture_output=True, text=True, check=True).stdout
    tests = []
    for t in json.loads(out):
        suites = [s.split(":", 1)[-1] for s in t["suite"]]
        tests.append({"name": t["name"], "suites": suites})
    return tests


def read_log(path):
    """Test name -> meson result, from a meson JSON test log."""
    res = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    t = json.loads(line)
                    res[t["name"].split(" / ")[-1]] = t.get("result")
    except (OSError, ValueError):
        pass
    return res


class Results:
    def __init__(self):
        self.final = {}      # "part/test" -> PASS|FAIL|SKIP
        self.why = {}        # "part/test" -> text for failures and flaky ones
        self.flaky = {}      # "part/test" -> what needed the retry
        self.order = []

    def known(self, key):
        if key not in self.order:
            self.order.append(key)

    def set(self, key, result, why=""):
        self.known(key)
        self.final[key] = result
        if why:
            self.why[key] = why


def meson_cmd(part, names, logbase):
    cmd = ["meson", "test", "-C", os.path.join(top, part.builddir), "--no-rebuild",
           "--print-errorlogs", "--logbase", logbase]
    if part.setup:
        cmd += ["--setup", part.setup]
    return cmd + shlex.split(os.environ.get("MESON_TEST_ARGS", "")) + names


def logpath(part, logbase):
    # meson appends the name of a test setup other than the default to the log's name
    suffix = "-" + part.setup if part.setup else ""
    return os.path.join(top, part.builddir, "meson-logs", logbase + suffix + ".json")


def unlink_quiet(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def classify_result(r):
    if r in PASS:
        return "PASS"
    if r == "SKIP":
        return "SKIP"
    return "FAIL"


def run_host(part, names, res):
    """Runs tests on this host; a failed one runs once more."""
    if not names:
        return
    logbase = "testlog-%s-host" % part.name
    unlink_quiet(logpath(part, logbase))
    run(meson_cmd(part, names, logbase))
    got = read_log(logpath(part, logbase))
    again = []
    for n in names:
        key = "%s/%s" % (part.name, n)
        r = got.get(n)
        if r is None:
            res.set(key, "FAIL", "no result from meson")
        elif classify_result(r) == "FAIL":
            again.append(n)
            res.why[key] = "failed once (%s)" % r
        else:
            res.set(key, classify_result(r))
    if again:
        say("=== %s: %s failed; running %s once more" % (part.name, " ".join(again),
                                                        "it" if len(again) == 1 else "them"))
        logbase += "-retry"
        unlink_quiet(logpath(part, logbase))
        run(meson_cmd(part, again, logbase))
        got = read_log(logpath(part, logbase))
        for n in again:
            key = "%s/%s" % (part.name, n)
            r = got.get(n)
            if r is not None and classify_result(r) != "FAIL":
                res.set(key, classify_result(r))
                res.flaky[key] = res.why.get(key, "failed once")
            else:
                res.set(key, "FAIL", "failed twice (%s)" % (r or "no result"))


def run_nested(groups, res, builddir):
    """groups: [(part, [names])]. Each test runs in its own meson call inside the VM, so
    a VM that hangs tells which test it was running."""
    budget = os.environ.get("VMMD_NESTED_TIMEOUT", "1500")
    stall = os.environ.get("VMMD_NESTED_STALL_S", "180")
    pending = [(p, n) for p, names in groups for n in names]
    tried = set()            # keys that have had a try that ended without a pass
    ctl = os.path.join(top, builddir, "nested-run")
    for vm in range(1, 4):
        if not pending:
            return
        shutil.rmtree(ctl, ignore_errors=True)
        os.makedirs(ctl)
        lines = ["#!/bin/bash", "# generated by tools/run-tests.py: one meson test per test",
                 "cd %s || exit 125" % shlex.quote(top)]
        for i, (p, n) in enumerate(pending):
            logbase = "testlog-%s-nested-%d-%d" % (p.name, vm, i)
            unlink_quiet(logpath(p, logbase))
            marker = os.path.join(ctl, "started-%d" % i)
            lines.append("touch %s" % shlex.quote(marker))
            lines.append(" ".join(shlex.quote(c) for c in meson_cmd(p, [n], logbase)) + " || true")
        lines.append("exit 0")
        script = os.path.join(ctl, "run.sh")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        say("=== nested VM %d of 3 for %d test(s): %s" % (
            vm, len(pending), " ".join("%s/%s" % (p.name, n) for p, n in pending)))
        t0 = time.monotonic()
        rc = run(["bash", os.path.join(top, "tests/nested/run-in-vm.sh"), "--timeout", budget,
                  "--stall", stall, "--", "bash", script])
        say("=== nested VM %d ended with exit %d after %.0f s" % (vm, rc, time.monotonic() - t0))
        still = []
        for i, (p, n) in enumerate(pending):
            key = "%s/%s" % (p.name, n)
            res.known(key)
            r = read_log(logpath(p, "testlog-%s-nested-%d-%d" % (p.name, vm, i))).get(n)
            started = os.path.exists(os.path.join(ctl, "started-%d" % i))
            if r is not None and classify_result(r) != "FAIL":
                res.set(key, classify_result(r))
                if key in tried:
                    res.flaky[key] = res.why.get(key, "needed another try")
                continue
            if r is not None:                   # it failed
                why = "failed (%s) in nested VM %d" % (r, vm)
            elif started:                       # the VM hung or died while it ran
                why = "no result: nested VM %d hung or died while it ran (exit %d)" % (vm, rc)
            else:                               # never started: no try used
                res.why.setdefault(key, "not run: nested VM %d ended first" % vm)
                still.append((p, n))
                continue
            if key in tried:
                res.set(key, "FAIL", res.why.get(key, "") + "; then " + why)
            else:
                tried.add(key)
                res.why[key] = why
                still.append((p, n))
        pending = still
    for p, n in pending:
        key = "%s/%s" % (p.name, n)
        res.set(key, "FAIL", res.why.get(key, "") + "; no nested VM left to run it")


def run_fuzz(part, res, seconds):
    bd = os.path.join(top, part.builddir, "tests", "fuzz")
    targets = sorted(f for f in os.listdir(bd) if f.startswith("fuzz-") and
                     os.access(os.path.join(bd, f), os.X_OK) and
                     os.path.isfile(os.path.join(bd, f)))
    env = dict(os.environ, **part.env)
    work = tempfile.mkdtemp(prefix="vmmd-fuzz-")
    procs = []
    try:
        for t in targets:
            name = t[len("fuzz-"):]
            corpus = os.path.join(work, name)
            seeds = os.path.join(top, "tests", "fuzz", "corpus", name)
            if os.path.isdir(seeds):
                shutil.copytree(seeds, corpus)
            else:
                os.makedirs(corpus)
            cmd = [os.path.join(bd, t), "-max_total_time=%d" % seconds, "-timeout=20",
                   "-rss_limit_mb=2048", "-print_final_stats=1", "-artifact_prefix=%s/" % work,
                   corpus]
            procs.append((t, cmd, os.path.isdir(seeds)))
        # Two at a time: this machine kind has two cores.
        running = []
        queue = list(procs)
        while queue or running:
            while queue and len(running) < 2:
                t, cmd, seeded = queue.pop(0)
                log = open(os.path.join(work, t + ".log"), "w")
                say("+ " + " ".join(cmd))
                running.append((t, seeded, subprocess.Popen(cmd, env=env, stdout=log, stderr=log), log))
            time.sleep(0.5)
            for item in list(running):
                t, seeded, p, log = item
                if p.poll() is None:
                    continue
                running.remove(item)
                log.close()
                text = open(os.path.join(work, t + ".log")).read()
                key = "fuzz/" + t
                stats = [ln for ln in text.splitlines() if ln.startswith("stat::number_of_executed_units")]
                execs = stats[-1].split(":")[-1].strip() if stats else "?"
                if p.returncode == 0 and seeded:
                    res.set(key, "PASS")
                    say("fuzz: %s: %s runs in %d s, no report" % (t, execs, seconds))
                else:
                    tail = "\n".join(text.splitlines()[-60:])
                    say("fuzz: %s FAILED (exit %d)%s:\n%s" % (
                        t, p.returncode, "" if seeded else ", no seed corpus", tail))
                    res.set(key, "FAIL", "exit %d%s" % (p.returncode, "" if seeded else ", no seed corpus"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    builddir = sys.argv[1] if len(sys.argv) > 1 else "build"
    nested_mode = os.environ.get("VMMD_NESTED", "auto")
    if nested_mode not in ("auto", "always", "never"):
        say("run-tests: VMMD_NESTED must be auto, always or never, not %r" % nested_mode)
        return 2
    allow_skip = set(env_list("VMMD_ALLOW_SKIP", ""))
    want = env_list("VMMD_TEST_PARTS", "plain,asan,tsan,fuzz")
    fuzz_s = int(os.environ.get("VMMD_FUZZ_SECONDS", "60"))

    signals = kvmhost.gather()
    kind, why = kvmhost.classify(signals)
    say("=== host KVM: %s (%s); VMMD_NESTED=%s" % (kind, why, nested_mode))
    say("=== signals: %s" % json.dumps(signals, sort_keys=True))

    res = Results()
    timings = []
    nested_groups = []
    status = 0
    suites_of = {}

    # Fetch the Debian kernel for the linux suite here, where the archive is reachable.
    if subprocess.run([os.path.join(top, "tests/linux/fetch-vmlinux.sh")],
                      stdout=subprocess.DEVNULL).returncode != 0:
        say("=== no Debian kernel package: the linux tests will skip")

    for part in parts_for(builddir):
        if part.name not in want:
            continue
        t0 = time.monotonic()
        say("=== part %s: building %s (%s)" % (part.name, part.builddir, part.cc))
        if not build(part):
            res.set("%s/build" % part.name, "FAIL", "the build failed")
            timings.append((part.name, time.monotonic() - t0))
            continue
        if part.name == "fuzz":
            run_fuzz(part, res, fuzz_s)
            timings.append((part.name, time.monotonic() - t0))
            continue
        host, nested = [], []
        for t in meson_tests(part):
            if not part.select(t):
                continue
            key = "%s/%s" % (part.name, t["name"])
            suites_of[key] = t["suites"]
            res.known(key)
            where, reason = kvmhost.route(kind, t["suites"], nested_mode)
            if where == kvmhost.HOST:
                host.append(t["name"])
            elif where == kvmhost.NESTED:
                nested.append(t["name"])
            else:
                res.set(key, "SKIP", reason)
                say("=== %s: skipped: %s" % (key, reason))
        if nested:
            say("=== part %s: nested VM: %s" % (part.name, " ".join(nested)))
            nested_groups.append((part, nested))
        run_host(part, host, res)
        timings.append((part.name, time.monotonic() - t0))

    if nested_groups:
        t0 = time.monotonic()
        run_nested(nested_groups, res, builddir)
        timings.append(("nested", time.monotonic() - t0))

    # A whole suite that skipped ran nothing: that is a failure unless asked for.
    for suite in ("kvm", "linux"):
        keys = [k for k in res.order if k.startswith("plain/") and suite in suites_of.get(k, [])]
        if keys and all(res.final.get(k) == "SKIP" for k in keys) and suite not in allow_skip:
            say("=== every test of the %s suite skipped (%s): failing the run; "
                "VMMD_ALLOW_SKIP=%s accepts that" % (suite, res.why.get(keys[0], "exit 77"), suite))
            res.set("suite-%s" % suite, "FAIL", "every test skipped")

    say("")
    say("=== time per part: " + ", ".join("%s %.0f s" % (n, s) for n, s in timings))
    failed = [k for k in res.order if res.final.get(k, "FAIL") == "FAIL"]
    for k in failed:
        say("FAILED: %s: %s" % (k, res.why.get(k, "")))
    for k in res.order:
        if res.final.get(k) == "SKIP":
            say("skipped: %s%s" % (k, (": " + res.why[k]) if k in res.why else ""))
    n_pass = sum(res.final.get(k) == "PASS" for k in res.order)
    n_skip = sum(res.final.get(k) == "SKIP" for k in res.order)
    n_fail = len(res.order) - n_pass - n_skip
    if len(res.flaky) > 1:
        status = 1
    if n_fail:
        status = 1
    say("%d passed, %d failed, %d skipped" % (n_pass, n_fail, n_skip))
    for k, w in res.flaky.items():
        say("flaky: %s (%s; passed when run again)" % (k, w))
    if len(res.flaky) > 1:
        say("more than one flaky test: the run fails")
    return status


if __name__ == "__main__":
    sys.exit(main())
