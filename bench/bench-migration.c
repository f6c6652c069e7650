/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* bench-migration: live-migrates the test guest between two VMs of this process over a
 * real socket and prints what it measured. Not a test: it asserts nothing about speed.
 *
 *   bench-migration [--mem MIB] [--cmdline "work=..."] [--uri unix:PATH|tcp:HOST:PORT]
 *                   [--zerocopy auto|on|off] [--connections N] [--max-downtime MS]
 *                   [--runs N] [--warmup-s S]
 *
 * Prints one line per run and a summary: total time, downtime (and its breakdown),
 * bytes sent, throughput, passes. Exit 77 without /dev/kvm. */
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "migration.h"
#include "vm.h"

typedef struct Side {
        Vm *vm;
        MigrationJob *job;
        bool finished;
} Side;

static void on_finished(MigrationJob *j, void *userdata) {
        ((Side *)userdata)->finished = true;
}
static const MigrationCallbacks cbs = { .finished = on_finished };

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pump(Side *a, Side *b, unsigned timeout_ms) {
        uint64_t deadline = now_ms() + timeout_ms;
        while ((!a->finished || !b->finished) && now_ms() < deadline) {
                struct pollfd p[4] = {
                        { .fd = migration_job_get_event_fd(a->job), .events = POLLIN },
                        { .fd = migration_job_get_event_fd(b->job), .events = POLLIN },
                        { .fd = vm_get_event_fd(a->vm), .events = POLLIN },
                        { .fd = vm_get_event_fd(b->vm), .events = POLLIN },
                };
                (void)poll(p, 4, 500);
                migration_job_dispatch(a->job);
                migration_job_dispatch(b->job);
                vm_dispatch_events(a->vm);
                vm_dispatch_events(b->vm);
        }
}

/* Lets the guest run (filling its working set) for a while, events handled. */
static void run_for(Vm *vm, unsigned ms) {
        uint64_t end = now_ms() + ms;
        while (now_ms() < end) {
                struct pollfd p = { .fd = vm_get_event_fd(vm), .events = POLLIN };
                (void)poll(&p, 1, (int)(end - now_ms()));
                vm_dispatch_events(vm);
        }
}

int main(int argc, char **argv) {
        const char *guest = getenv("VMMD_TEST_GUEST"), *cmdline = "work=idle hb=1000", *uri = NULL;
        unsigned mem = 1024, runs = 3, warmup_s = 3;
        MigrationParams params;
        char uri_buf[128];
        int c;

        migration_params_init(&params);
        static const struct option opts[] = {
                { "mem", required_argument, NULL, 'm' },         { "cmdline", required_argument, NULL, 'c' },
                { "uri", required_argument, NULL, 'u' },         { "zerocopy", required_argument, NULL, 'z' },
                { "connections", required_argument, NULL, 'n' }, { "max-downtime", required_argument, NULL, 'd' },
                { "runs", required_argument, NULL, 'r' },        { "warmup-s", required_argument, NULL, 'w' },
                { "guest", required_argument, NULL, 'g' },       {},
        };
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0)
                switch (c) {
                case 'm': mem = (unsigned)atoi(optarg); break;
                case 'c': cmdline = optarg; break;
                case 'u': uri = optarg; break;
                case 'z':
                        if (zerocopy_mode_from_string(optarg, &params.zerocopy) < 0) {
                                fprintf(stderr, "bad --zerocopy\n");
                                return 2;
                        }
                        break;
                case 'n': params.connections = (unsigned)atoi(optarg); break;
                case 'd': params.max_downtime_ms = (uint64_t)atoll(optarg); break;
                case 'r': runs = (unsigned)atoi(optarg); break;
                case 'w': warmup_s = (unsigned)atoi(optarg); break;
                case 'g': guest = optarg; break;
                default: return 2;
                }
        if (access("/dev/kvm", R_OK | W_OK) < 0) {
                fprintf(stderr, "SKIP: no usable /dev/kvm\n");
                return 77;
        }
        if (!guest) {
                fprintf(stderr, "set VMMD_TEST_GUEST or --guest\n");
                return 2;
        }

        printf("bench-migration: %u MiB guest, \"%s\", %u connection(s), zerocopy %s, max downtime %" PRIu64 " ms\n",
               mem, cmdline, params.connections, zerocopy_mode_to_string(params.zerocopy), params.max_downtime_ms);
        uint64_t sum_total = 0, sum_down = 0, sum_bytes = 0;
        for (unsigned run = 0; run < runs; run++) {
                char json[2048], *err = NULL;
                VmConfig *cfg = NULL;
                Side src = {}, dst = {};
                MigrationStats st;

                snprintf(json, sizeof json,
                         "{\"vcpus\":1,\"memory_mib\":%u,\"kernel\":\"%s\",\"cmdline\":\"%s\",\"serial\":{\"mode\":\"none\"}}",
                         mem, guest, cmdline);
                if (vm_config_parse(json, &cfg, &err) < 0) {
                        fprintf(stderr, "config: %s\n", err);
                        return 2;
                }
                if (!uri) {
                        snprintf(uri_buf, sizeof uri_buf, "unix:/tmp/bench-migration-%d.sock", getpid());
                        uri = uri_buf;
                }
                if (vm_new("src", cfg, &src.vm) < 0 || vm_start(src.vm) < 0) {
                        fprintf(stderr, "cannot start the guest\n");
                        return 1;
                }
                run_for(src.vm, warmup_s * 1000);
                IncomingParams ip = { .timeout_s = 120 };
                if (vm_new_incoming("dst", &dst.vm) < 0 || migration_in_start(dst.vm, uri, &ip, &cbs, &dst, &dst.job) < 0 ||
                    migration_out_start(src.vm, uri, &params, &cbs, &src, &src.job) < 0) {
                        fprintf(stderr, "cannot start the migration\n");
                        return 1;
                }
                pump(&src, &dst, 600000);
                migration_job_get_stats(src.job, &st);
                if (st.state != JOB_STATE_COMPLETED) {
                        printf("run %u: %s: %s\n", run + 1, job_state_to_string(st.state), st.error_message);
                        return 1;
                }
                printf("run %u: total %" PRIu64 " ms, downtime %" PRIu64 " us, %" PRIu64 " MiB sent, %" PRIu64
                       " MiB/s, %u passes, %" PRIu64 " zero + %" PRIu64 " data pages, zerocopy %s\n",
                       run + 1, st.elapsed_us / 1000, st.downtime_us, st.bytes_processed >> 20,
                       st.elapsed_us ? st.bytes_processed * 1000000 / st.elapsed_us >> 20 : 0, st.iteration,
                       st.zero_pages, st.normal_pages, st.zerocopy ? "yes" : "no");
                printf("       downtime:");
                for (int p = 0; p < _DOWNTIME_PHASE_MAX; p++)
                        printf(" %s=%" PRIu64, downtime_phase_to_string(p), st.downtime_breakdown_us[p]);
                printf("\n");
                /* What the state rehearsal measured, and the switchover's fixed part as it
                 * happened: everything but final_memory (this includes the final harvest,
                 * which the estimate adds separately, about 1-2 ms here). */
                uint64_t fixed = st.downtime_us - st.downtime_breakdown_us[DOWNTIME_FINAL_MEMORY];
                printf("       state cost: %" PRIu64 " us by the rehearsal, %" PRIu64
                       " us measured (downtime without final_memory)\n", st.state_cost_us, fixed);
                /* Each pass, and the downtime the job expected after it: the last one is
                 * what it promised when it paused the guest. */
                MigrationIteration its[MIGRATION_MAX_ITERATIONS_KEPT];
                size_t n_it = migration_job_get_iterations(src.job, its, ELEMENTSOF(its));
                for (size_t i = 0; i < n_it && i < ELEMENTSOF(its); i++)
                        printf("       pass %u: %" PRIu64 " MiB in %" PRIu64 " ms (%" PRIu64
                               " MiB/s), %" PRIu64 " pages dirty after it, throttle %u%%, expected downtime %" PRIu64
                               " ms\n",
                               its[i].index + 1, its[i].bytes >> 20, its[i].duration_us / 1000, its[i].bandwidth >> 20,
                               its[i].dirty_pages, its[i].throttle_percent, its[i].expected_downtime_us / 1000);
                sum_total += st.elapsed_us / 1000;
                sum_down += st.downtime_us;
                sum_bytes += st.bytes_processed;
                migration_job_free(src.job);
                migration_job_free(dst.job);
                vm_free(src.vm);
                vm_free(dst.vm);
                vm_config_free(cfg);
        }
        printf("mean of %u: total %" PRIu64 " ms, downtime %" PRIu64 " us, %" PRIu64 " MiB sent, throughput %" PRIu64
               " MiB/s\n",
               runs, sum_total / runs, sum_down / runs, (sum_bytes / runs) >> 20,
               sum_total ? (sum_bytes / runs) * 1000 / (sum_total / runs) >> 20 : 0);
        return 0;
}
