/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vm-migration.h"

/* Guest RAM: one anonymous host mapping (MADV_HUGEPAGE: transparent huge pages work for
 * anonymous memory on our hosts, not for memfd), split into at most two guest-physical
 * regions around the 32-bit MMIO hole (LAPIC, IOAPIC): [0, 3 GiB) and [4 GiB, ...). */

#define GUEST_LOW_RAM_END UINT64_C(0xC0000000)
#define GUEST_HIGH_RAM_START UINT64_C(0x100000000)
#define GUEST_MAX_REGIONS 2

typedef struct GuestMemory {
        uint8_t *base;
        uint64_t size;
        unsigned n_regions;
        VmMemoryRegion regions[GUEST_MAX_REGIONS];
} GuestMemory;

/* thp: ask for transparent huge pages (best effort). */
int guest_memory_alloc(uint64_t size, bool thp, GuestMemory *ret);
void guest_memory_release(GuestMemory *m);
/* Registers the regions as KVM memory slots 0..n-1 with the given slot flags. */
int guest_memory_register(const GuestMemory *m, int vm_fd, uint32_t flags);
/* Host address for [gpa, gpa+len) if it lies entirely inside one region, else NULL. */
void *guest_memory_ptr(const GuestMemory *m, uint64_t gpa, uint64_t len);
/* Copies into guest memory; -EFAULT if the range is not RAM. */
int guest_memory_write(const GuestMemory *m, uint64_t gpa, const void *data, uint64_t len);
