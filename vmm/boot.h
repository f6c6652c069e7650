/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

#include "config.h"
#include "memory.h"

/* Guest-physical layout of the boot structures we write (all below 1 MiB). */
#define BOOT_GDT_ADDR 0x500
#define BOOT_START_INFO_ADDR 0x6000
#define BOOT_MEMMAP_ADDR 0x6100
#define BOOT_MODLIST_ADDR 0x6800
#define BOOT_ZERO_PAGE_ADDR 0x7000
#define BOOT_PML4_ADDR 0x9000
#define BOOT_PDPT_ADDR 0xa000
#define BOOT_PD_ADDR 0xb000 /* four pages: 0..4 GiB with 2 MiB pages */
#define BOOT_CMDLINE_ADDR 0x20000
#define BOOT_CMDLINE_MAX 0x10000
#define BOOT_KERNEL_MIN_ADDR 0x100000

#define E820_RAM 1
#define E820_RESERVED 2
#define E820_MAX_ENTRIES 8

typedef struct E820Entry {
        uint64_t addr;
        uint64_t size;
        uint32_t type;
} E820Entry;

typedef enum BootMode {
        BOOT_MODE_PVH,     /* 32-bit protected mode, paging off, rbx = start_info */
        BOOT_MODE_LINUX64, /* long mode, identity paging, rsi = zero page */
} BootMode;

typedef struct BootSetup {
        BootMode mode;
        uint64_t rip;
        uint64_t rbx;
        uint64_t rsi;
} BootSetup;

unsigned e820_build(const GuestMemory *m, E820Entry entries[static E820_MAX_ENTRIES]);

/* Load the kernel (and initramfs) named by the config into guest RAM and write the boot
 * structures. -ENOEXEC / -EBADMSG for bad images, -E2BIG when they do not fit in RAM. */
int boot_load(const GuestMemory *m, const VmConfig *c, BootSetup *ret);

/* Registers and segment state for the boot CPU. */
int boot_setup_vcpu(int vcpu_fd, const BootSetup *b);
