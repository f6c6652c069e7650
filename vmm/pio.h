/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* The port I/O bus: devices register a port range with an ops table. Dispatch runs on
 * vCPU threads; devices lock their own state. */

typedef struct PioOps {
        const char *name;
        /* offset is from the range's base; size is 1, 2 or 4. */
        void (*read)(void *opaque, uint16_t offset, uint8_t *data, unsigned size);
        void (*write)(void *opaque, uint16_t offset, const uint8_t *data, unsigned size);
} PioOps;

#define PIO_MAX_DEVICES 16

typedef struct PioRange {
        uint16_t base;
        uint16_t len;
        const PioOps *ops;
        void *opaque;
} PioRange;

typedef struct PioBus {
        unsigned n;
        PioRange ranges[PIO_MAX_DEVICES];
} PioBus;

int pio_bus_register(PioBus *bus, uint16_t base, uint16_t len, const PioOps *ops, void *opaque);
/* Returns false if no device claims the port (reads then return all ones). */
bool pio_bus_dispatch(const PioBus *bus, uint16_t port, bool is_write, uint8_t *data, unsigned size);
