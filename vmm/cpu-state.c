/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* A vCPU's own state as sections of the saved state: registers, FPU/XSAVE, XCRs, debug
 * registers, MSRs, pending events and the MP state. (Its local APIC is in irqchip.c.)
 * The ranks give the order KVM needs on load: sregs set the APIC base before the LAPIC
 * registers, the LAPIC mode goes before the TSC deadline MSR, and events come last. */
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "vm-internal.h"

typedef struct MsrRecord {
        uint32_t index;
        uint32_t reserved;
        uint64_t data;
} MsrRecord;

static int get(Vcpu *v, unsigned long req, void *buf) {
        if (ioctl(v->fd, req, buf) < 0)
                return negative_errno();
        return 0;
}

#define DEFINE_SIMPLE(ident, type, getreq, setreq)                                                 \
        static int ident##_save(void *o, void *buf, size_t size) {                                 \
                type t;                                                                            \
                int r = get(o, getreq, &t);                                                        \
                (void)size;                                                                        \
                if (r >= 0)                                                                        \
                        memcpy(buf, &t, sizeof t);                                                 \
                return r;                                                                          \
        }                                                                                          \
        static int ident##_load(void *o, uint16_t version, const void *data, size_t size) {       \
                Vcpu *v = o;                                                                       \
                type t;                                                                            \
                (void)version, (void)size;                                                         \
                memcpy(&t, data, sizeof t);                                                        \
                if (ioctl(v->fd, setreq, &t) < 0)                                                  \
                        return log_debug_errno(errno, "state: " #setreq " failed: %m");            \
                return 0;                                                                          \
        }

DEFINE_SIMPLE(regs, struct kvm_regs, KVM_GET_REGS, KVM_SET_REGS)
DEFINE_SIMPLE(sregs, struct kvm_sregs, KVM_GET_SREGS, KVM_SET_SREGS)
DEFINE_SIMPLE(xcrs, struct kvm_xcrs, KVM_GET_XCRS, KVM_SET_XCRS)
DEFINE_SIMPLE(debugregs, struct kvm_debugregs, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS)
DEFINE_SIMPLE(events, struct kvm_vcpu_events, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS)
DEFINE_SIMPLE(mp_state, struct kvm_mp_state, KVM_GET_MP_STATE, KVM_SET_MP_STATE)

#define VCPU_OPS(ident, type, nm, sec, rk)                                                             \
        const DeviceOps ident##_device_ops = {                                                     \
                .name = nm,                                                                        \
                .section = sec,                                                                    \
                .version = 1,                                                                      \
                .min_version = 1,                                                                  \
                .per_vcpu = true,                                                                  \
                .phase = DEVICE_LOAD_VCPU,                                                         \
                .rank = rk,                                                                        \
                .size = sizeof(type),                                                               \
                .save = ident##_save,                                                              \
                .load = ident##_load,

VCPU_OPS(regs, struct kvm_regs, "regs", SEC_VCPU_REGS, 0)
};
VCPU_OPS(sregs, struct kvm_sregs, "sregs", SEC_VCPU_SREGS, 3)
};
static int xcrs_check(void *o, uint16_t version, const void *data, size_t size) {
        struct kvm_xcrs x;

        (void)o, (void)version, (void)size;
        memcpy(&x, data, sizeof x);
        return x.nr_xcrs > KVM_MAX_XCRS ? -EBADMSG : 0;
}
VCPU_OPS(xcrs, struct kvm_xcrs, "xcrs", SEC_VCPU_XCRS, 2)
        .check = xcrs_check,
};
VCPU_OPS(debugregs, struct kvm_debugregs, "debugregs", SEC_VCPU_DEBUGREGS, 8)
};
VCPU_OPS(events, struct kvm_vcpu_events, "vcpu-events", SEC_VCPU_EVENTS, 7)
};
VCPU_OPS(mp_state, struct kvm_mp_state, "mp-state", SEC_VCPU_MP_STATE, 6)
};

/* --- XSAVE: as big as KVM_CAP_XSAVE2 says on this host --- */

static size_t xsave_size(void *o) {
        Vcpu *v = o;
        return v->vm->xsave_size;
}

static int xsave_save(void *o, void *buf, size_t size) {
        Vcpu *v = o;

        if (size > sizeof(struct kvm_xsave))
                return get(v, KVM_GET_XSAVE2, buf);
        return get(v, KVM_GET_XSAVE, buf);
}

static int xsave_load(void *o, uint16_t version, const void *data, size_t size) {
        _cleanup_free_ void *x = malloc(size);
        Vcpu *v = o;

        (void)version;
        if (!x)
                return -ENOMEM;
        memcpy(x, data, size);
        if (ioctl(v->fd, KVM_SET_XSAVE, x) < 0)
                return log_debug_errno(errno, "state: KVM_SET_XSAVE failed: %m");
        return 0;
}

const DeviceOps xsave_device_ops = {
        .name = "xsave",
        .section = SEC_VCPU_XSAVE,
        .version = 1,
        .min_version = 1,
        .per_vcpu = true,
        .phase = DEVICE_LOAD_VCPU,
        .rank = 1,
        .save_size = xsave_size,
        .save = xsave_save,
        .load = xsave_load,
};

/* --- MSRs: a count, then (index, value) records; the list is the source host's --- */

static size_t msrs_size(void *o) {
        Vcpu *v = o;
        return (v->vm->n_msrs + 1) * sizeof(MsrRecord);
}

static int msrs_save(void *o, void *buf, size_t size) {
        Vcpu *v = o;
        Vm *vm = v->vm;
        _cleanup_free_ struct kvm_msrs *msrs = NULL;
        MsrRecord rec;
        int n;

        if (size != msrs_size(o))
                return -EINVAL;
        msrs = calloc(1, sizeof(*msrs) + vm->n_msrs * sizeof(struct kvm_msr_entry));
        if (!msrs)
                return -ENOMEM;
        msrs->nmsrs = vm->n_msrs;
        for (unsigned k = 0; k < vm->n_msrs; k++)
                msrs->entries[k].index = vm->msr_indices[k];
        n = ioctl(v->fd, KVM_GET_MSRS, msrs);
        if (n < 0)
                return negative_errno();
        if ((unsigned)n != vm->n_msrs)
                return -EIO;
        /* Record 0 is the header: the count. */
        rec = (MsrRecord){ .index = vm->n_msrs };
        memcpy(buf, &rec, sizeof rec);
        for (unsigned k = 0; k < vm->n_msrs; k++) {
                uint64_t d = msrs->entries[k].data;
                if (vm->saved_clock_valid) /* clock.c: the TSC as of the clock read */
                        d = vm_clock_saved_msr(v, &vm->saved_clock, msrs->entries[k].index, d);
                rec = (MsrRecord){ .index = msrs->entries[k].index, .data = d };
                memcpy((uint8_t *)buf + (k + 1) * sizeof rec, &rec, sizeof rec);
        }
        return 0;
}

static int msrs_check(void *o, uint16_t version, const void *data, size_t size) {
        MsrRecord h;

        (void)o, (void)version;
        if (size < sizeof h)
                return -EBADMSG;
        memcpy(&h, data, sizeof h);
        if (h.index > VM_MAX_SAVED_MSRS || size != (h.index + 1) * sizeof(MsrRecord))
                return -EBADMSG;
        return 0;
}

#define MSR_IA32_TSC 0x10

/* Puts the guest's TSC back at 'tsc' by setting the vCPU's TSC offset directly
 * (KVM_VCPU_TSC_OFFSET). Writing MSR_IA32_TSC instead goes through KVM's
 * synchronization heuristic: a value within one second of what KVM expects from the
 * vCPU's creation is taken as "sync with the other vCPUs" and replaced, so a guest that
 * had run about as long as the destination VM existed saw its TSC go backwards.
 * Returns 0, or -ENXIO where KVM lacks the attribute (then the MSR write is used). */
static int set_guest_tsc(Vcpu *v, uint64_t tsc) {
        uint64_t offset = tsc - __builtin_ia32_rdtsc(); /* no TSC scaling: guest = host + offset */
        struct kvm_device_attr a = {
                .group = KVM_VCPU_TSC_CTRL,
                .attr = KVM_VCPU_TSC_OFFSET,
                .addr = (uint64_t)(uintptr_t)&offset,
        };

        if (ioctl(v->fd, KVM_HAS_DEVICE_ATTR, &a) < 0)
                return -ENXIO;
        if (ioctl(v->fd, KVM_SET_DEVICE_ATTR, &a) < 0)
                return negative_errno();
        return 0;
}

static int msrs_load(void *o, uint16_t version, const void *data, size_t size) {
        _cleanup_free_ struct kvm_msrs *msrs = NULL;
        Vcpu *v = o;
        MsrRecord h;
        int n;

        (void)version, (void)size;
        memcpy(&h, data, sizeof h);
        msrs = calloc(1, sizeof(*msrs) + h.index * sizeof(struct kvm_msr_entry));
        if (!msrs)
                return -ENOMEM;
        for (unsigned k = 0; k < h.index; k++) {
                MsrRecord rec;
                memcpy(&rec, (const uint8_t *)data + (k + 1) * sizeof rec, sizeof rec);
                /* The TSC goes first, before the TSC deadline, and as an offset if KVM can. */
                if (rec.index == MSR_IA32_TSC) {
                        int r = v->vm->clock_restore_active
                                        ? vm_clock_restore_tsc(v, &v->vm->clock_restore, rec.data) /* clock.c */
                                        : 0;
                        if (r < 0)
                                return r;
                        if (r > 0)
                                continue;
                        r = set_guest_tsc(v, rec.data);
                        if (r == 0)
                                continue;
                        if (r != -ENXIO)
                                return r;
                }
                msrs->entries[msrs->nmsrs++] = (struct kvm_msr_entry){ .index = rec.index, .data = rec.data };
        }
        n = ioctl(v->fd, KVM_SET_MSRS, msrs);
        if (n < 0)
                return negative_errno();
        if ((unsigned)n != msrs->nmsrs)
                return log_debug_errno(-EINVAL, "state: MSR 0x%x rejected", msrs->entries[n].index);
        return 0;
}

const DeviceOps msrs_device_ops = {
        .name = "msrs",
        .section = SEC_VCPU_MSRS,
        .version = 1,
        .min_version = 1,
        .per_vcpu = true,
        .phase = DEVICE_LOAD_VCPU,
        .rank = 5,
        .save_size = msrs_size,
        .variable = true,
        .save = msrs_save,
        .check = msrs_check,
        .load = msrs_load,
};
