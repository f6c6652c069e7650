/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Per-vCPU reset state a stock SMP guest relies on, beyond CPUID/MSR/LAPIC set-up:
 * - the application processors wait for INIT/SIPI in the in-kernel LAPIC, as on real
 *   hardware (KVM_MP_STATE_UNINITIALIZED, LINT0 masked), the boot CPU runs;
 * - XCR0 starts as the set of user XSAVE features CPUID leaf 0xD announces, so the leaf's
 *   EBX (the XSAVE area size for the current XCR0, kept up to date by KVM) agrees with the
 *   size a guest computes from the leaf's sub-leaves even where the guest's own XSETBV
 *   never reaches KVM (QEMU TCG's nested SVM does not intercept XSETBV: Linux then warned
 *   "XSAVE consistency problem: size 2696 != kernel_size 576"). A guest that writes XCR0
 *   itself replaces the value. */
#include <string.h>
#include <sys/ioctl.h>

#include "guest-cpu.h"
#include "vm-internal.h"

#define XFEATURE_FP (1u << 0)
#define XFEATURE_SSE (1u << 1)
#define XFEATURE_YMM (1u << 2)
#define XFEATURE_BNDREGS (1u << 3)
#define XFEATURE_BNDCSR (1u << 4)
#define XFEATURE_AVX512 (7u << 5) /* opmask, ZMM_Hi256, Hi16_ZMM */
#define XFEATURE_PKRU (1u << 9)
#define APIC_LVT0 0x350
#define APIC_LVT_MASKED (1u << 16)

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx) {
        for (uint32_t i = 0; i < c->nent; i++)
                if (c->entries[i].function == fn && c->entries[i].index == idx)
                        return &c->entries[i];
        return NULL;
}

uint64_t guest_cpu_initial_xcr0(const struct kvm_cpuid2 *c) {
        const struct kvm_cpuid_entry2 *d = find(c, 0xd, 0), *l1 = find(c, 1, 0), *l7 = find(c, 7, 0);
        uint64_t x;

        if (!d || !l1 || !(l1->ecx & (1u << 26))) /* XSAVE */
                return XFEATURE_FP;
        /* User state components only (bits 17-18, AMX, need the guest's permission). */
        x = (d->eax | (uint64_t)d->edx << 32) &
            (XFEATURE_FP | XFEATURE_SSE | XFEATURE_YMM | XFEATURE_BNDREGS | XFEATURE_BNDCSR |
             XFEATURE_AVX512 | XFEATURE_PKRU);
        x |= XFEATURE_FP;
        /* The combinations XSETBV accepts, and only what the feature leaves announce. */
        if (!(l1->ecx & (1u << 28)) || !(x & XFEATURE_SSE)) /* AVX */
                x &= ~(uint64_t)(XFEATURE_YMM | XFEATURE_AVX512);
        if (!l7 || !(l7->ebx & (1u << 16)) || (x & XFEATURE_AVX512) != XFEATURE_AVX512)
                x &= ~(uint64_t)XFEATURE_AVX512;
        if (!l7 || !(l7->ebx & (1u << 14)) || (x & (XFEATURE_BNDREGS | XFEATURE_BNDCSR)) !=
                                                      (XFEATURE_BNDREGS | XFEATURE_BNDCSR))
                x &= ~(uint64_t)(XFEATURE_BNDREGS | XFEATURE_BNDCSR);
        if (!l7 || !(l7->ecx & (1u << 3))) /* PKU */
                x &= ~(uint64_t)XFEATURE_PKRU;
        return x;
}

static int set_xcr0(Vcpu *v) {
        struct kvm_xcrs x = { .nr_xcrs = 1 };

        x.xcrs[0].xcr = 0;
        x.xcrs[0].value = guest_cpu_initial_xcr0(v->vm->cpuid);
        if (ioctl(v->fd, KVM_SET_XCRS, &x) < 0)
                return negative_errno();
        return 0;
}

static int park_ap(Vcpu *v) {
        struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_UNINITIALIZED };
        struct kvm_lapic_state l;
        uint32_t reg;

        if (ioctl(v->fd, KVM_GET_LAPIC, &l) < 0)
                return negative_errno();
        memcpy(&reg, l.regs + APIC_LVT0, 4);
        reg |= APIC_LVT_MASKED;
        memcpy(l.regs + APIC_LVT0, &reg, 4);
        if (ioctl(v->fd, KVM_SET_LAPIC, &l) < 0)
                return negative_errno();
        if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
                return negative_errno();
        return 0;
}

int guest_cpu_reset(Vcpu *v) {
        int r;

        /* Best effort: a KVM without XCRs (no XSAVE) boots guests that do not use it. */
        (void)set_xcr0(v);
        if (v->idx == 0)
                return 0;
        r = park_ap(v);
        return r;
}
