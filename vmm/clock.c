/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* kvmclock and TSC across save/restore, kept consistent with each other (the procedure
 * of the kernel's KVM API documentation for KVM_VCPU_TSC_OFFSET):
 * - save: KVM_GET_CLOCK gives the guest clock, the host's realtime and the host TSC at
 *   one instant S (KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC); each vCPU's TSC is recorded
 *   as its value at S (host TSC at S + the vCPU's TSC offset), not at the moment its MSRs
 *   are read;
 * - restore: KVM_SET_CLOCK with KVM_CLOCK_REALTIME advances the guest clock by the
 *   realtime that passed since S, KVM_GET_CLOCK then gives guest clock and host TSC at an
 *   instant D, and each vCPU's TSC is set to its value at S plus (clock at D - clock at S)
 *   in TSC ticks. Guest time then neither stalls nor jumps over the switchover: kvmclock
 *   and TSC both move on by the real time elapsed, and stay in step (Linux's clocksource
 *   watchdog compares them).
 * Where KVM cannot do this (no masterclock: no HOST_TSC flag; no REALTIME), the old
 * behaviour stays: TSC and clock resume from their saved values. */
#include <sys/ioctl.h>

#include "clock.h"
#include "vm-internal.h"

static int tsc_offset(Vcpu *v, uint64_t *ret) {
        struct kvm_device_attr a = {
                .group = KVM_VCPU_TSC_CTRL,
                .attr = KVM_VCPU_TSC_OFFSET,
                .addr = (uint64_t)(uintptr_t)ret,
        };

        if (ioctl(v->fd, KVM_HAS_DEVICE_ATTR, &a) < 0 || ioctl(v->fd, KVM_GET_DEVICE_ATTR, &a) < 0)
                return -ENXIO;
        return 0;
}

#define MSR_IA32_TSC 0x10

uint64_t vm_clock_saved_msr(Vcpu *v, const struct kvm_clock_data *c, uint32_t index, uint64_t data) {
        uint64_t off;

        if (index != MSR_IA32_TSC || !(c->flags & KVM_CLOCK_HOST_TSC) || tsc_offset(v, &off) < 0)
                return data;
        return c->host_tsc + off; /* no TSC scaling: guest TSC = host TSC + offset */
}

int vm_clock_restore_begin(Vm *vm, const struct kvm_clock_data *saved, VmClockRestore *ret) {
        int cap = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK);
        struct kvm_clock_data set = { .clock = saved->clock }, now = {};
        int khz;

        *ret = (VmClockRestore){};
        if (cap < 0 || !(cap & KVM_CLOCK_REALTIME) || !(cap & KVM_CLOCK_HOST_TSC) ||
            (saved->flags & (KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC)) !=
                    (KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC) ||
            vm->n_vcpus == 0)
                return 0;
        khz = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
        if (khz <= 0)
                return 0;
        set.flags = KVM_CLOCK_REALTIME;
        set.realtime = saved->realtime;
        if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &set) < 0)
                return negative_errno();
        if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &now) < 0)
                return negative_errno();
        if (!(now.flags & KVM_CLOCK_HOST_TSC) || now.clock < saved->clock)
                return 0; /* vm_clock_restore_end() puts the clock back as saved */
        *ret = (VmClockRestore){
                .valid = true,
                .advance_tsc = (now.clock - saved->clock) * (uint64_t)khz / 1000000,
                .host_tsc = now.host_tsc,
        };
        return 0;
}

int vm_clock_restore_tsc(Vcpu *v, const VmClockRestore *c, uint64_t saved_tsc) {
        /* The offset that puts the TSC at its saved value plus the clock's advance at D.
         * vCPUs saved in step get equal offsets, so KVM sees their TSCs as synchronized
         * and keeps its masterclock (whose absence leaves kvmclock per-vCPU and makes
         * the next save lack KVM_CLOCK_HOST_TSC). */
        uint64_t offset = saved_tsc + c->advance_tsc - c->host_tsc;
        struct kvm_device_attr a = {
                .group = KVM_VCPU_TSC_CTRL,
                .attr = KVM_VCPU_TSC_OFFSET,
                .addr = (uint64_t)(uintptr_t)&offset,
        };

        if (!c->valid || ioctl(v->fd, KVM_HAS_DEVICE_ATTR, &a) < 0)
                return 0;
        if (ioctl(v->fd, KVM_SET_DEVICE_ATTR, &a) < 0)
                return negative_errno();
        return 1;
}

int vm_clock_restore_end(Vm *vm, const struct kvm_clock_data *saved, const VmClockRestore *c) {
        struct kvm_clock_data set = { .clock = saved->clock };

        if (c->valid)
                return 0;
        if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &set) < 0)
                return negative_errno();
        return 0;
}
