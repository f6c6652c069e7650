/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* x86 CPU set-up: the CPUID KVM supports and what each vCPU is given, the MSRs saved
 * state carries, and a vCPU's initial MSRs and LAPIC LINT0/LINT1 wiring. */
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "guest-cpu.h"
#include "vm-internal.h"

int x86_get_supported_cpuid(Vm *vm) {
        for (uint32_t n = 64; n <= 4096; n *= 2) {
                struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
                if (!c)
                        return -ENOMEM;
                c->nent = n;
                if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
                        vm->cpuid = c;
                        return 0;
                }
                free(c);
                if (errno != E2BIG)
                        return negative_errno();
        }
        return -E2BIG;
}

/* The MSRs save/restore carries: those of KVM_GET_MSR_INDEX_LIST this vCPU can read. */
int x86_probe_msrs(Vm *vm) {
        struct kvm_msr_list probe = { .nmsrs = 0 };
        _cleanup_free_ struct kvm_msr_list *list = NULL;

        if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
                return negative_errno();
        if (probe.nmsrs == 0 || probe.nmsrs > 4096)
                return -EIO;
        list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
        if (!list)
                return -ENOMEM;
        list->nmsrs = probe.nmsrs;
        if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0)
                return negative_errno();

        vm->msr_indices = calloc(MIN(list->nmsrs, VM_MAX_SAVED_MSRS), sizeof(uint32_t));
        if (!vm->msr_indices)
                return -ENOMEM;
        for (uint32_t i = 0; i < list->nmsrs && vm->n_msrs < VM_MAX_SAVED_MSRS; i++) {
                struct {
                        struct kvm_msrs h;
                        struct kvm_msr_entry e;
                } m = { .h.nmsrs = 1, .e.index = list->indices[i] };
                if (ioctl(vm->vcpus[0].fd, KVM_GET_MSRS, &m) == 1)
                        vm->msr_indices[vm->n_msrs++] = list->indices[i];
        }
        return 0;
}

static int set_cpuid(Vcpu *v) {
        const struct kvm_cpuid2 *src = v->vm->cpuid;
        size_t sz = sizeof(*src) + src->nent * sizeof(src->entries[0]);
        _cleanup_free_ struct kvm_cpuid2 *c = malloc(sz);

        if (!c)
                return -ENOMEM;
        memcpy(c, src, sz);
        for (uint32_t i = 0; i < c->nent; i++) {
                struct kvm_cpuid_entry2 *e = &c->entries[i];
                switch (e->function) {
                case 1:
                        /* Initial APIC id and logical processor count. */
                        e->ebx = (e->ebx & 0x0000ffff) | (v->vm->n_vcpus & 0xff) << 16 | v->idx << 24;
                        if (v->vm->n_vcpus > 1)
                                e->edx |= 1u << 28; /* HTT */
                        /* KVM does not report the hypervisor bit; guests look for the
                         * KVM leaves at 0x40000000 only when it is set. */
                        e->ecx |= 1u << 31;
                        break;
                case 0xb:
                case 0x1f:
                        e->edx = v->idx; /* x2APIC id */
                        break;
                default:
                        break;
                }
        }
        if (ioctl(v->fd, KVM_SET_CPUID2, c) < 0)
                return negative_errno();
        return 0;
}

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_EXTINT 0x700
#define APIC_MODE_NMI 0x400

static int set_initial_msrs(Vcpu *v) {
        struct {
                struct kvm_msrs h;
                struct kvm_msr_entry e[2];
        } m = {
                .h.nmsrs = 2,
                .e = {
                        { .index = MSR_IA32_MISC_ENABLE, .data = 1 }, /* fast strings */
                        { .index = MSR_MTRR_DEF_TYPE, .data = (1u << 11) | 6 }, /* enabled, WB */
                },
        };
        /* Best effort: a KVM that refuses one of them still boots our guests. */
        if (ioctl(v->fd, KVM_SET_MSRS, &m) < 0)
                return negative_errno();
        return 0;
}

static int set_lint(Vcpu *v) {
        struct kvm_lapic_state l;
        uint32_t reg;

        if (ioctl(v->fd, KVM_GET_LAPIC, &l) < 0)
                return negative_errno();
        /* The 8259 reaches the boot CPU through LINT0 as ExtINT; NMIs come in on LINT1. */
        memcpy(&reg, l.regs + APIC_LVT0, 4);
        reg = (reg & ~0x1e700u & ~(1u << 16)) | APIC_MODE_EXTINT;
        memcpy(l.regs + APIC_LVT0, &reg, 4);
        memcpy(&reg, l.regs + APIC_LVT1, 4);
        reg = (reg & ~0x1e700u & ~(1u << 16)) | APIC_MODE_NMI;
        memcpy(l.regs + APIC_LVT1, &reg, 4);
        if (ioctl(v->fd, KVM_SET_LAPIC, &l) < 0)
                return negative_errno();
        return 0;
}

int vcpu_init_cpu_state(Vcpu *v) {
        int r;

        r = set_cpuid(v);
        if (r < 0)
                return r;
        (void)set_initial_msrs(v);
        r = set_lint(v);
        if (r < 0)
                return r;
        return guest_cpu_reset(v); /* guest-cpu.c: XCR0; APs wait for INIT/SIPI */
}
