/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The migration engine on real KVM, source and destination in one process: the test guest
 * moves over unix and tcp sockets, with zero-copy on and off, with two connections, while
 * verifying or dirtying its RAM; every failure before the commit (cancel, a vanished
 * destination, a garbled stream, a state the destination refuses in the rehearsal, a timeout,
 * a link lost during the state transfer) leaves
 * the source running; a link lost at the commit or the acknowledgement leaves it in
 * migration-unknown with the guest running in exactly one place. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stdatomic.h>
#include <cmocka.h>

#include "config.h"
#include "console-watch.h"
#include "migration.h"
#include "vm-migration.h"
#include "residency.h"
#include "test-util.h"
#include "vm.h"
#include "wire.h"

static char *guest;
static char tmpdir[] = "/tmp/vmmd-test-mig-XXXXXX";
static int port_base = 47100;

typedef struct Side {
        Vm *vm;
        MigrationJob *job;
        bool finished;
        char console[256];
        bool track_resident;       /* sample resident guest RAM while the job runs */
        uintptr_t ram_base;        /* where its guest RAM was mapped, and its size */
        uint64_t ram_size;
        uint64_t resident_max_mib;
        unsigned resident_samples;
} Side;

static void on_finished(MigrationJob *j, void *userdata) {
        Side *s = userdata;
        s->finished = true;
}

static const MigrationCallbacks callbacks = { .finished = on_finished };

static VmConfig *make_config(const char *console, unsigned mem_mib, const char *cmdline) {
        char *json = NULL, *err = NULL;
        VmConfig *c = NULL;
        assert_true(asprintf(&json,
                             "{\"vcpus\":1,\"memory_mib\":%u,\"kernel\":\"%s\",\"cmdline\":\"%s\","
                             "\"serial\":{\"mode\":\"file\",\"path\":\"%s\"}}",
                             mem_mib, guest, cmdline, console) > 0);
        if (vm_config_parse(json, &c, &err) < 0)
                fail_msg("config rejected: %s", err);
        free(json);
        return c;
}

/* The VMs' build options: tests that want KVM's bitmaps instead of the ring say so. */
static VmOptions vm_options = { .dirty_ring = true, .thp = true };

static void start_source(Side *src, const char *name, unsigned mem_mib, const char *cmdline) {
        snprintf(src->console, sizeof src->console, "%s/%s-src.log", tmpdir, name);
        unlink(src->console);
        /* Each test is well under 5 minutes; a hang prints where it is. */
        hang_watchdog_arm(300);
        hang_watchdog_watch(0, src->console);
        VmConfig *c = make_config(src->console, mem_mib, cmdline);
        assert_int_equal(vm_new(name, c, &src->vm), 0);
        vm_set_options(src->vm, &vm_options);
        vm_config_free(c);
        assert_int_equal(vm_start(src->vm), 0);
        /* Migrate once the workload has been over its working set (first touches are
         * slow, nested above all): a dirtying guest is then at full speed. */
        Heartbeat hb = {};
        uint64_t deadline = now_ms() + 180000;
        do
                assert_true(wait_for_heartbeat(src->console, hb.seq + 1, 60000, &hb));
        while (hb.passes < 1 && now_ms() < deadline);
        assert_true(hb.passes >= 1);
}

static void start_destination(Side *dst, const char *name, const char *uri, uint64_t timeout_s) {
        char overlay[512];
        snprintf(dst->console, sizeof dst->console, "%s/%s-dst.log", tmpdir, name);
        unlink(dst->console);
        hang_watchdog_watch(1, dst->console);
        snprintf(overlay, sizeof overlay, "{\"serial\":{\"mode\":\"file\",\"path\":\"%s\"}}", dst->console);
        IncomingParams ip = { .config_overlay = overlay, .timeout_s = timeout_s };
        assert_int_equal(vm_new_incoming(name, &dst->vm), 0);
        vm_set_options(dst->vm, &vm_options);
        assert_null(vm_get_config(dst->vm));
        assert_int_equal(migration_in_start(dst->vm, uri, &ip, &callbacks, dst, &dst->job), 0);
}

/* MiB of the VM's guest RAM that the host holds for it, in RAM or in swap; 0 once the VM
 * has given its RAM up. A migrated source unmaps its RAM on the migration thread,
 * possibly while this runs, so this takes the mapping's address and size read before
 * the migration began and never touches the VM. */
static uint64_t resident_mib(uintptr_t ram_base, uint64_t ram_size) {
        uint64_t n = 0;
        if (ram_base == 0)
                return 0;
        _cleanup_free_ unsigned char *vec = malloc(ram_size / 4096);
        assert_non_null(vec);
        int64_t r = ram_residency((void *)ram_base, ram_size, vec);
        n = r > 0 ? (uint64_t)r : 0;
        return n * 4096 >> 20;
}

/* Called on the running source right before the migration starts, when set. */
static void (*before_migrate)(Side *src);

static uintptr_t ram_base(Vm *vm, uint64_t *ret_size) {
        uint8_t *base;
        const VmMemoryRegion *regions;
        unsigned n_regions;
        return vm_get_ram(vm, &base, ret_size, &regions, &n_regions) < 0 ? 0 : (uintptr_t)base;
}

/* Runs both owners' event handling until the given jobs finish. */
static void run_until_finished(Side *a, Side *b, unsigned timeout_ms) {
        uint64_t deadline = now_ms() + timeout_ms;
        while ((a && a->job && !a->finished) || (b && b->job && !b->finished)) {
                struct pollfd p[4];
                Side *sides[2] = { a, b };
                int n = 0;
                for (int i = 0; i < 2; i++) {
                        if (!sides[i])
                                continue;
                        if (sides[i]->job)
                                p[n++] = (struct pollfd){ .fd = migration_job_get_event_fd(sides[i]->job), .events = POLLIN };
                        p[n++] = (struct pollfd){ .fd = vm_get_event_fd(sides[i]->vm), .events = POLLIN };
                }
                uint64_t now = now_ms();
                if (now >= deadline)
                        fail_msg("migration did not finish in %u ms", timeout_ms);
                (void)poll(p, (nfds_t)n, (int)MIN(deadline - now, (uint64_t)100));
                for (int i = 0; i < 2; i++) {
                        if (!sides[i])
                                continue;
                        uint64_t mib = sides[i]->track_resident && sides[i]->job && !sides[i]->finished
                                               ? resident_mib(sides[i]->ram_base, sides[i]->ram_size)
                                               : 0;
                        if (mib > 0) {
                                sides[i]->resident_max_mib = MAX(sides[i]->resident_max_mib, mib);
                                sides[i]->resident_samples++;
                        }
                        if (sides[i]->job)
                                migration_job_dispatch(sides[i]->job);
                        vm_dispatch_events(sides[i]->vm);
                }
        }
}

static void side_free(Side *s) {
        s->job = migration_job_free(s->job);
        s->vm = vm_free(s->vm);
}

static void print_stats(const char *what, MigrationJob *j) {
        MigrationStats st;
        migration_job_get_stats(j, &st);
        printf("# %s: %s total %" PRIu64 " ms, downtime %" PRIu64 " us, %" PRIu64 " bytes, rate %" PRIu64
               " MiB/s, %u passes, zero %" PRIu64 " normal %" PRIu64 " pages, throttle %u%%, zerocopy %d\n",
               what, job_state_to_string(st.state), st.elapsed_us / 1000, st.downtime_us, st.bytes_processed,
               st.rate >> 20, st.iteration, st.zero_pages, st.normal_pages, st.throttle_percent, st.zerocopy);
        if (st.downtime_us) {
                printf("#   breakdown:");
                for (int p = 0; p < _DOWNTIME_PHASE_MAX; p++)
                        printf(" %s=%" PRIu64, downtime_phase_to_string(p), st.downtime_breakdown_us[p]);
                printf("\n");
        }
        if (st.error_name[0])
                printf("#   error %s: %s\n", st.error_name, st.error_message);
}

/* Migrates and checks the guest goes on at the destination: consecutive heartbeats,
 * no corrupt page, the verifier still running. */
static void migrate_and_check(const char *name, const char *uri, unsigned mem_mib, const char *cmdline,
                              const MigrationParams *params) {
        Side src = {}, dst = {};
        Heartbeat last_src = {}, hb = {};
        MigrationStats st;

        start_source(&src, name, mem_mib, cmdline);
        printf("# %s: dirty tracking with %s\n", name, vm_dirty_log_method(src.vm));
        start_destination(&dst, name, uri, 60);
        src.ram_base = ram_base(src.vm, &src.ram_size);
        uint64_t resident_before = resident_mib(src.ram_base, src.ram_size);
        if (before_migrate)
                before_migrate(&src);
        src.track_resident = true;
        assert_int_equal(migration_out_start(src.vm, uri, params, &callbacks, &src, &src.job), 0);
        /* A second job on the same VM is refused while one runs. */
        MigrationJob *again = NULL;
        assert_int_equal(migration_out_start(src.vm, uri, params, NULL, NULL, &again), -EBUSY);
        assert_int_equal(vm_pause(src.vm), -EBUSY);

        run_until_finished(&src, &dst, 240000);
        print_stats("source", src.job);
        migration_job_get_stats(src.job, &st);
        if (st.error_message[0]) {
                hang_dump_file("source console", src.console, 1500);
                hang_dump_file("destination console", dst.console, 1500);
        }
        assert_string_equal(st.error_message, "");
        assert_int_equal(st.state, JOB_STATE_COMPLETED);
        assert_int_equal(vm_get_state(src.vm), VM_STATE_MIGRATED);
        /* Sending faults in nothing the guest never touched: zero-copy registers (pins)
         * only the 2 MiB slots that hold sent pages (all of RAM would be mem_mib). */
        printf("# source guest RAM resident: %" PRIu64 " MiB before, at most %" PRIu64
               " MiB in %u samples during the migration (of %u)\n", resident_before, src.resident_max_mib,
               src.resident_samples, mem_mib);
        assert_true(src.resident_samples > 0);
        assert_true(src.resident_max_mib <= resident_before + 16);
        assert_true(st.downtime_us > 0);
        assert_true(st.iteration >= 1);
        /* The rehearsal measured the switchover's fixed cost, and the estimate counted it. */
        printf("# state rehearsal: state cost %" PRIu64 " us; measured downtime %" PRIu64
               " us, the last estimate %" PRIu64 " us\n", st.state_cost_us, st.downtime_us,
               st.expected_downtime_us);
        assert_true(st.state_cost_us > 0);
        assert_true(st.expected_downtime_us >= st.state_cost_us);
        uint64_t sum = 0;
        for (int p = 0; p < _DOWNTIME_PHASE_MAX; p++)
                sum += st.downtime_breakdown_us[p];
        assert_true(sum <= st.downtime_us);
        assert_true(migration_job_get_iterations(src.job, NULL, 0) == st.iteration);
        MigrationIteration its[MIGRATION_MAX_ITERATIONS_KEPT];
        size_t n_it = migration_job_get_iterations(src.job, its, ELEMENTSOF(its));
        unsigned max_throttle = st.throttle_percent;
        for (size_t i = 0; i < n_it; i++)
                max_throttle = MAX(max_throttle, its[i].throttle_percent);
        printf("# %zu passes, largest throttle %u%%\n", n_it, max_throttle);
        if (!params->auto_converge)
                assert_int_equal(max_throttle, 0);
        else if (params->max_bandwidth_mibps > 0)
                /* A guest that dirties faster than the limit converges only throttled. */
                assert_true(max_throttle > 0);

        migration_job_get_stats(dst.job, &st);
        assert_int_equal(st.state, JOB_STATE_COMPLETED);
        assert_int_equal(vm_get_state(dst.vm), VM_STATE_RUNNING);
        /* The destination faulted in RAM ahead of the stream. */
        printf("# destination prefaulted %" PRIu64 " MiB in %" PRIu64 " ms\n", st.prefault_bytes >> 20,
               st.prefault_us / 1000);
        assert_true(st.prefault_bytes > 0);
        assert_true(st.prefault_bytes <= (uint64_t)mem_mib << 20);
        assert_non_null(vm_get_config(dst.vm));
        assert_string_equal(vm_get_config(dst.vm)->serial_path, dst.console);

        assert_true(last_heartbeat(src.console, &last_src));
        if (!wait_for_heartbeat(dst.console, last_src.seq + 3, 60000, &hb)) {
                char *t = read_file(dst.console);
                size_t l = strlen(t);
                vm_dispatch_events(dst.vm);
                printf("# destination VM %s; its console ends with:\n%s\n", vm_state_to_string(vm_get_state(dst.vm)),
                       t + (l > 1500 ? l - 1500 : 0));
                free(t);
                fail_msg("no heartbeat %" PRIu64 " on the destination", last_src.seq + 3);
        }
        size_t n_src, n_dst;
        Heartbeat all_last = {};
        assert_true(heartbeats_consecutive(src.console, dst.console, &n_src, &n_dst, &all_last));
        assert_true(n_dst >= 2);
        assert_true(all_last.seq >= hb.seq); /* the guest may have printed more since */
        assert_int_equal(hb.corrupt, 0);
        assert_true(hb.pages > last_src.pages);
        printf("# guest: last seq %" PRIu64 " on the source, %" PRIu64 " on the destination, corrupt %" PRIu64
               ", largest TSC gap %" PRIu64 " us\n",
               last_src.seq, hb.seq, hb.corrupt, hb.maxgap_us);
        /* A TSC that went backwards shows as an enormous gap (unsigned difference). */
        assert_true(hb.maxgap_us < UINT64_C(3600000000));
        side_free(&src);
        side_free(&dst);
}

static char *unix_uri(const char *name) {
        char *u;
        assert_true(asprintf(&u, "unix:%s/%s.sock", tmpdir, name) > 0);
        return u;
}

static char *tcp_uri(void) {
        char *u;
        assert_true(asprintf(&u, "tcp:127.0.0.1:%d", port_base++) > 0);
        return u;
}

static void test_verify_unix(void **state) {
        MigrationParams p;
        migration_params_init(&p);
        _cleanup_free_ char *uri = unix_uri("verify");
        migrate_and_check("verify-unix", uri, 256, "work=verify mib=64 hb=100", &p);
}

static void test_verify_tcp_zerocopy(void **state) {
        MigrationParams p;
        migration_params_init(&p);
        p.zerocopy = ZEROCOPY_ON;
        _cleanup_free_ char *uri = tcp_uri();
        /* This one tracks dirty pages with KVM's bitmaps, the others with the dirty ring
         * where KVM has it. */
        vm_options.dirty_ring = false;
        migrate_and_check("verify-tcp-zc", uri, 256, "work=verify mib=64 hb=100", &p);
        vm_options.dirty_ring = true;
}

static void test_dirty_two_connections(void **state) {
        MigrationParams p;
        migration_params_init(&p);
        p.connections = 2;
        p.zerocopy = ZEROCOPY_OFF;
        _cleanup_free_ char *uri = tcp_uri();
        /* Dirtying as fast as it can: every page must hold the value of the last pass
         * before the switchover or a later one (the guest counts anything else as corrupt). */
        migrate_and_check("dirty-2conn", uri, 256, "work=dirty mib=32 rate=0 hb=100", &p);
}

/* A failure before the commit leaves the source running and its stats readable. */
static void expect_source_survives(Side *src, JobState want, const char *error_name) {
        MigrationStats st;
        Heartbeat hb = {}, hb2 = {};
        migration_job_get_stats(src->job, &st);
        print_stats("source", src->job);
        assert_int_equal(st.state, want);
        assert_string_equal(st.error_name, error_name);
        assert_true(st.error_message[0] != 0);
        assert_int_equal(vm_get_state(src->vm), VM_STATE_RUNNING);
        assert_true(last_heartbeat(src->console, &hb));
        assert_true(wait_for_heartbeat(src->console, hb.seq + 2, 30000, &hb2));
        assert_int_equal(hb2.corrupt, 0);
}

static void test_cancel(void **state) {
        Side src = {}, dst = {};
        MigrationParams p;
        _cleanup_free_ char *uri = unix_uri("cancel");

        migration_params_init(&p);
        p.max_bandwidth_mibps = 16; /* slow enough to cancel during precopy */
        start_source(&src, "cancel", 256, "work=verify mib=128 hb=100");
        start_destination(&dst, "cancel", uri, 60);
        assert_int_equal(migration_out_start(src.vm, uri, &p, &callbacks, &src, &src.job), 0);
        uint64_t deadline = now_ms() + 30000;
        MigrationStats st;
        do {
                migration_job_get_stats(src.job, &st);
                struct pollfd pf = { .fd = migration_job_get_event_fd(src.job), .events = POLLIN };
                (void)poll(&pf, 1, 100);
                migration_job_dispatch(src.job);
        } while (st.bytes_processed < 8 * MiB && now_ms() < deadline);
        assert_int_equal(st.phase, JOB_PHASE_PRECOPY);
        assert_int_equal(migration_job_cancel(src.job), 0);
        run_until_finished(&src, &dst, 60000);
        expect_source_survives(&src, JOB_STATE_CANCELLED, "Cancelled");
        migration_job_get_stats(dst.job, &st);
        assert_true(st.state == JOB_STATE_FAILED || st.state == JOB_STATE_CANCELLED);
        assert_int_equal(vm_get_state(dst.vm), VM_STATE_STOPPED);
        assert_int_equal(migration_job_cancel(src.job), -ESTALE);
        side_free(&src);
        side_free(&dst);
}

/* A destination process that dies mid-stream: a child that accepts and reads a while. */
static pid_t fake_destination(const char *path, size_t read_bytes) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                int l = socket(AF_UNIX, SOCK_STREAM, 0), fd;
                snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
                unlink(path);
                if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0)
                        _exit(1);
                fd = accept(l, NULL, NULL);
                /* Acknowledge the hello and the state rehearsal like a destination
                 * would, then read and die. */
                uint8_t buf[65536];
                uint8_t ack[MIG_HEADER_SIZE] = { MIG_HELLO_ACK }, done[MIG_HEADER_SIZE] = { MIG_TRIAL_DONE };
                size_t got = 0;
                ssize_t k = recv(fd, buf, sizeof buf, 0);
                if (k <= 0 || send(fd, ack, sizeof ack, 0) != sizeof ack)
                        _exit(1);
                MigHeader h;
                if (mig_recv_header(fd, &h) < 0 || h.type != MIG_STATE_TRIAL || h.len > sizeof buf ||
                    mig_recv_all(fd, buf, h.len) < 0 || send(fd, done, sizeof done, 0) != sizeof done)
                        _exit(1);
                while (got < read_bytes && (k = recv(fd, buf, sizeof buf, 0)) > 0)
                        got += (size_t)k;
                _exit(0);
        }
        return pid;
}

static void test_destination_dies(void **state) {
        Side src = {};
        MigrationParams p;
        char path[100], uri[120];

        snprintf(path, sizeof path, "%s/dies.sock", tmpdir);
        snprintf(uri, sizeof uri, "unix:%s", path);
        migration_params_init(&p);
        start_source(&src, "dies", 256, "work=verify mib=128 hb=100");
        pid_t pid = fake_destination(path, 4 * MiB);
        /* Wait for the child to listen. */
        for (int i = 0; i < 100 && access(path, F_OK) < 0; i++)
                poll(NULL, 0, 20);
        assert_int_equal(migration_out_start(src.vm, uri, &p, &callbacks, &src, &src.job), 0);
        run_until_finished(&src, NULL, 60000);
        waitpid(pid, NULL, 0);
        expect_source_survives(&src, JOB_STATE_FAILED, "MigrationFailed");
        side_free(&src);
}

/* A destination that answers wrongly: at the HELLO (after_trial false) or at the state
 * rehearsal it sends 'type' with a payload of 'len' bytes, then reads until the source
 * hangs up. */
static pid_t lying_destination(const char *path, bool after_trial, uint32_t type, uint32_t len) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                int l = socket(AF_UNIX, SOCK_STREAM, 0), fd;
                uint8_t buf[65536] = {};
                MigHeader h;
                snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
                unlink(path);
                if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0)
                        _exit(1);
                fd = accept(l, NULL, NULL);
                if (mig_recv_header(fd, &h) < 0 || mig_recv_all(fd, buf, h.len) < 0)
                        _exit(1);
                if (after_trial) {
                        if (mig_send_msg(fd, MIG_HELLO_ACK, 0, 0, NULL, 0) < 0 || mig_recv_header(fd, &h) < 0 ||
                            h.len > sizeof buf || mig_recv_all(fd, buf, h.len) < 0)
                                _exit(1);
                }
                if (mig_send_msg(fd, type, 0, 0, buf, len) < 0)
                        _exit(1);
                while (recv(fd, buf, sizeof buf, 0) > 0)
                        ;
                _exit(0);
        }
        return pid;
}

/* The source takes only the reply it waits for: anything else fails the migration with
 * a message naming it, and the guest runs on. */
static void test_wrong_replies(void **state) {
        static const struct {
                bool after_trial;
                uint32_t type, len;
                const char *expect;
        } cases[] = {
                { false, MIG_READY, 0, "the destination sent READY while the source waited for HELLO_ACK" },
                { false, MIG_HELLO_ACK, 4, "malformed HELLO_ACK from the destination" },
                { false, 77, 0, "message type 77 (not a reply) while the source waited for HELLO_ACK" },
                { true, MIG_ACK, 0, "the destination sent ACK while the source waited for TRIAL_DONE" },
                { true, MIG_HELLO_ACK, 0, "the destination sent HELLO_ACK while the source waited for TRIAL_DONE" },
                { true, MIG_ERROR, 3, "destination refused the state rehearsal: " },
        };
        Side src = {};
        MigrationParams p;
        char path[100], uri[120];

        snprintf(path, sizeof path, "%s/liar.sock", tmpdir);
        snprintf(uri, sizeof uri, "unix:%s", path);
        migration_params_init(&p);
        start_source(&src, "liar", 64, "work=verify mib=16 hb=100");
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                MigrationStats st;
                unlink(path);
                pid_t pid = lying_destination(path, cases[i].after_trial, cases[i].type, cases[i].len);
                for (int k = 0; k < 100 && access(path, F_OK) < 0; k++)
                        poll(NULL, 0, 20);
                src.finished = false;
                assert_int_equal(migration_out_start(src.vm, uri, &p, &callbacks, &src, &src.job), 0);
                run_until_finished(&src, NULL, 60000);
                waitpid(pid, NULL, 0);
                migration_job_get_stats(src.job, &st);
                printf("# wrong reply %zu: %s\n", i, st.error_message);
                assert_non_null(strstr(st.error_message, cases[i].expect));
                expect_source_survives(&src, JOB_STATE_FAILED, "MigrationFailed");
                src.job = migration_job_free(src.job);
        }
        side_free(&src);
}

/* The destination gets a stream that is not ours, and one that goes bad mid-way. */
static void test_garbled_stream(void **state) {
        Side dst = {};
        char uri[120], path[100];
        MigrationStats st;

        snprintf(path, sizeof path, "%s/garbled.sock", tmpdir);
        snprintf(uri, sizeof uri, "unix:%s", path);
        start_destination(&dst, "garbled", uri, 10);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        const char junk[] = "GET / HTTP/1.1\r\nHost: example\r\n\r\n";
        assert_int_equal(send(fd, junk, sizeof junk, 0), (ssize_t)sizeof junk);
        run_until_finished(NULL, &dst, 30000);
        migration_job_get_stats(dst.job, &st);
        printf("# destination: %s: %s\n", st.error_name, st.error_message);
        assert_int_equal(st.state, JOB_STATE_FAILED);
        assert_non_null(strstr(st.error_message, "bad magic"));
        close(fd);
        side_free(&dst);

        /* A real source whose stream is garbled in flight: a relay that flips bytes after
         * the first megabyte. The destination refuses it; the source keeps running. */
        Side src = {}, dst2 = {};
        char relay_path[100], relay_uri[120];
        snprintf(relay_path, sizeof relay_path, "%s/relay.sock", tmpdir);
        snprintf(relay_uri, sizeof relay_uri, "unix:%s", relay_path);
        snprintf(path, sizeof path, "%s/garbled2.sock", tmpdir);
        snprintf(uri, sizeof uri, "unix:%s", path);
        start_source(&src, "garbled2", 256, "work=verify mib=64 hb=100");
        start_destination(&dst2, "garbled2", uri, 20);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un a = { .sun_family = AF_UNIX }, b = { .sun_family = AF_UNIX };
                snprintf(a.sun_path, sizeof a.sun_path, "%s", relay_path);
                snprintf(b.sun_path, sizeof b.sun_path, "%s", path);
                int l = socket(AF_UNIX, SOCK_STREAM, 0);
                if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0)
                        _exit(1);
                int in = accept(l, NULL, NULL), out = socket(AF_UNIX, SOCK_STREAM, 0);
                if (connect(out, (struct sockaddr *)&b, sizeof b) < 0)
                        _exit(1);
                uint8_t buf[65536];
                size_t total = 0;
                for (;;) {
                        struct pollfd pf[2] = { { .fd = in, .events = POLLIN }, { .fd = out, .events = POLLIN } };
                        if (poll(pf, 2, 20000) <= 0)
                                _exit(0);
                        if (pf[1].revents) {
                                ssize_t k = recv(out, buf, sizeof buf, 0);
                                if (k <= 0 || send(in, buf, (size_t)k, MSG_NOSIGNAL) < 0)
                                        _exit(0);
                        }
                        if (pf[0].revents) {
                                ssize_t k = recv(in, buf, sizeof buf, 0);
                                if (k <= 0)
                                        _exit(0);
                                if (total > MiB)
                                        for (ssize_t i = 0; i < k; i++)
                                                buf[i] ^= 0x5a;
                                total += (size_t)k;
                                if (send(out, buf, (size_t)k, MSG_NOSIGNAL) < 0)
                                        _exit(0);
                        }
                }
        }
        for (int i = 0; i < 100 && access(relay_path, F_OK) < 0; i++)
                poll(NULL, 0, 20);
        MigrationParams p;
        migration_params_init(&p);
        assert_int_equal(migration_out_start(src.vm, relay_uri, &p, &callbacks, &src, &src.job), 0);
        run_until_finished(&src, &dst2, 60000);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        migration_job_get_stats(dst2.job, &st);
        printf("# destination: %s: %s\n", st.error_name, st.error_message);
        assert_int_equal(st.state, JOB_STATE_FAILED);
        assert_int_equal(vm_get_state(dst2.vm), VM_STATE_STOPPED);
        expect_source_survives(&src, JOB_STATE_FAILED, "MigrationFailed");
        side_free(&src);
        side_free(&dst2);
}

/* Faster dirtying than the bandwidth limit allows: without auto-converge the migration
 * gives up at timeout_s with the source running; with it, it converges. */
static void test_convergence(void **state) {
        MigrationParams p;
        Side src = {}, dst = {};
        _cleanup_free_ char *uri = unix_uri("noconv"), *uri2 = unix_uri("conv");

        migration_params_init(&p);
        p.max_bandwidth_mibps = 8;
        p.max_downtime_ms = 50;
        p.auto_converge = false;
        p.timeout_s = 6;
        /* The guest rewrites a 4 MiB working set as fast as it can: far more per pass
         * than the link may carry in 50 ms. */
        start_source(&src, "noconv", 256, "work=dirty mib=4 rate=0 hb=100");
        start_destination(&dst, "noconv", uri, 60);
        assert_int_equal(migration_out_start(src.vm, uri, &p, &callbacks, &src, &src.job), 0);
        run_until_finished(&src, &dst, 120000);
        expect_source_survives(&src, JOB_STATE_FAILED, "MigrationFailed");
        MigrationStats st;
        migration_job_get_stats(src.job, &st);
        assert_non_null(strstr(st.error_message, "did not converge"));
        assert_int_equal(st.throttle_percent, 0);
        side_free(&src);
        side_free(&dst);

        /* With auto-converge the vCPU is slowed until the dirty pages fit the downtime. */
        p.auto_converge = true;
        p.timeout_s = 0;
        p.max_bandwidth_mibps = 8;
        p.max_downtime_ms = 300;
        migrate_and_check("conv", uri2, 256, "work=dirty mib=4 rate=0 hb=100", &p);
}

/* --- a link that breaks at a chosen message ---
 * A proxy between source and destination that forwards the stream message by message and
 * shuts both connections at the first message of a given type, instead of passing it on:
 * the network failing at exactly that point of the protocol. */
typedef struct Proxy {
        char path[108], target[108];
        uint32_t cut_type;
        bool cut_to_destination; /* the type travels source -> destination */
        uint32_t garble_type;     /* source -> destination: its payload is flipped */
        _Atomic bool garbled;
        uint32_t stall_type;      /* source -> destination: stop reading at it, until released */
        unsigned delay_to_source_ms; /* each message to the source waits this long */
        _Atomic bool stalled, release;
        int listen_fd, src_fd, dst_fd;
        pthread_t thread;
        _Atomic bool cut;
} Proxy;

typedef struct Pump {
        Proxy *x;
        int from, to;
        uint32_t cut_type; /* 0: none */
        uint32_t garble_type; /* 0: none */
} Pump;

static void *pump(void *p) {
        Pump *u = p;
        uint8_t *buf = malloc(1 << 20);

        assert_non_null(buf);
        for (;;) {
                uint8_t raw[MIG_HEADER_SIZE];
                MigHeader h;
                if (mig_recv_all(u->from, raw, sizeof raw) < 0)
                        break;
                mig_header_decode(raw, &h);
                if (u->to == u->x->dst_fd && u->x->stall_type && h.type == u->x->stall_type) {
                        /* A peer that stops reading, neither closing nor resetting. */
                        atomic_store(&u->x->stalled, true);
                        while (!atomic_load(&u->x->release))
                                poll(NULL, 0, 20);
                        break;
                }
                if (u->to == u->x->src_fd && u->x->delay_to_source_ms)
                        poll(NULL, 0, (int)u->x->delay_to_source_ms);
                if (u->cut_type && h.type == u->cut_type) {
                        atomic_store(&u->x->cut, true);
                        break;
                }
                if (mig_send_all(u->to, raw, sizeof raw) < 0)
                        break;
                uint64_t left = h.len;
                while (left > 0) {
                        size_t n = (size_t)MIN(left, (uint64_t)(1 << 20));
                        if (mig_recv_all(u->from, buf, n) < 0)
                                goto out;
                        if (u->garble_type && h.type == u->garble_type) {
                                for (size_t i = 0; i < n; i++)
                                        buf[i] ^= 0x5a;
                                atomic_store(&u->x->garbled, true);
                        }
                        if (mig_send_all(u->to, buf, n) < 0)
                                goto out;
                        left -= n;
                }
        }
out:
        shutdown(u->x->src_fd, SHUT_RDWR);
        shutdown(u->x->dst_fd, SHUT_RDWR);
        free(buf);
        return NULL;
}

static void *proxy_thread(void *p) {
        Proxy *x = p;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        pthread_t up;

        x->src_fd = accept4(x->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(x->src_fd >= 0);
        x->dst_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", x->target);
        assert_int_equal(connect(x->dst_fd, (struct sockaddr *)&sa, sizeof sa), 0);
        Pump to_dst = { x, x->src_fd, x->dst_fd, x->cut_to_destination ? x->cut_type : 0, x->garble_type };
        Pump to_src = { x, x->dst_fd, x->src_fd, x->cut_to_destination ? 0 : x->cut_type, 0 };
        assert_int_equal(pthread_create(&up, NULL, pump, &to_dst), 0);
        pump(&to_src);
        pthread_join(up, NULL);
        close(x->src_fd);
        close(x->dst_fd);
        return NULL;
}

static void proxy_start(Proxy *x, const char *name, uint32_t cut_type, bool to_destination,
                        uint32_t garble_type) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        *x = (Proxy){ .cut_type = cut_type, .cut_to_destination = to_destination, .garble_type = garble_type };
        snprintf(x->path, sizeof x->path, "%s/%s-proxy.sock", tmpdir, name);
        snprintf(x->target, sizeof x->target, "%s/%s.sock", tmpdir, name);
        x->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", x->path);
        unlink(x->path);
        assert_int_equal(bind(x->listen_fd, (struct sockaddr *)&sa, sizeof sa), 0);
        assert_int_equal(listen(x->listen_fd, 1), 0);
        assert_int_equal(pthread_create(&x->thread, NULL, proxy_thread, x), 0);
}

static void proxy_stop(Proxy *x) {
        atomic_store(&x->release, true);
        pthread_join(x->thread, NULL);
        close(x->listen_fd);
}

/* Migrates through a proxy that cuts the link at 'cut_type'; returns with both jobs done. */
static void migrate_cut(Side *src, Side *dst, Proxy *x, const char *name, uint32_t cut_type, bool to_destination) {
        MigrationParams p;
        char src_uri[160];
        _cleanup_free_ char *dst_uri = unix_uri(name);

        migration_params_init(&p);
        start_source(src, name, 128, "work=verify mib=16 hb=100");
        start_destination(dst, name, dst_uri, 60);
        proxy_start(x, name, cut_type, to_destination, 0);
        snprintf(src_uri, sizeof src_uri, "unix:%s", x->path);
        assert_int_equal(migration_out_start(src->vm, src_uri, &p, &callbacks, src, &src->job), 0);
        run_until_finished(src, dst, 120000);
        proxy_stop(x);
        assert_true(atomic_load(&x->cut));
        print_stats("source", src->job);
        print_stats("destination", dst->job);
}

/* The destination cannot load the source's state (here: garbled on the way): the
 * rehearsal finds out before the guest is paused for the switchover. */
static void test_state_rehearsal_rejected(void **state) {
        Side src = {}, dst = {};
        Proxy x;
        MigrationStats st;
        MigrationParams p;
        char src_uri[160];
        _cleanup_free_ char *dst_uri = unix_uri("rehearsal");
        Heartbeat hb = {}, hb2 = {};

        migration_params_init(&p);
        start_source(&src, "rehearsal", 128, "work=verify mib=16 hb=100");
        start_destination(&dst, "rehearsal", dst_uri, 60);
        proxy_start(&x, "rehearsal", 0, true, MIG_STATE_TRIAL);
        snprintf(src_uri, sizeof src_uri, "unix:%s", x.path);
        assert_int_equal(migration_out_start(src.vm, src_uri, &p, &callbacks, &src, &src.job), 0);
        run_until_finished(&src, &dst, 120000);
        proxy_stop(&x);
        print_stats("source", src.job);
        print_stats("destination", dst.job);
        assert_true(atomic_load(&x.garbled));
        migration_job_get_stats(dst.job, &st);
        assert_int_equal(st.state, JOB_STATE_FAILED);
        assert_non_null(strstr(st.error_message, "rehearsal"));
        assert_int_equal(vm_get_state(dst.vm), VM_STATE_STOPPED);
        migration_job_get_stats(src.job, &st);
        assert_int_equal(st.state, JOB_STATE_FAILED);
        assert_non_null(strstr(st.error_message, "destination refused the state rehearsal"));
        assert_int_equal(st.downtime_us, 0);
        assert_int_equal(st.memory_processed, 0); /* no page was sent */
        assert_int_equal(vm_get_state(src.vm), VM_STATE_RUNNING);
        assert_true(last_heartbeat(src.console, &hb));
        assert_true(wait_for_heartbeat(src.console, hb.seq + 3, 30000, &hb2));
        assert_int_equal(hb2.corrupt, 0);
        side_free(&src);
        side_free(&dst);
}

/* The destination is lost during the state transfer, before the commit: the source
 * resumes its guest, the destination drops its copy. */
static void test_link_lost_before_commit(void **state) {
        Side src = {}, dst = {};
        Proxy x;
        MigrationStats st;

        migrate_cut(&src, &dst, &x, "cut-state", MIG_STATE, true);
        expect_source_survives(&src, JOB_STATE_FAILED, "MigrationFailed");
        migration_job_get_stats(src.job, &st);
        assert_non_null(strstr(st.error_message, "switchover")); /* it had paused the guest */
        migration_job_get_stats(dst.job, &st);
        assert_int_equal(st.state, JOB_STATE_FAILED);
        assert_int_equal(vm_get_state(dst.vm), VM_STATE_STOPPED);
        side_free(&src);
        side_free(&dst);
}

/* The source after a commit whose acknowledgement never came. */
static void expect_source_unknown(Side *src) {
        MigrationStats st;

        migration_job_get_stats(src->job, &st);
        assert_int_equal(st.state, JOB_STATE_FAILED);
        assert_non_null(strstr(st.error_message, "migration-unknown"));
        assert_int_equal(vm_get_state(src->vm), VM_STATE_MIGRATION_UNKNOWN);
}

/* The commit never reaches the destination: it drops its copy, and the source, which
 * cannot know, keeps the guest paused in migration-unknown until the operator resumes it. */
static void test_commit_lost(void **state) {
        Side src = {}, dst = {};
        Proxy x;
        MigrationStats st;
        Heartbeat hb = {}, hb2 = {};

        migrate_cut(&src, &dst, &x, "cut-commit", MIG_COMMIT, true);
        expect_source_unknown(&src);
        migration_job_get_stats(src.job, &st);
        assert_string_equal(st.error_name, "MigrationFailed");
        migration_job_get_stats(dst.job, &st);
        assert_int_equal(st.state, JOB_STATE_FAILED);
        assert_int_equal(vm_get_state(dst.vm), VM_STATE_STOPPED);
        assert_false(vm_job_is_active(src.vm));

        /* Paused: no heartbeat; then the operator, who knows better, resumes it here. */
        assert_true(last_heartbeat(src.console, &hb));
        assert_false(wait_for_heartbeat(src.console, hb.seq + 1, 600, &hb2));
        assert_int_equal(vm_resume(src.vm), 0);
        assert_int_equal(vm_get_state(src.vm), VM_STATE_RUNNING);
        assert_true(wait_for_heartbeat(src.console, hb.seq + 3, 30000, &hb2));
        assert_int_equal(hb2.corrupt, 0);
        assert_int_equal(vm_get_throttle(src.vm), 0);
        side_free(&src);
        side_free(&dst);
}

/* The acknowledgement is lost: the guest runs on the destination, the source stays in
 * migration-unknown until the operator stops its copy. */
static void test_ack_lost(void **state) {
        Side src = {}, dst = {};
        Proxy x;
        MigrationStats st;
        Heartbeat last_src = {}, hb = {};
        size_t n_src, n_dst;

        migrate_cut(&src, &dst, &x, "cut-ack", MIG_ACK, false);
        expect_source_unknown(&src);
        migration_job_get_stats(dst.job, &st);
        assert_int_equal(st.state, JOB_STATE_COMPLETED);
        assert_int_equal(vm_get_state(dst.vm), VM_STATE_RUNNING);
        assert_true(last_heartbeat(src.console, &last_src));
        assert_true(wait_for_heartbeat(dst.console, last_src.seq + 3, 60000, &hb));
        assert_true(heartbeats_consecutive(src.console, dst.console, &n_src, &n_dst, NULL));
        assert_int_equal(hb.corrupt, 0);
        assert_int_equal(vm_stop(src.vm), 0);
        assert_int_equal(vm_get_state(src.vm), VM_STATE_STOPPED);
        side_free(&src);
        side_free(&dst);
}

/* --- swap: a page the guest wrote that the host swapped out holds data --- */

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

static char swapfile[128];

/* A swapfile of 'mib' MiB on a disk filesystem (tmpfs cannot hold one); false if this
 * machine cannot make one (not root, no swap support, a filesystem that refuses). */
static bool swap_on(unsigned mib) {
        char cmd[1024];
        snprintf(swapfile, sizeof swapfile, "/var/tmp/vmmd-test-swap-%d", getpid());
        snprintf(cmd, sizeof cmd,
                 "fallocate -l %uM %s && chmod 600 %s && mkswap %s >/dev/null && swapon %s", mib, swapfile,
                 swapfile, swapfile, swapfile);
        if (system(cmd) != 0) {
                unlink(swapfile);
                return false;
        }
        return true;
}

static void swap_off(void) {
        char cmd[256 + sizeof swapfile];
        snprintf(cmd, sizeof cmd, "swapoff %s", swapfile);
        if (system(cmd) != 0)
                printf("# swapoff %s failed\n", swapfile);
        unlink(swapfile);
}

/* Pushes all of the source's guest RAM out to swap, with the guest paused so that it reads
 * nothing back in meanwhile, then lets it run on: the migration starts at once, while
 * most of what the guest wrote is in swap and not in RAM. */
static void page_out_source(Side *src) {
        uint8_t *base;
        uint64_t size, swapped = 0, present = 0, resident = 0;
        const VmMemoryRegion *regions;
        unsigned n_regions;
        assert_int_equal(vm_get_ram(src->vm, &base, &size, &regions, &n_regions), 0);
        assert_int_equal(vm_pause(src->vm), 0);
        assert_int_equal(madvise(base, size, MADV_PAGEOUT), 0);
        /* What each interface says now: pagemap's bits, and mincore(). */
        int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        _cleanup_free_ unsigned char *vec = malloc(size / 4096);
        assert_non_null(vec);
        for (uint64_t p = 0; p < size / 4096; p++) {
                uint64_t e = 0;
                assert_int_equal(pread(fd, &e, 8, (off_t)(((uintptr_t)base / 4096 + p) * 8)), 8);
                swapped += e >> 62 & 1;
                present += e >> 63;
        }
        close(fd);
        assert_int_equal(mincore(base, size, vec), 0);
        for (uint64_t p = 0; p < size / 4096; p++)
                resident += vec[p] & 1;
        printf("# after MADV_PAGEOUT: %" PRIu64 " pages swapped out, %" PRIu64 " present; mincore says %" PRIu64
               " resident\n", swapped, present, resident);
        assert_true(swapped > 0);
        assert_int_equal(vm_resume(src->vm), 0);
}

static void test_swapped_out(void **state) {
        MigrationParams p;
        if (!swap_on(512)) {
                printf("# cannot make a swapfile here: skipped\n");
                if (getenv("VMMD_TEST_FILTER") && strcmp(getenv("VMMD_TEST_FILTER"), "test_swapped_out") == 0)
                        exit(77);
                skip();
        }
        migration_params_init(&p);
        _cleanup_free_ char *uri = unix_uri("swapped");
        before_migrate = page_out_source;
        /* The guest filled 128 MiB and keeps re-reading it: every page the source skips
         * reads back as zeros on the destination and the verifier counts it. */
        migrate_and_check("swapped", uri, 256, "work=verify mib=128 hb=100", &p);
        before_migrate = NULL;
        swap_off();
}

/* zerocopy=on where the kernel cannot do it (unix sockets) is refused at once. */
static void test_zerocopy_refused(void **state) {
        Side src = {};
        MigrationParams p;
        MigrationJob *j = NULL;
        _cleanup_free_ char *uri = unix_uri("zc-refused");

        migration_params_init(&p);
        p.zerocopy = ZEROCOPY_ON;
        start_source(&src, "zc-refused", 128, "work=verify mib=8 hb=100");
        assert_int_equal(migration_out_start(src.vm, uri, &p, &callbacks, &src, &j), -EPROTONOSUPPORT);
        assert_null(j);
        assert_false(vm_job_is_active(src.vm));
        assert_int_equal(vm_get_state(src.vm), VM_STATE_RUNNING);
        side_free(&src);
}

/* Runs a migration through 'x' (started by the caller) until both jobs end, and prints
 * how long the source guest was paused as the guest saw it (its largest heartbeat gap). */
static void migrate_via(Side *src, Side *dst, Proxy *x, const MigrationParams *p, unsigned timeout_ms) {
        char src_uri[160];
        snprintf(src_uri, sizeof src_uri, "unix:%s", x->path);
        assert_int_equal(migration_out_start(src->vm, src_uri, p, &callbacks, src, &src->job), 0);
        run_until_finished(src, NULL, timeout_ms);
        proxy_stop(x);
        run_until_finished(NULL, dst, 60000);
        print_stats("source", src->job);
        print_stats("destination", dst->job);
}

/* The destination stops reading during the state transfer (no FIN, no RST): the
 * switchover's deadline ends the migration and the source guest runs on, paused for
 * about the deadline, not until TCP or an operator gives up. */
static void test_switchover_deadline(void **state) {
        Side src = {}, dst = {};
        Proxy x;
        MigrationParams p;
        MigrationStats st;
        Heartbeat hb = {};
        _cleanup_free_ char *dst_uri = unix_uri("stall-state");

        migration_params_init(&p);
        p.switchover_timeout_ms = 1000;
        start_source(&src, "stall-state", 128, "work=verify mib=16 hb=100");
        start_destination(&dst, "stall-state", dst_uri, 60);
        proxy_start(&x, "stall-state", 0, true, 0);
        x.stall_type = MIG_STATE;
        uint64_t t = now_ms();
        migrate_via(&src, &dst, &x, &p, 60000);
        printf("# the source job ended %" PRIu64 " ms after it started\n", now_ms() - t);
        assert_true(atomic_load(&x.stalled));
        expect_source_survives(&src, JOB_STATE_FAILED, "MigrationFailed");
        migration_job_get_stats(src.job, &st);
        assert_non_null(strstr(st.error_message, "deadline"));
        assert_int_equal(st.switchover_timeout_us, 1000 * 1000);
        assert_int_equal(vm_get_state(dst.vm), VM_STATE_STOPPED);
        assert_true(last_heartbeat(src.console, &hb));
        printf("# longest pause the guest saw: %" PRIu64 " ms (deadline 1000 ms)\n", hb.maxgap_us / 1000);
        side_free(&src);
        side_free(&dst);
}

/* The destination stops reading in precopy: Stalled turns true and Rate falls although the
 * sending thread is blocked, and timeout_s still ends the migration. */
static void test_precopy_stall(void **state) {
        Side src = {}, dst = {};
        Proxy x;
        MigrationParams p;
        MigrationStats st;
        char src_uri[160];
        _cleanup_free_ char *dst_uri = unix_uri("stall-pages");

        migration_params_init(&p);
        p.timeout_s = 9;
        start_source(&src, "stall-pages", 256, "work=verify mib=128 hb=100");
        start_destination(&dst, "stall-pages", dst_uri, 60);
        proxy_start(&x, "stall-pages", 0, true, 0);
        x.stall_type = MIG_PAGES;
        snprintf(src_uri, sizeof src_uri, "unix:%s", x.path);
        assert_int_equal(migration_out_start(src.vm, src_uri, &p, &callbacks, &src, &src.job), 0);
        bool stalled_seen = false;
        uint64_t rate_at_stall = 0, deadline = now_ms() + 30000;
        while (!src.finished && now_ms() < deadline) {
                struct pollfd pf = { .fd = migration_job_get_event_fd(src.job), .events = POLLIN };
                (void)poll(&pf, 1, 100);
                migration_job_get_stats(src.job, &st);
                if (st.stalled && !stalled_seen) {
                        stalled_seen = true;
                        rate_at_stall = st.rate;
                        printf("# Stalled after %" PRIu64 " ms: rate %" PRIu64 " B/s, %" PRIu64
                               " bytes remaining, elapsed %" PRIu64 " ms\n",
                               st.elapsed_us / 1000, st.rate, st.bytes_remaining, st.elapsed_us / 1000);
                        assert_true(st.bytes_remaining > 0);
                }
                migration_job_dispatch(src.job);
        }
        proxy_stop(&x);
        run_until_finished(&src, &dst, 60000);
        assert_true(atomic_load(&x.stalled));
        assert_true(stalled_seen);
        expect_source_survives(&src, JOB_STATE_FAILED, "MigrationFailed");
        migration_job_get_stats(src.job, &st);
        assert_non_null(strstr(st.error_message, "timeout_s=9"));
        (void)rate_at_stall;
        side_free(&src);
        side_free(&dst);
}

/* Round trips alone longer than max_downtime_ms: the job says it cannot converge, passes
 * are paced (a handful, not hundreds of thousands), and timeout_s's error says why. */
static void test_fixed_cost_blocks(void **state) {
        Side src = {}, dst = {};
        Proxy x;
        MigrationParams p;
        MigrationStats st;
        _cleanup_free_ char *dst_uri = unix_uri("fixed-cost");

        migration_params_init(&p);
        p.max_downtime_ms = 50;
        p.timeout_s = 5;
        start_source(&src, "fixed-cost", 128, "work=verify mib=16 hb=100");
        start_destination(&dst, "fixed-cost", dst_uri, 60);
        proxy_start(&x, "fixed-cost", 0, true, 0);
        x.delay_to_source_ms = 120; /* every reply: 120 ms more per round trip */
        migrate_via(&src, &dst, &x, &p, 60000);
        expect_source_survives(&src, JOB_STATE_FAILED, "MigrationFailed");
        migration_job_get_stats(src.job, &st);
        printf("# %u passes in %" PRIu64 " ms; blocker: %s\n", st.iteration, st.elapsed_us / 1000,
               st.convergence_blocker);
        assert_non_null(strstr(st.convergence_blocker, "fixed cost"));
        assert_non_null(strstr(st.error_message, "did not converge"));
        assert_non_null(strstr(st.error_message, "fixed cost"));
        assert_true(st.iteration >= 1);
        assert_true(st.iteration <= 10);
        side_free(&src);
        side_free(&dst);
}

/* 50 ms added to every message toward the source (the round trips of the setup, the
 * rehearsal and the switchover): the migration completes, and the downtime it reports is
 * printed next to the gap the guest saw. */
static void test_delayed_replies(void **state) {
        Side src = {}, dst = {};
        Proxy x;
        MigrationParams p;
        MigrationStats st;
        Heartbeat last_src = {}, hb = {};
        _cleanup_free_ char *dst_uri = unix_uri("delayed");

        migration_params_init(&p);
        start_source(&src, "delayed", 256, "work=verify mib=64 hb=100");
        start_destination(&dst, "delayed", dst_uri, 60);
        proxy_start(&x, "delayed", 0, true, 0);
        x.delay_to_source_ms = 50;
        migrate_via(&src, &dst, &x, &p, 120000);
        migration_job_get_stats(src.job, &st);
        assert_string_equal(st.error_message, "");
        assert_int_equal(st.state, JOB_STATE_COMPLETED);
        assert_int_equal(vm_get_state(src.vm), VM_STATE_MIGRATED);
        assert_true(st.state_cost_us >= 100 * 1000); /* two delayed round trips */
        uint64_t downtime_us = st.downtime_us;
        migration_job_get_stats(dst.job, &st);
        assert_int_equal(st.state, JOB_STATE_COMPLETED);
        assert_true(last_heartbeat(src.console, &last_src));
        assert_true(wait_for_heartbeat(dst.console, last_src.seq + 3, 60000, &hb));
        assert_int_equal(hb.corrupt, 0);
        printf("# delayed replies: downtime %" PRIu64 " us reported; the guest's largest gap since boot %" PRIu64
               " us (before the migration %" PRIu64 " us)\n",
               downtime_us, hb.maxgap_us, last_src.maxgap_us);
        side_free(&src);
        side_free(&dst);
}

static int setup(void **state) {
        require_kvm();
        guest = test_guest_path();
        assert_non_null(mkdtemp(tmpdir));
        port_base += (int)(getpid() % 500) * 8;
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
                cmocka_unit_test(test_verify_unix),
                cmocka_unit_test(test_verify_tcp_zerocopy),
                cmocka_unit_test(test_dirty_two_connections),
                cmocka_unit_test(test_cancel),
                cmocka_unit_test(test_destination_dies),
                cmocka_unit_test(test_wrong_replies), cmocka_unit_test(test_garbled_stream),
                cmocka_unit_test(test_convergence),
                cmocka_unit_test(test_state_rehearsal_rejected),
                cmocka_unit_test(test_link_lost_before_commit),
                cmocka_unit_test(test_commit_lost),
                cmocka_unit_test(test_ack_lost),
                cmocka_unit_test(test_swapped_out),
                cmocka_unit_test(test_zerocopy_refused),
                cmocka_unit_test(test_switchover_deadline),
                cmocka_unit_test(test_precopy_stall),
                cmocka_unit_test(test_fixed_cost_blocks),
                cmocka_unit_test(test_delayed_replies),
        };
        signal(SIGPIPE, SIG_IGN);
        require_kvm();
        if (getenv("VMMD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("VMMD_TEST_FILTER"));
        return cmocka_run_group_tests(tests, setup, teardown);
}
