/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

#include "macro.h"

/* The migration stream (docs/migration.md). Every message starts with a 24-byte header,
 * little-endian: u32 type, u32 payload length, u64 a, u64 b; the payload follows. */

#define MIG_MAGIC UINT64_C(0x31474d49444d4d56) /* "VMMDMIG1" */
#define MIG_VERSION 2 /* 2: the state rehearsal (MIG_STATE_TRIAL) */
#define MIG_PAGE_SIZE 4096
#define MIG_MAX_PAGES_PER_MSG 256 /* 1 MiB of data */
#define MIG_MAX_CONFIG_LEN (64 * 1024)
#define MIG_MAX_ERROR_LEN 1024
#define MIG_MAP_CHUNK_SHIFT 21 /* RAM map: 2 MiB chunks */

enum {
        MIG_HELLO = 1,      /* a = magic, b = version | conn_index << 32 | n_conns << 48;
                               payload: u64 RAM size, then (connection 0 only) the config */
        MIG_HELLO_ACK = 2,  /* dst -> src on connection 0 */
        MIG_PAGES = 3,      /* a = RAM offset, b = pages; payload: the pages */
        MIG_ZERO = 4,       /* a = RAM offset, b = pages; no payload */
        MIG_ITER_END = 5,   /* a = iteration just finished (connection 0) */
        MIG_FLUSH = 6,      /* no more pages on this connection */
        MIG_STATE = 7,      /* payload: vCPU/device state (vm_save_state format) */
        MIG_COMPLETE = 8,   /* src -> dst: everything sent, restore now */
        MIG_READY = 9,      /* dst -> src: restored; a = receive-state µs, b = restore µs */
        MIG_COMMIT = 10,    /* src -> dst: resume the guest */
        MIG_ACK = 11,       /* dst -> src: resumed; a = resume µs */
        MIG_ERROR = 12,     /* either way: a = errno; payload: message */
        MIG_RAM_MAP = 13,   /* src -> dst before the first page (connection 0): a = chunk
                               shift (21), b = chunks; payload: one bit per chunk of RAM
                               the first pass will send, so the destination can prefault */
        MIG_STATE_TRIAL = 14, /* src -> dst on connection 0, before the RAM map: payload as
                                 MIG_STATE, saved while the guest ran; applied as a trial */
        MIG_TRIAL_DONE = 15,  /* dst -> src: a = µs applying the trial state, b = µs from
                                 its header to this reply */
        _MIG_MAX,
};

typedef struct MigHeader {
        uint32_t type;
        uint32_t len;
        uint64_t a;
        uint64_t b;
} MigHeader;

#define MIG_HEADER_SIZE 24

static inline void mig_header_encode(const MigHeader *h, uint8_t out[static MIG_HEADER_SIZE]) {
        for (int i = 0; i < 4; i++) {
                out[i] = (uint8_t)(h->type >> (8 * i));
                out[4 + i] = (uint8_t)(h->len >> (8 * i));
        }
        for (int i = 0; i < 8; i++) {
                out[8 + i] = (uint8_t)(h->a >> (8 * i));
                out[16 + i] = (uint8_t)(h->b >> (8 * i));
        }
}

static inline void mig_header_decode(const uint8_t in[static MIG_HEADER_SIZE], MigHeader *h) {
        *h = (MigHeader){};
        for (int i = 0; i < 4; i++) {
                h->type |= (uint32_t)in[i] << (8 * i);
                h->len |= (uint32_t)in[4 + i] << (8 * i);
        }
        for (int i = 0; i < 8; i++) {
                h->a |= (uint64_t)in[8 + i] << (8 * i);
                h->b |= (uint64_t)in[16 + i] << (8 * i);
        }
}

/* Checks a header received on the destination against the RAM size and limits:
 * -EBADMSG for anything out of bounds or of an unknown type. */
int mig_header_validate(const MigHeader *h, uint64_t ram_size);

/* Blocking full-length I/O on a socket; -ECONNRESET when the peer closed. */
int mig_send_all(int fd, const void *buf, size_t len);
int mig_recv_all(int fd, void *buf, size_t len);
int mig_send_msg(int fd, uint32_t type, uint64_t a, uint64_t b, const void *payload, uint32_t len);
int mig_recv_header(int fd, MigHeader *h);
/* Reads exactly len bytes by 'deadline_us' (CLOCK_MONOTONIC, as time_monotonic_usec()): -ETIMEDOUT
 * once it passed, however the bytes trickle in; -ECONNRESET when the peer closed. */
int mig_recv_all_until(int fd, void *buf, size_t len, uint64_t deadline_us);
