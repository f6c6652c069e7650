/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <linux/kvm.h>
#include <stdint.h>

struct Vcpu;

/* The XCR0 a vCPU starts with: the user XSAVE features of CPUID leaf 0xD that the
 * feature leaves announce, in a combination XSETBV accepts (x87 at least). */
uint64_t guest_cpu_initial_xcr0(const struct kvm_cpuid2 *cpuid);

/* After CPUID, MSRs and LAPIC set-up of a fresh vCPU: XCR0 as above; vCPUs other than 0
 * wait for INIT/SIPI (KVM_MP_STATE_UNINITIALIZED, LINT0 masked). */
int guest_cpu_reset(struct Vcpu *v);
