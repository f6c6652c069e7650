/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "state-stream.h"

#define HEADER_SIZE 24
#define SECTION_HEADER_SIZE 16

static void put_le32(uint8_t *p, uint32_t v) {
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}
static void put_le16(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}
static void put_le64(uint8_t *p, uint64_t v) {
        put_le32(p, (uint32_t)v);
        put_le32(p + 4, (uint32_t)(v >> 32));
}
static uint32_t get_le32(const uint8_t *p) {
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint16_t get_le16(const uint8_t *p) {
        return (uint16_t)(p[0] | p[1] << 8);
}
static uint64_t get_le64(const uint8_t *p) {
        return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static bool reserve(StateWriter *w, size_t n) {
        if (w->error)
                return false;
        if (n > STATE_MAX_SIZE || w->len > STATE_MAX_SIZE - n) {
                w->error = -E2BIG;
                return false;
        }
        if (w->len + n > w->cap) {
                size_t cap = MAX(w->cap * 2, w->len + n);
                uint8_t *b = realloc(w->buf, cap);
                if (!b) {
                        w->error = -ENOMEM;
                        return false;
                }
                w->buf = b;
                w->cap = cap;
        }
        return true;
}

void state_writer_init(StateWriter *w) {
        *w = (StateWriter){};
        if (reserve(w, HEADER_SIZE)) {
                memset(w->buf, 0, HEADER_SIZE);
                w->len = HEADER_SIZE;
        }
}

void state_writer_add(StateWriter *w, uint32_t id, uint16_t version, uint16_t instance,
                      const void *data, size_t size) {
        size_t padded = ALIGN_UP(size, (size_t)8);
        uint8_t *p;

        if (size > STATE_MAX_SECTION_SIZE) {
                if (!w->error)
                        w->error = -E2BIG;
                return;
        }
        if (!reserve(w, SECTION_HEADER_SIZE + padded))
                return;
        p = w->buf + w->len;
        put_le32(p, id);
        put_le16(p + 4, version);
        put_le16(p + 6, instance);
        put_le32(p + 8, (uint32_t)size);
        put_le32(p + 12, 0);
        if (size > 0)
                memcpy(p + SECTION_HEADER_SIZE, data, size);
        memset(p + SECTION_HEADER_SIZE + size, 0, padded - size);
        w->len += SECTION_HEADER_SIZE + padded;
        w->n_sections++;
}

int state_writer_finish(StateWriter *w, uint8_t **ret_buf, size_t *ret_size) {
        if (w->error) {
                int r = w->error;
                state_writer_release(w);
                return r;
        }
        memcpy(w->buf, STATE_MAGIC, 8);
        put_le32(w->buf + 8, STATE_FORMAT_VERSION);
        put_le32(w->buf + 12, w->n_sections);
        put_le64(w->buf + 16, w->len);
        *ret_buf = TAKE_PTR(w->buf);
        *ret_size = w->len;
        *w = (StateWriter){};
        return 0;
}

void state_writer_release(StateWriter *w) {
        free(w->buf);
        *w = (StateWriter){};
}

int state_reader_init(StateReader *r, const uint8_t *buf, size_t size) {
        uint64_t total;

        if (size < HEADER_SIZE || size > STATE_MAX_SIZE || memcmp(buf, STATE_MAGIC, 8) != 0)
                return -EBADMSG;
        if (get_le32(buf + 8) != STATE_FORMAT_VERSION)
                return -EPROTONOSUPPORT;
        total = get_le64(buf + 16);
        if (total != size)
                return -EBADMSG;
        *r = (StateReader){
                .buf = buf,
                .size = size,
                .off = HEADER_SIZE,
                .n_sections = get_le32(buf + 12),
        };
        if (r->n_sections > STATE_MAX_SECTIONS)
                return -EBADMSG;
        return 0;
}

int state_reader_next(StateReader *r, StateSection *ret) {
        const uint8_t *p;
        uint32_t size;
        size_t padded;

        if (r->seen == r->n_sections)
                return r->off == r->size ? 0 : -EBADMSG;
        if (r->size - r->off < SECTION_HEADER_SIZE)
                return -EBADMSG;
        p = r->buf + r->off;
        size = get_le32(p + 8);
        if (size > STATE_MAX_SECTION_SIZE || get_le32(p + 12) != 0)
                return -EBADMSG;
        padded = ALIGN_UP((size_t)size, (size_t)8);
        if (r->size - r->off - SECTION_HEADER_SIZE < padded)
                return -EBADMSG;
        *ret = (StateSection){
                .id = get_le32(p),
                .version = get_le16(p + 4),
                .instance = get_le16(p + 6),
                .size = size,
                .data = p + SECTION_HEADER_SIZE,
        };
        r->off += SECTION_HEADER_SIZE + padded;
        r->seen++;
        return 1;
}
