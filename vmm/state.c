/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Save and restore of everything but RAM: the machine's description, then the sections of
 * the device table (board.c), each device keeping its own contract (device.h). Sections
 * and their sizes are in docs/migration.md. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "state-stream.h"
#include "time-util.h"
#include "vm-internal.h"


#define VMINFO_VERSION 1

typedef struct VmInfo {
        uint32_t n_vcpus;
        uint32_t reserved;
        uint64_t memory_bytes;
} VmInfo;

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

/* The machine's description first, then every device of the table in its order. */
int vm_save_state_parked(Vm *vm, uint8_t **ret_buf, size_t *ret_size, uint64_t *ret_vcpu_us,
                         uint64_t *ret_device_us) {
        uint64_t t0 = time_monotonic_usec(), t1 = 0;
        _cleanup_free_ void *scratch = NULL;
        size_t scratch_size = 0;
        StateWriter w;
        VmInfo info;
        int r;

        state_writer_init(&w);
        info = (VmInfo){ .n_vcpus = vm->n_vcpus, .memory_bytes = vm->mem.size };
        state_writer_add(&w, SEC_VMINFO, VMINFO_VERSION, 0, &info, sizeof info);

        for (unsigned i = 0; i < vm->n_devices; i++) {
                const Device *d = &vm->devices[i];

                if (d->ops->per_vcpu && t1 == 0)
                        t1 = time_monotonic_usec();
                r = device_save(d, &w, &scratch, &scratch_size);
                if (r < 0) {
                        log_debug_errno(r, "state: saving %s/%u failed: %m", d->ops->name, d->instance);
                        state_writer_release(&w);
                        return r;
                }
        }
        if (t1 == 0)
                t1 = time_monotonic_usec();
        r = state_writer_finish(&w, ret_buf, ret_size);
        if (r >= 0) {
                *ret_device_us = t1 - t0;
                *ret_vcpu_us = time_monotonic_usec() - t1;
        }
        return r;
}

static int bad(char *err, size_t err_size, const char *fmt, ...) _printf_(3, 4);
static int bad(char *err, size_t err_size, const char *fmt, ...) {
        va_list ap;

        if (err && err_size > 0) {
                va_start(ap, fmt);
                vsnprintf(err, err_size, fmt, ap);
                va_end(ap);
        }
        return -EBADMSG;
}

static const Device *find_device(const Vm *vm, uint32_t id, bool *ret_id_known, unsigned *ret_index,
                                 uint16_t instance) {
        *ret_id_known = false;
        for (unsigned i = 0; i < vm->n_devices; i++) {
                const Device *d = &vm->devices[i];
                if (d->ops->section != id)
                        continue;
                *ret_id_known = true;
                if (d->instance == instance) {
                        *ret_index = i;
                        return d;
                }
        }
        return NULL;
}

int vm_state_parse(const Vm *vm, const uint8_t *buf, size_t size, StateSection *ret_sections, char *err,
                   size_t err_size) {
        _cleanup_free_ bool *seen = NULL;
        bool info_seen = false;
        StateReader rd;
        StateSection s;
        VmInfo info;
        int r;

        r = state_reader_init(&rd, buf, size);
        if (r < 0) {
                (void)bad(err, err_size, r == -EPROTONOSUPPORT ? "unknown state format version"
                                                               : "not a state stream, or truncated");
                return r;
        }
        seen = calloc(MAX(vm->n_devices, 1u), sizeof(bool));
        if (!seen)
                return -ENOMEM;

        while ((r = state_reader_next(&rd, &s)) > 0) {
                const Device *d;
                bool known;
                unsigned idx;

                if (s.id == SEC_VMINFO) {
                        if (info_seen || s.instance != 0)
                                return bad(err, err_size, "duplicate machine section");
                        if (s.version != VMINFO_VERSION)
                                return bad(err, err_size, "machine section version %u, this build reads %u",
                                           s.version, VMINFO_VERSION);
                        if (s.size != sizeof info)
                                return bad(err, err_size, "machine section of %u bytes, want %zu", s.size,
                                           sizeof info);
                        memcpy(&info, s.data, sizeof info);
                        info_seen = true;
                        continue;
                }
                d = find_device(vm, s.id, &known, &idx, s.instance);
                if (!d)
                        return known ? bad(err, err_size, "section %u for instance %u: no such device here",
                                           s.id, s.instance)
                                     : bad(err, err_size, "unknown section %u", s.id);
                if (seen[idx])
                        return bad(err, err_size, "duplicate section %u (%s/%u)", s.id, d->ops->name,
                                   s.instance);
                r = device_check(d, &s, err, err_size);
                if (r < 0)
                        return r;
                seen[idx] = true;
                ret_sections[idx] = s;
        }
        if (r < 0)
                return bad(err, err_size, "malformed section");
        if (!info_seen)
                return bad(err, err_size, "machine section missing");
        for (unsigned i = 0; i < vm->n_devices; i++)
                if (!seen[i]) {
                        const Device *d = &vm->devices[i];
                        if (d->ops->per_vcpu)
                                return bad(err, err_size, "%s of vCPU %u missing", d->ops->name, d->instance);
                        return bad(err, err_size, "%s missing", d->ops->name);
                }
        if (info.n_vcpus != vm->n_vcpus || info.memory_bytes != vm->mem.size)
                return bad(err, err_size,
                           "state of a machine with %u vCPUs and %" PRIu64 " bytes, this VM has %u and %" PRIu64,
                           info.n_vcpus, info.memory_bytes, vm->n_vcpus, vm->mem.size);
        return 0;
}

/* The order in which devices load: by phase, then (vCPU sections) vCPU by vCPU in rank
 * order; otherwise as in the table. */
static int load_order_cmp(const void *a, const void *b, void *userdata) {
        const Vm *vm = userdata;
        unsigned ia = *(const unsigned *)a, ib = *(const unsigned *)b;
        const Device *da = &vm->devices[ia], *db = &vm->devices[ib];

        if (da->ops->phase != db->ops->phase)
                return da->ops->phase < db->ops->phase ? -1 : 1;
        if (da->ops->phase == DEVICE_LOAD_VCPU) {
                if (da->instance != db->instance)
                        return da->instance < db->instance ? -1 : 1;
                if (da->ops->rank != db->ops->rank)
                        return da->ops->rank < db->ops->rank ? -1 : 1;
        }
        return ia < ib ? -1 : ia > ib;
}

int vm_restore_state(Vm *vm, const uint8_t *buf, size_t size) {
        _cleanup_free_ StateSection *sec = NULL;
        _cleanup_free_ unsigned *order = NULL;
        int r;

        vm->state_error[0] = 0;
        if (!vm->built || vm_get_state(vm) != VM_STATE_INCOMING)
                return -ESTALE;

        sec = calloc(MAX(vm->n_devices, 1u), sizeof *sec);
        order = calloc(MAX(vm->n_devices, 1u), sizeof *order);
        if (!sec || !order)
                return -ENOMEM;
        r = vm_state_parse(vm, buf, size, sec, vm->state_error, sizeof vm->state_error);
        if (r < 0)
                return log_debug_errno(r, "state: refused: %s", vm->state_error);

        for (unsigned i = 0; i < vm->n_devices; i++)
                order[i] = i;
        qsort_r(order, vm->n_devices, sizeof *order, load_order_cmp, vm);
        /* clock.c: kvmclock is set first (advanced by the time since the save where both
         * sides can), so that each vCPU's TSC can be set in step with it; the clock
         * device's own load, last, finishes it. */
        vm->clock_restore_active = false;
        for (unsigned i = 0; i < vm->n_devices; i++)
                if (vm->devices[i].ops == &clock_device_ops && sec[i].size == sizeof(struct kvm_clock_data)) {
                        struct kvm_clock_data c;
                        memcpy(&c, sec[i].data, sizeof c);
                        r = vm_clock_restore_begin(vm, &c, &vm->clock_restore);
                        if (r < 0) {
                                snprintf(vm->state_error, sizeof vm->state_error, "clock: %s", strerror(-r));
                                return r;
                        }
                        vm->clock_restore_active = true;
                }
        for (unsigned i = 0; i < vm->n_devices; i++) {
                const Device *d = &vm->devices[order[i]];

                r = device_load(d, &sec[order[i]]);
                if (r < 0) {
                        snprintf(vm->state_error, sizeof vm->state_error, "%s/%u: %s", d->ops->name,
                                 d->instance, strerror(-r));
                        return r;
                }
        }
        return 0;
}

const char *vm_get_state_error(const Vm *vm) {
        return vm->state_error;
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
        t = time_monotonic_usec();
        vm_pause_vcpus(vm);
        *ret_pause_us = time_monotonic_usec() - t;
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
        t = time_monotonic_usec();
        r = vm_restore_state(vm, buf, size);
        *ret_apply_us = time_monotonic_usec() - t;
        if (r < 0) {
                /* Putting the own state back must not hide why the trial was refused. */
                char why[sizeof vm->state_error];
                memcpy(why, vm->state_error, sizeof why);
                (void)vm_restore_state(vm, own, own_size);
                memcpy(vm->state_error, why, sizeof why);
                return r;
        }
        q = vm_restore_state(vm, own, own_size);
        return q;
}
