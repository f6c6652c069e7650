/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The KVM clock (what kvmclock guests read as system time). */
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "vm-internal.h"

static int clock_save(void *o, void *buf, size_t size) {
        struct kvm_clock_data c = {};
        Vm *vm = o;

        (void)size;
        if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &c) < 0)
                return negative_errno();
        memcpy(buf, &c, sizeof c);
        vm->saved_clock = c; /* the vCPUs' TSCs are recorded as of this read (clock.c) */
        vm->saved_clock_valid = true;
        return 0;
}

static int clock_load(void *o, uint16_t version, const void *data, size_t size) {
        struct kvm_clock_data c;
        Vm *vm = o;

        (void)version, (void)size;
        memcpy(&c, data, sizeof c);
        if (vm->clock_restore_active) { /* begun before the vCPUs (vm_restore_state) */
                vm->clock_restore_active = false;
                return vm_clock_restore_end(vm, &c, &vm->clock_restore);
        }
        c.flags = 0;
        if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &c) < 0)
                return log_debug_errno(errno, "state: KVM_SET_CLOCK failed: %m");
        return 0;
}

/* Loaded last, once every vCPU's TSC is back. */
const DeviceOps clock_device_ops = {
        .name = "clock",
        .section = SEC_CLOCK,
        .version = 1,
        .min_version = 1,
        .phase = DEVICE_LOAD_LATE,
        .size = sizeof(struct kvm_clock_data),
        .save = clock_save,
        .load = clock_load,
};
