/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* vm-boot: boots one VM from a JSON config in the foreground, on the VMM core library, and
 * waits until its console (serial mode "file") shows a given text, the VM stops, or the
 * timeout passes. Used by the Linux boot check and by bench/.
 *
 *   vm-boot [--shutdown] CONFIG.json TIMEOUT_SECONDS [TEXT]
 *
 * Exit: 0 when TEXT appeared (or, without TEXT, the VM powered off), 1 on timeout,
 * 2 on a crash, 77 without /dev/kvm, 3 on a bad config. With --shutdown, TEXT is where
 * the VM's power button is pressed (vm_request_shutdown(), as Shutdown() does), and the
 * exit is 0 only when the guest then powers off (state "stopped"). */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "console-watch.h"
#include "test-util.h"
#include "vm.h"

int main(int argc, char **argv) {
        _cleanup_free_ char *json = NULL, *err = NULL;
        VmConfig *c = NULL;
        Vm *vm = NULL;
        uint64_t t0, deadline;
        const char *text;
        bool shutdown = false, pressed = false;
        int r, ret = 1;

        if (argc > 1 && strcmp(argv[1], "--shutdown") == 0) {
                shutdown = true;
                argv++;
                argc--;
        }
        if (argc < 3 || argc > 4 || (shutdown && argc != 4)) {
                fprintf(stderr, "usage: %s [--shutdown] CONFIG.json TIMEOUT_SECONDS [TEXT]\n", argv[0]);
                return 3;
        }
        text = argc == 4 ? argv[3] : NULL;
        require_kvm();

        json = read_file(argv[1]);
        r = vm_config_parse(json, &c, &err);
        if (r < 0) {
                fprintf(stderr, "vm-boot: invalid config: %s\n", err ? err : strerror(-r));
                return 3;
        }
        if (text && c->serial_mode != SERIAL_MODE_FILE) {
                fprintf(stderr, "vm-boot: waiting for text needs serial mode \"file\"\n");
                return 3;
        }
        r = vm_new("boot", c, &vm);
        if (r >= 0) {
                t0 = now_ms();
                r = vm_start(vm);
        }
        if (r < 0) {
                fprintf(stderr, "vm-boot: failed to start: %s\n", strerror(-r));
                return 2;
        }
        deadline = t0 + (uint64_t)atoi(argv[2]) * 1000;

        for (;;) {
                uint64_t now = now_ms();
                if (text && !pressed) {
                        char *t = read_file(c->serial_path);
                        bool found = strstr(t, text) != NULL;
                        free(t);
                        if (found) {
                                printf("vm-boot: found \"%s\" after %" PRIu64 " ms\n", text, now - t0);
                                if (!shutdown) {
                                        ret = 0;
                                        break;
                                }
                                r = vm_request_shutdown(vm);
                                if (r < 0) {
                                        fprintf(stderr, "vm-boot: shutdown: %s\n", strerror(-r));
                                        ret = 2;
                                        break;
                                }
                                printf("vm-boot: power button pressed\n");
                                pressed = true;
                        }
                }
                if (vm_get_state(vm) == VM_STATE_STOPPED) {
                        printf("vm-boot: powered off after %" PRIu64 " ms\n", now - t0);
                        ret = text && !pressed ? 1 : 0;
                        break;
                }
                if (vm_get_state(vm) == VM_STATE_CRASHED) {
                        printf("vm-boot: crashed after %" PRIu64 " ms\n", now - t0);
                        ret = 2;
                        break;
                }
                if (now >= deadline) {
                        printf("vm-boot: timeout after %" PRIu64 " ms\n", now - t0);
                        break;
                }
                /* Guest events wake us at once; console text is checked every 100 ms. */
                struct pollfd p = { .fd = vm_get_event_fd(vm), .events = POLLIN };
                if (poll(&p, 1, (int)MIN(deadline - now, (uint64_t)100)) > 0)
                        vm_dispatch_events(vm);
        }
        vm_free(vm);
        vm_config_free(c);
        return ret;
}
