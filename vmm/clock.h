/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <linux/kvm.h>
#include <stdbool.h>
#include <stdint.h>

struct Vm;
struct Vcpu;

/* Save: the value to record for MSR 'index' read as 'data'. For the TSC, its value at the
 * instant of KVM_GET_CLOCK 'c' when KVM reported the host TSC there. */
uint64_t vm_clock_saved_msr(struct Vcpu *v, const struct kvm_clock_data *c, uint32_t index,
                            uint64_t data);

typedef struct VmClockRestore {
        bool valid;           /* clock set with KVM_CLOCK_REALTIME and TSCs to follow */
        uint64_t advance_tsc; /* guest clock advance since the save, in TSC ticks */
        uint64_t host_tsc;    /* host TSC at the instant of the destination's clock read */
} VmClockRestore;

/* Restore, before the vCPUs: sets the guest clock (advanced by the realtime elapsed since
 * the save, where both sides support it). */
int vm_clock_restore_begin(struct Vm *vm, const struct kvm_clock_data *saved, VmClockRestore *ret);
/* Sets the TSC of a vCPU whose saved TSC was 'saved_tsc', in step with the clock set by
 * vm_clock_restore_begin(): 1 when done, 0 when the caller must set it itself. */
int vm_clock_restore_tsc(struct Vcpu *v, const VmClockRestore *c, uint64_t saved_tsc);
/* After the vCPUs: where begin could not keep the two in step, the clock as saved. */
int vm_clock_restore_end(struct Vm *vm, const struct kvm_clock_data *saved, const VmClockRestore *c);
