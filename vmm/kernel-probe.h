/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Parsers for the two kernel formats we boot. Pure functions over a buffer: no I/O, every
 * offset and size checked, so they can be fuzzed. */

#define PVH_MAX_SEGMENTS 16

typedef struct PvhSegment {
        uint64_t paddr;
        uint64_t file_offset;
        uint64_t filesz;
        uint64_t memsz;
} PvhSegment;

typedef struct PvhElfInfo {
        uint32_t entry; /* XEN_ELFNOTE_PHYS32_ENTRY */
        unsigned n_segments;
        PvhSegment segments[PVH_MAX_SEGMENTS];
} PvhElfInfo;

/* -ENOEXEC: not an ELF64 x86-64; -ENOENT: no PVH note; -EBADMSG: malformed. */
int pvh_elf_parse(const uint8_t *buf, size_t size, PvhElfInfo *ret);

typedef struct BzImageInfo {
        uint16_t version;       /* boot protocol version */
        uint32_t setup_size;    /* bytes of real-mode setup, including the boot sector */
        uint64_t kernel_offset; /* file offset of the protected-mode kernel */
        uint64_t kernel_size;
        uint32_t init_size;     /* memory the kernel needs from its load address */
        uint64_t pref_address;
        uint32_t kernel_alignment;
        uint32_t initrd_addr_max;
        uint32_t cmdline_size; /* max command line length, without the NUL */
        uint16_t xloadflags;
        uint32_t payload_offset; /* compressed payload, from kernel_offset */
        uint32_t payload_length;
} BzImageInfo;

/* -ENOEXEC: no "HdrS" signature; -EPROTONOSUPPORT: protocol < 2.12 or no 64-bit entry;
 * -EBADMSG: sizes do not fit the file. */
int bzimage_parse(const uint8_t *buf, size_t size, BzImageInfo *ret);

/* A kernel or initramfs file mapped read-only. */
typedef struct MappedFile {
        uint8_t *data;
        size_t size;
} MappedFile;

/* -EINVAL for anything but a non-empty regular file. */
int mapped_file_open(const char *path, MappedFile *ret);
void mapped_file_close(MappedFile *f);

/* Maps the file and tells which format it is; -EINVAL if neither. */
int kernel_probe_file(const char *path, KernelFormat *ret);
