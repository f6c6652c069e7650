/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* vm-hop: boots one VM from a JSON config (serial mode "file") and moves it HOPS times
 * into a fresh KVM VM of the same process, as a migration's switchover does it: pause,
 * save the vCPU/device state, wait DOWNTIME_MS (a stand-in for the network), copy RAM,
 * restore into an incoming VM, resume it, stop the old one. VM k writes its
 * console to CONSOLE.k (k = 0 .. HOPS). The first hop comes when TEXT is on the first
 * console; after each hop the guest runs SETTLE_S seconds (then the next hop); after the
 * last, the power button is pressed and the guest must power off.
 *
 *   vm-hop CONFIG.json CONSOLE HOPS DOWNTIME_MS SETTLE_S TEXT
 *
 * Prints "vm-hop: hop K downtime_us=N" (pause to resume, as this process measured it).
 * Exit 0 when every hop worked and the guest powered off at the end, 1 on a timeout, 2 on
 * a crash or failed call, 3 on bad arguments, 77 without /dev/kvm. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "console-watch.h"
#include "test-util.h"
#include "vm.h"
#include "vm-migration.h"

#define WAIT_MS 300000

static uint64_t now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Dispatches the VM's events until 'text' is on its console (text NULL: until the
 * deadline or the VM stops). Returns 0, 1 on timeout, 2 if the VM crashed/stopped. */
static int run_until(Vm *vm, const char *console, const char *text, uint64_t timeout_ms) {
        uint64_t deadline = now_ms() + timeout_ms;

        for (;;) {
                uint64_t now = now_ms();
                VmState s = vm_get_state(vm);
                if (text) {
                        char *t = read_file(console);
                        bool found = strstr(t, text) != NULL;
                        free(t);
                        if (found)
                                return 0;
                }
                if (s == VM_STATE_STOPPED || s == VM_STATE_CRASHED)
                        return 2;
                if (now >= deadline)
                        return text ? 1 : 0;
                struct pollfd p = { .fd = vm_get_event_fd(vm), .events = POLLIN };
                if (poll(&p, 1, (int)MIN(deadline - now, (uint64_t)100)) > 0)
                        vm_dispatch_events(vm);
        }
}

static int new_vm(const char *json, const char *console, unsigned k, bool incoming, Vm **ret,
                  char **ret_console) {
        _cleanup_free_ char *err = NULL, *name = NULL;
        VmConfig *c = NULL;
        int r;

        r = vm_config_parse(json, &c, &err);
        if (r < 0) {
                fprintf(stderr, "vm-hop: invalid config: %s\n", err ? err : strerror(-r));
                return r;
        }
        free(c->serial_path);
        if (asprintf(&c->serial_path, "%s.%u", console, k) < 0 || asprintf(&name, "hop%u", k) < 0)
                return -ENOMEM;
        unlink(c->serial_path);
        *ret_console = strdup(c->serial_path);
        r = vm_new(name, c, ret);
        if (r >= 0 && incoming)
                r = vm_prepare_incoming(*ret);
        else if (r >= 0)
                r = vm_start(*ret);
        vm_config_free(c);
        return r;
}

static int hop(Vm *src, Vm *dst, unsigned downtime_ms, uint64_t *ret_us) {
        _cleanup_free_ uint8_t *blob = NULL;
        uint8_t *src_ram, *dst_ram;
        uint64_t src_size, dst_size, t0 = now_us();
        const VmMemoryRegion *regions;
        unsigned n_regions;
        size_t blob_size;
        int r;

        r = vm_pause(src);
        if (r >= 0)
                r = vm_save_state(src, &blob, &blob_size);
        if (r < 0)
                return r;
        uint64_t until = t0 + downtime_ms * UINT64_C(1000);
        struct timespec ts = { .tv_sec = (time_t)(until / 1000000), .tv_nsec = (long)(until % 1000000) * 1000 };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
        r = vm_get_ram(src, &src_ram, &src_size, &regions, &n_regions);
        if (r >= 0)
                r = vm_get_ram(dst, &dst_ram, &dst_size, &regions, &n_regions);
        if (r < 0)
                return r;
        if (src_size != dst_size)
                return -EINVAL;
        memcpy(dst_ram, src_ram, src_size);
        r = vm_restore_state(dst, blob, blob_size);
        if (r >= 0)
                r = vm_resume_incoming(dst);
        *ret_us = now_us() - t0;
        if (r >= 0)
                r = vm_stop(src);
        return r;
}

int main(int argc, char **argv) {
        _cleanup_free_ char *json = NULL;
        char *con[16] = {};
        Vm *vm[16] = {};
        unsigned hops, downtime_ms, settle_s;
        const char *text;
        int r, ret = 2;

        if (argc != 7) {
                fprintf(stderr, "usage: %s CONFIG.json CONSOLE HOPS DOWNTIME_MS SETTLE_S TEXT\n", argv[0]);
                return 3;
        }
        hops = (unsigned)atoi(argv[3]);
        downtime_ms = (unsigned)atoi(argv[4]);
        settle_s = (unsigned)atoi(argv[5]);
        text = argv[6];
        if (hops < 1 || hops >= ELEMENTSOF(vm) || downtime_ms > 60000 || settle_s > 600)
                return 3;
        require_kvm();
        json = read_file(argv[1]);

        r = new_vm(json, argv[2], 0, false, &vm[0], &con[0]);
        if (r < 0) {
                fprintf(stderr, "vm-hop: failed to start: %s\n", strerror(-r));
                goto out;
        }
        for (unsigned k = 1; k <= hops; k++) {
                uint64_t us = 0;
                /* After a hop, the guest runs SETTLE_S seconds before the next one. */
                if (k > 1 && run_until(vm[k - 1], con[k - 1], NULL, (uint64_t)settle_s * 1000) != 0) {
                        fprintf(stderr, "vm-hop: the guest stopped or crashed after hop %u\n", k - 1);
                        goto out;
                }
                r = k > 1 ? 0 : run_until(vm[k - 1], con[k - 1], text, WAIT_MS);
                if (r != 0) {
                        fprintf(stderr, "vm-hop: \"%s\" not seen on console %u (%s)\n", text, k - 1,
                                r == 1 ? "timeout" : "VM stopped or crashed");
                        ret = r;
                        goto out;
                }
                r = new_vm(json, argv[2], k, true, &vm[k], &con[k]);
                if (r >= 0)
                        r = hop(vm[k - 1], vm[k], downtime_ms, &us);
                if (r < 0) {
                        fprintf(stderr, "vm-hop: hop %u failed: %s\n", k, strerror(-r));
                        goto out;
                }
                printf("vm-hop: hop %u downtime_us=%" PRIu64 "\n", k, us);
                fflush(stdout);
        }
        r = run_until(vm[hops], con[hops], NULL, (uint64_t)settle_s * 1000);
        if (r != 0) {
                fprintf(stderr, "vm-hop: the guest stopped or crashed after the last hop\n");
                goto out;
        }
        r = vm_request_shutdown(vm[hops]);
        if (r < 0) {
                fprintf(stderr, "vm-hop: shutdown: %s\n", strerror(-r));
                goto out;
        }
        r = run_until(vm[hops], con[hops], NULL, 120000);
        if (vm_get_state(vm[hops]) == VM_STATE_STOPPED) {
                printf("vm-hop: powered off after the power button\n");
                ret = 0;
        } else {
                fprintf(stderr, "vm-hop: no power-off within 120 s of the power button (%s)\n",
                        vm_state_to_string(vm_get_state(vm[hops])));
                ret = 1;
        }
out:
        for (unsigned k = 0; k < ELEMENTSOF(vm); k++) {
                vm_free(vm[k]);
                free(con[k]);
        }
        return ret;
}
