/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The in-kernel 8254 PIT's state. */
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "vm-internal.h"

static int pit_save(void *o, void *buf, size_t size) {
        Vm *vm = o;

        (void)size;
        if (ioctl(vm->vm_fd, KVM_GET_PIT2, buf) < 0)
                return negative_errno();
        return 0;
}

static int pit_load(void *o, uint16_t version, const void *data, size_t size) {
        struct kvm_pit_state2 pit;
        Vm *vm = o;

        (void)version, (void)size;
        memcpy(&pit, data, sizeof pit);
        if (ioctl(vm->vm_fd, KVM_SET_PIT2, &pit) < 0)
                return log_debug_errno(errno, "state: KVM_SET_PIT2 failed: %m");
        return 0;
}

const DeviceOps pit_device_ops = {
        .name = "pit",
        .section = SEC_PIT,
        .version = 1,
        .min_version = 1,
        .phase = DEVICE_LOAD_EARLY,
        .size = sizeof(struct kvm_pit_state2),
        .save = pit_save,
        .load = pit_load,
};
