/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* libFuzzer target: the saved-state parser (state.c) over the device table of a
 * two-vCPU, 64 MiB machine with a 4096-byte XSAVE area (what the seed corpus was saved
 * from), no VM and no KVM call: every section is matched to its device and checked; a
 * stream that passes has its port devices' sections (UART, PM) loaded, as a restore
 * would. */
#include <stdint.h>
#include <stdlib.h>

#include "vm-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void no_irq(void *o, int level) {
        (void)o, (void)level;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static Vm vm;
        static Vcpu vcpus[2];
        static bool ready;
        StateSection *sec;
        char err[256];

        if (!ready) {
                vm.n_vcpus = 2;
                vm.vcpus = vcpus;
                for (unsigned i = 0; i < 2; i++)
                        vcpus[i] = (Vcpu){ .vm = &vm, .idx = i, .fd = -1 };
                vm.xsave_size = 4096;
                vm.mem.size = 64 << 20;
                vm.vm_fd = -1;
                uart_init(&vm.uart, no_irq, NULL, NULL);
                pm_init(&vm.pm, no_irq, NULL, NULL);
                if (board_init_devices(&vm) < 0)
                        abort();
                ready = true;
        }
        sec = calloc(vm.n_devices, sizeof *sec);
        if (!sec)
                return 0;
        if (vm_state_parse(&vm, data, size, sec, err, sizeof err) == 0)
                for (unsigned i = 0; i < vm.n_devices; i++)
                        if (vm.devices[i].ops == &uart_device_ops || vm.devices[i].ops == &pm_device_ops)
                                if (device_load(&vm.devices[i], &sec[i]) < 0)
                                        abort(); /* check() accepted it: load must too */
        free(sec);
        return 0;
}
