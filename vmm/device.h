/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state-stream.h"

/* The state contract every device keeps, beside its PioOps: what it is called, which
 * section of the saved state holds it, the version of that section it writes and the
 * oldest it reads, how big the section is, and how the device is reset, saved and loaded.
 * The machine's devices (board.c) are a table of these; state.c walks it, and knows no
 * device.
 *
 * A section's bytes are the device's own: load() gets the version the section was
 * written with, so a newer build can read an older one. Loading is two steps, so that a
 * bad section leaves every device as it was: check() validates the payload without
 * touching the device (every section is checked before the first is applied), then
 * load() applies it. */

typedef enum DeviceLoadPhase {
        DEVICE_LOAD_EARLY, /* before the vCPUs: the irqchip, timers, port devices */
        DEVICE_LOAD_VCPU,  /* a vCPU's own state, vCPU by vCPU, in 'rank' order */
        DEVICE_LOAD_LATE,  /* after every vCPU: the clock */
} DeviceLoadPhase;

typedef struct DeviceOps {
        const char *name;
        uint32_t section;     /* state section id (docs/migration.md) */
        uint16_t version;     /* the section version save() writes */
        uint16_t min_version; /* the oldest version load() reads */
        bool per_vcpu;        /* one section per vCPU, the vCPU's index as its instance */
        DeviceLoadPhase phase;
        uint8_t rank; /* order of loading inside a phase (vCPU sections depend on it) */
        /* The payload's size: 'size' if it is fixed; else save_size(opaque) for this
         * machine (e.g. XSAVE), which a loaded section must match unless 'variable'
         * (then check() alone judges the size). */
        size_t size;
        size_t (*save_size)(void *opaque);
        bool variable;

        void (*reset)(void *opaque); /* power-on state; NULL: nothing to do (a fresh KVM object) */
        /* Fills exactly 'size' bytes. */
        int (*save)(void *opaque, void *buf, size_t size);
        /* -EBADMSG if the payload cannot be loaded; NULL: any payload of the right size. */
        int (*check)(void *opaque, uint16_t version, const void *data, size_t size);
        int (*load)(void *opaque, uint16_t version, const void *data, size_t size);
} DeviceOps;

/* One device of a machine: its ops and the object they act on. */
typedef struct Device {
        const DeviceOps *ops;
        void *opaque;
        uint16_t instance;
} Device;

/* The size save() writes. */
size_t device_state_size(const Device *d);
/* Reads 'd's state into a new section of 'w'; 'scratch' is a buffer reused between calls. */
int device_save(const Device *d, StateWriter *w, void **scratch, size_t *scratch_size);
/* Checks a section meant for 'd': version, size, then the device's own check(). On
 * failure returns -EBADMSG and, if 'err' is not NULL, a message naming the device. */
int device_check(const Device *d, const StateSection *s, char *err, size_t err_size);
/* Applies a section that device_check() accepted. */
int device_load(const Device *d, const StateSection *s);
void device_reset(const Device *d);
