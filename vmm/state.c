/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Save and restore of everything but RAM: vCPUs, in-kernel irqchip and PIT, the KVM clock,
 * and our devices. Sections and their sizes are in docs/migration.md. */
#include <inttypes.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "state-stream.h"
#include "vm-internal.h"

enum {
        SEC_VMINFO = 1,
        SEC_CLOCK = 2,
        SEC_PIC_MASTER = 3,
        SEC_PIC_SLAVE = 4,
        SEC_IOAPIC = 5,
        SEC_PIT = 6,
        SEC_UART = 7,
        SEC_PM = 8,
        _SEC_VM_MAX,

        SEC_VCPU_REGS = 16,
        SEC_VCPU_SREGS = 17,
        SEC_VCPU_XSAVE = 18,
        SEC_VCPU_XCRS = 19,
        SEC_VCPU_DEBUGREGS = 20,
        SEC_VCPU_LAPIC = 21,
        SEC_VCPU_MSRS = 22,
        SEC_VCPU_EVENTS = 23,
        SEC_VCPU_MP_STATE = 24,
        _SEC_VCPU_MAX,
};

#define SEC_VERSION 1

typedef struct VmInfo {
        uint32_t n_vcpus;
        uint32_t reserved;
        uint64_t memory_bytes;
} VmInfo;

typedef struct MsrRecord {
        uint32_t index;
        uint32_t reserved;
        uint64_t data;
} MsrRecord;

static uint32_t vm_sections_required(void) {
        uint32_t m = 0;
        for (int i = SEC_VMINFO; i < _SEC_VM_MAX; i++)
                m |= 1u << i;
        return m;
}

static uint32_t vcpu_sections_required(void) {
        uint32_t m = 0;
        for (int i = SEC_VCPU_REGS; i < _SEC_VCPU_MAX; i++)
                m |= 1u << (i - SEC_VCPU_REGS);
        return m;
}

static int save_irqchip(Vm *vm, StateWriter *w, uint32_t chip_id, uint32_t sec) {
        struct kvm_irqchip c = { .chip_id = chip_id };

        if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &c) < 0)
                return negative_errno();
        state_writer_add(w, sec, SEC_VERSION, 0, &c, sizeof c);
        return 0;
}

#define GET(fd, req, ptr)                                                                          \
        do {                                                                                       \
                if (ioctl(fd, req, ptr) < 0)                                                       \
                        return negative_errno();                                                   \
        } while (0)

static int save_vcpu(Vm *vm, Vcpu *v, const struct kvm_clock_data *clock, StateWriter *w) {
        uint16_t i = (uint16_t)v->idx;
        struct kvm_regs regs;
        struct kvm_sregs sregs;
        struct kvm_xcrs xcrs;
        struct kvm_debugregs dregs;
        struct kvm_lapic_state lapic;
        struct kvm_vcpu_events events;
        struct kvm_mp_state mp;
        _cleanup_free_ void *xsave = NULL;
        _cleanup_free_ struct kvm_msrs *msrs = NULL;
        _cleanup_free_ MsrRecord *rec = NULL;
        int n;

        GET(v->fd, KVM_GET_REGS, &regs);
        GET(v->fd, KVM_GET_SREGS, &sregs);
        xsave = calloc(1, vm->xsave_size);
        if (!xsave)
                return -ENOMEM;
        if (vm->xsave_size > sizeof(struct kvm_xsave))
                GET(v->fd, KVM_GET_XSAVE2, xsave);
        else
                GET(v->fd, KVM_GET_XSAVE, xsave);
        GET(v->fd, KVM_GET_XCRS, &xcrs);
        GET(v->fd, KVM_GET_DEBUGREGS, &dregs);
        GET(v->fd, KVM_GET_LAPIC, &lapic);
        GET(v->fd, KVM_GET_VCPU_EVENTS, &events);
        GET(v->fd, KVM_GET_MP_STATE, &mp);

        msrs = calloc(1, sizeof(*msrs) + vm->n_msrs * sizeof(struct kvm_msr_entry));
        rec = calloc(vm->n_msrs + 1, sizeof(MsrRecord));
        if (!msrs || !rec)
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
        rec[0].index = vm->n_msrs;
        for (unsigned k = 0; k < vm->n_msrs; k++)
                rec[k + 1] = (MsrRecord){ .index = msrs->entries[k].index,
                                          /* clock.c: the TSC as of the clock read */
                                          .data = vm_clock_saved_msr(v, clock, msrs->entries[k].index,
                                                                     msrs->entries[k].data) };

        state_writer_add(w, SEC_VCPU_REGS, SEC_VERSION, i, &regs, sizeof regs);
        state_writer_add(w, SEC_VCPU_SREGS, SEC_VERSION, i, &sregs, sizeof sregs);
        state_writer_add(w, SEC_VCPU_XSAVE, SEC_VERSION, i, xsave, vm->xsave_size);
        state_writer_add(w, SEC_VCPU_XCRS, SEC_VERSION, i, &xcrs, sizeof xcrs);
        state_writer_add(w, SEC_VCPU_DEBUGREGS, SEC_VERSION, i, &dregs, sizeof dregs);
        state_writer_add(w, SEC_VCPU_LAPIC, SEC_VERSION, i, &lapic, sizeof lapic);
        state_writer_add(w, SEC_VCPU_MSRS, SEC_VERSION, i, rec, (vm->n_msrs + 1) * sizeof(MsrRecord));
        state_writer_add(w, SEC_VCPU_EVENTS, SEC_VERSION, i, &events, sizeof events);
        state_writer_add(w, SEC_VCPU_MP_STATE, SEC_VERSION, i, &mp, sizeof mp);
        return 0;
}

static uint64_t mono_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

int vm_save_state(Vm *vm, uint8_t **ret_buf, size_t *ret_size) {
        uint64_t a, b;
        return vm_save_state_timed(vm, ret_buf, ret_size, &a, &b);
}

int vm_save_state_timed(Vm *vm, uint8_t **ret_buf, size_t *ret_size, uint64_t *ret_vcpu_us,
                        uint64_t *ret_device_us) {
        if (!vm->built || (vm_get_state(vm) != VM_STATE_PAUSED && vm_get_state(vm) != VM_STATE_INCOMING))
                return -ESTALE;
        return vm_save_state_parked(vm, ret_buf, ret_size, ret_vcpu_us, ret_device_us);
}

int vm_save_state_parked(Vm *vm, uint8_t **ret_buf, size_t *ret_size, uint64_t *ret_vcpu_us,
                         uint64_t *ret_device_us) {
        uint64_t t0 = mono_usec(), t1;
        StateWriter w;
        VmInfo info;
        struct kvm_clock_data clock = {};
        struct kvm_pit_state2 pit;
        UartState us;
        PmState ps;
        int r;

        state_writer_init(&w);
        info = (VmInfo){ .n_vcpus = vm->n_vcpus, .memory_bytes = vm->mem.size };
        state_writer_add(&w, SEC_VMINFO, SEC_VERSION, 0, &info, sizeof info);

        if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) < 0) {
                r = negative_errno();
                goto fail;
        }
        state_writer_add(&w, SEC_CLOCK, SEC_VERSION, 0, &clock, sizeof clock);
        r = save_irqchip(vm, &w, KVM_IRQCHIP_PIC_MASTER, SEC_PIC_MASTER);
        if (r >= 0)
                r = save_irqchip(vm, &w, KVM_IRQCHIP_PIC_SLAVE, SEC_PIC_SLAVE);
        if (r >= 0)
                r = save_irqchip(vm, &w, KVM_IRQCHIP_IOAPIC, SEC_IOAPIC);
        if (r < 0)
                goto fail;
        if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0) {
                r = negative_errno();
                goto fail;
        }
        state_writer_add(&w, SEC_PIT, SEC_VERSION, 0, &pit, sizeof pit);
        uart_get_state(&vm->uart, &us);
        state_writer_add(&w, SEC_UART, SEC_VERSION, 0, &us, sizeof us);
        pm_get_state(&vm->pm, &ps);
        state_writer_add(&w, SEC_PM, SEC_VERSION, 0, &ps, sizeof ps);

        t1 = mono_usec();
        for (unsigned i = 0; i < vm->n_vcpus; i++) {
                r = save_vcpu(vm, &vm->vcpus[i], &clock, &w);
                if (r < 0)
                        goto fail;
        }
        r = state_writer_finish(&w, ret_buf, ret_size);
        if (r >= 0) {
                *ret_device_us = t1 - t0;
                *ret_vcpu_us = mono_usec() - t1;
        }
        return r;
fail:
        state_writer_release(&w);
        return r;
}

/* Sections, as found in the buffer (pointers into it), before anything is applied. */
typedef struct ParsedState {
        const StateSection *vm[_SEC_VM_MAX];
        StateSection vm_store[_SEC_VM_MAX];
        StateSection (*vcpu)[_SEC_VCPU_MAX - SEC_VCPU_REGS];
} ParsedState;

static size_t fixed_size(uint32_t id, const Vm *vm) {
        switch (id) {
        case SEC_VMINFO:
                return sizeof(VmInfo);
        case SEC_CLOCK:
                return sizeof(struct kvm_clock_data);
        case SEC_PIC_MASTER:
        case SEC_PIC_SLAVE:
        case SEC_IOAPIC:
                return sizeof(struct kvm_irqchip);
        case SEC_PIT:
                return sizeof(struct kvm_pit_state2);
        case SEC_UART:
                return sizeof(UartState);
        case SEC_PM:
                return sizeof(PmState);
        case SEC_VCPU_REGS:
                return sizeof(struct kvm_regs);
        case SEC_VCPU_SREGS:
                return sizeof(struct kvm_sregs);
        case SEC_VCPU_XSAVE:
                return vm->xsave_size;
        case SEC_VCPU_XCRS:
                return sizeof(struct kvm_xcrs);
        case SEC_VCPU_DEBUGREGS:
                return sizeof(struct kvm_debugregs);
        case SEC_VCPU_LAPIC:
                return sizeof(struct kvm_lapic_state);
        case SEC_VCPU_EVENTS:
                return sizeof(struct kvm_vcpu_events);
        case SEC_VCPU_MP_STATE:
                return sizeof(struct kvm_mp_state);
        default:
                return 0; /* variable (MSRS) */
        }
}

static int parse_state(const Vm *vm, const uint8_t *buf, size_t size, ParsedState *p) {
        StateReader rd;
        StateSection s;
        uint32_t vm_seen = 0;
        _cleanup_free_ uint32_t *vcpu_seen = NULL;
        int r;

        r = state_reader_init(&rd, buf, size);
        if (r < 0)
                return r;
        vcpu_seen = calloc(vm->n_vcpus, sizeof(uint32_t));
        if (!vcpu_seen)
                return -ENOMEM;

        while ((r = state_reader_next(&rd, &s)) > 0) {
                size_t want;

                if (s.version != SEC_VERSION)
                        return log_debug_errno(-EBADMSG, "state: section %u has version %u",
                                               s.id, s.version);
                if (s.id >= SEC_VMINFO && s.id < _SEC_VM_MAX) {
                        if (s.instance != 0 || (vm_seen & (1u << s.id)))
                                return log_debug_errno(-EBADMSG, "state: duplicate section %u", s.id);
                        vm_seen |= 1u << s.id;
                        p->vm_store[s.id] = s;
                        p->vm[s.id] = &p->vm_store[s.id];
                } else if (s.id >= SEC_VCPU_REGS && s.id < _SEC_VCPU_MAX) {
                        uint32_t bit = 1u << (s.id - SEC_VCPU_REGS);
                        if (s.instance >= vm->n_vcpus || (vcpu_seen[s.instance] & bit))
                                return log_debug_errno(-EBADMSG,
                                                       "state: bad or duplicate vCPU section %u/%u",
                                                       s.id, s.instance);
                        vcpu_seen[s.instance] |= bit;
                        p->vcpu[s.instance][s.id - SEC_VCPU_REGS] = s;
                } else
                        return log_debug_errno(-EBADMSG, "state: unknown section %u", s.id);

                want = fixed_size(s.id, vm);
                if (want && s.size != want)
                        return log_debug_errno(-EBADMSG, "state: section %u has %u bytes, want %zu",
                                               s.id, s.size, want);
                if (s.id == SEC_VCPU_MSRS) {
                        MsrRecord h;
                        if (s.size < sizeof h)
                                return -EBADMSG;
                        memcpy(&h, s.data, sizeof h);
                        if (h.index > VM_MAX_SAVED_MSRS ||
                            s.size != (h.index + 1) * sizeof(MsrRecord))
                                return log_debug_errno(-EBADMSG, "state: bad MSR section size");
                }
        }
        if (r < 0)
                return r;
        if (vm_seen != vm_sections_required())
                return log_debug_errno(-EBADMSG, "state: machine sections missing");
        for (unsigned i = 0; i < vm->n_vcpus; i++)
                if (vcpu_seen[i] != vcpu_sections_required())
                        return log_debug_errno(-EBADMSG, "state: vCPU %u sections missing", i);

        VmInfo info;
        memcpy(&info, p->vm[SEC_VMINFO]->data, sizeof info);
        if (info.n_vcpus != vm->n_vcpus || info.memory_bytes != vm->mem.size)
                return log_debug_errno(-EBADMSG,
                                       "state: for %u vCPUs and %" PRIu64 " bytes, this VM has %u and %" PRIu64,
                                       info.n_vcpus, info.memory_bytes, vm->n_vcpus, vm->mem.size);
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

#define SET(fd, req, ptr)                                                                          \
        do {                                                                                       \
                if (ioctl(fd, req, ptr) < 0)                                                       \
                        return log_debug_errno(errno, "state: " #req " failed: %m");               \
        } while (0)

static int restore_vcpu(Vm *vm, Vcpu *v, StateSection *sec, const VmClockRestore *ck) {
#define DATA(id) (sec[(id) - SEC_VCPU_REGS].data)
        struct kvm_regs regs;
        struct kvm_sregs sregs;
        struct kvm_xcrs xcrs;
        struct kvm_debugregs dregs;
        struct kvm_lapic_state lapic;
        struct kvm_vcpu_events events;
        struct kvm_mp_state mp;
        _cleanup_free_ void *xsave = NULL;
        _cleanup_free_ struct kvm_msrs *msrs = NULL;
        MsrRecord h;
        int n;

        memcpy(&regs, DATA(SEC_VCPU_REGS), sizeof regs);
        memcpy(&sregs, DATA(SEC_VCPU_SREGS), sizeof sregs);
        memcpy(&xcrs, DATA(SEC_VCPU_XCRS), sizeof xcrs);
        memcpy(&dregs, DATA(SEC_VCPU_DEBUGREGS), sizeof dregs);
        memcpy(&lapic, DATA(SEC_VCPU_LAPIC), sizeof lapic);
        memcpy(&events, DATA(SEC_VCPU_EVENTS), sizeof events);
        memcpy(&mp, DATA(SEC_VCPU_MP_STATE), sizeof mp);
        if (xcrs.nr_xcrs > KVM_MAX_XCRS)
                return -EBADMSG;

        xsave = malloc(vm->xsave_size);
        if (!xsave)
                return -ENOMEM;
        memcpy(xsave, DATA(SEC_VCPU_XSAVE), vm->xsave_size);

        memcpy(&h, DATA(SEC_VCPU_MSRS), sizeof h);
        msrs = calloc(1, sizeof(*msrs) + h.index * sizeof(struct kvm_msr_entry));
        if (!msrs)
                return -ENOMEM;
        msrs->nmsrs = 0;
        for (unsigned k = 0; k < h.index; k++) {
                MsrRecord rec;
                memcpy(&rec, DATA(SEC_VCPU_MSRS) + (k + 1) * sizeof rec, sizeof rec);
                /* The TSC goes first, before the TSC deadline, and as an offset if KVM can. */
                if (rec.index == MSR_IA32_TSC) {
                        int r = vm_clock_restore_tsc(v, ck, rec.data); /* clock.c */
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

        /* Order matters: sregs set the APIC base before the LAPIC registers, the LAPIC mode
         * before the TSC deadline MSR, and events come last. */
        SET(v->fd, KVM_SET_REGS, &regs);
        SET(v->fd, KVM_SET_XSAVE, xsave);
        SET(v->fd, KVM_SET_XCRS, &xcrs);
        SET(v->fd, KVM_SET_SREGS, &sregs);
        SET(v->fd, KVM_SET_LAPIC, &lapic);
        n = ioctl(v->fd, KVM_SET_MSRS, msrs);
        if (n < 0)
                return negative_errno();
        if ((unsigned)n != msrs->nmsrs)
                return log_debug_errno(-EINVAL, "state: MSR 0x%x rejected",
                                       msrs->entries[n].index);
        SET(v->fd, KVM_SET_MP_STATE, &mp);
        SET(v->fd, KVM_SET_VCPU_EVENTS, &events);
        SET(v->fd, KVM_SET_DEBUGREGS, &dregs);
        return 0;
#undef DATA
}

static int restore_irqchip(Vm *vm, const StateSection *s) {
        struct kvm_irqchip c;

        memcpy(&c, s->data, sizeof c);
        if (c.chip_id > KVM_IRQCHIP_IOAPIC)
                return -EBADMSG;
        SET(vm->vm_fd, KVM_SET_IRQCHIP, &c);
        return 0;
}

int vm_restore_state(Vm *vm, const uint8_t *buf, size_t size) {
        ParsedState p = {};
        struct kvm_clock_data clock;
        VmClockRestore ck;
        struct kvm_pit_state2 pit;
        UartState us;
        PmState ps;
        int r;

        if (!vm->built || vm_get_state(vm) != VM_STATE_INCOMING)
                return -ESTALE;

        p.vcpu = calloc(vm->n_vcpus, sizeof(*p.vcpu));
        if (!p.vcpu)
                return -ENOMEM;
        r = parse_state(vm, buf, size, &p);
        if (r < 0)
                goto out;

        r = restore_irqchip(vm, p.vm[SEC_PIC_MASTER]);
        if (r >= 0)
                r = restore_irqchip(vm, p.vm[SEC_PIC_SLAVE]);
        if (r >= 0)
                r = restore_irqchip(vm, p.vm[SEC_IOAPIC]);
        if (r < 0)
                goto out;
        memcpy(&pit, p.vm[SEC_PIT]->data, sizeof pit);
        if (ioctl(vm->vm_fd, KVM_SET_PIT2, &pit) < 0) {
                r = negative_errno();
                goto out;
        }
        memcpy(&us, p.vm[SEC_UART]->data, sizeof us);
        r = uart_set_state(&vm->uart, &us);
        if (r < 0)
                goto out;
        memcpy(&ps, p.vm[SEC_PM]->data, sizeof ps);
        pm_set_state(&vm->pm, &ps);

        /* clock.c: kvmclock and the TSCs set for one instant, in step. */
        memcpy(&clock, p.vm[SEC_CLOCK]->data, sizeof clock);
        r = vm_clock_restore_begin(vm, &clock, &ck);
        if (r < 0)
                goto out;
        for (unsigned i = 0; i < vm->n_vcpus; i++) {
                r = restore_vcpu(vm, &vm->vcpus[i], p.vcpu[i], &ck);
                if (r < 0)
                        goto out;
        }
        r = vm_clock_restore_end(vm, &clock, &ck);
out:
        free(p.vcpu);
        return r;
}

int vm_save_state_live(Vm *vm, uint8_t **ret_buf, size_t *ret_size, uint64_t *ret_pause_us,
                       uint64_t *ret_vcpu_us, uint64_t *ret_device_us) {
        uint64_t t;
        int r;

        *ret_pause_us = 0;
        if (!vm->built)
                return -ESTALE;
        if (vm_get_state(vm) == VM_STATE_PAUSED)
                return vm_save_state_parked(vm, ret_buf, ret_size, ret_vcpu_us, ret_device_us);
        if (vm_get_state(vm) != VM_STATE_RUNNING || !vm_job_is_active(vm))
                return -ESTALE;
        t = mono_usec();
        vm_pause_vcpus(vm);
        *ret_pause_us = mono_usec() - t;
        r = vm_save_state_parked(vm, ret_buf, ret_size, ret_vcpu_us, ret_device_us);
        vm_set_run_control(vm, RUN_CONTROL_RUN);
        return r;
}

int vm_restore_state_trial(Vm *vm, const uint8_t *buf, size_t size, uint64_t *ret_apply_us) {
        _cleanup_free_ uint8_t *own = NULL;
        size_t own_size;
        uint64_t t;
        int r, q;

        if (!vm->built || vm_get_state(vm) != VM_STATE_INCOMING)
                return -ESTALE;
        /* What the VM holds now (as built: timers off) goes back afterwards, so nothing the
         * trial armed (a PIT or LAPIC timer) can touch the irqchip before the real state. */
        r = vm_save_state(vm, &own, &own_size);
        if (r < 0)
                return r;
        t = mono_usec();
        r = vm_restore_state(vm, buf, size);
        *ret_apply_us = mono_usec() - t;
        q = vm_restore_state(vm, own, own_size);
        return r < 0 ? r : q;
}
