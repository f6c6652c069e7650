/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "macro.h"

/* The container of saved machine state: a header, then sections.
 *
 *   header  (24 bytes): magic "VMMDSTAT", u32 format version, u32 section count,
 *                        u64 total size including the header
 *   section (16 bytes): u32 id, u16 version, u16 instance, u32 payload size, u32 zero
 *           then the payload, padded with zeros to a multiple of 8 bytes.
 *
 * All integers are little-endian. A reader checks every size against the buffer and
 * against per-section limits before it touches the payload. */

#define STATE_MAGIC "VMMDSTAT"
#define STATE_FORMAT_VERSION 1
#define STATE_MAX_SIZE (16 * 1024 * 1024)
#define STATE_MAX_SECTIONS 4096
#define STATE_MAX_SECTION_SIZE (1024 * 1024)

typedef struct StateWriter {
        uint8_t *buf;
        size_t len, cap;
        uint32_t n_sections;
        int error;
} StateWriter;

void state_writer_init(StateWriter *w);
void state_writer_add(StateWriter *w, uint32_t id, uint16_t version, uint16_t instance,
                      const void *data, size_t size);
/* Finishes the header and hands over the buffer. Returns the first error, if any. */
int state_writer_finish(StateWriter *w, uint8_t **ret_buf, size_t *ret_size);
void state_writer_release(StateWriter *w);

typedef struct StateSection {
        uint32_t id;
        uint16_t version;
        uint16_t instance;
        uint32_t size;
        const uint8_t *data;
} StateSection;

typedef struct StateReader {
        const uint8_t *buf;
        size_t size, off;
        uint32_t n_sections, seen;
} StateReader;

/* -EBADMSG: bad magic or sizes; -EPROTONOSUPPORT: unknown format version. */
int state_reader_init(StateReader *r, const uint8_t *buf, size_t size);
/* 1 and a section, 0 at the end, -EBADMSG on a malformed section. */
int state_reader_next(StateReader *r, StateSection *ret);
