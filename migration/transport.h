/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration.h"
#include "wire.h"

/* The sending side of the migration stream, on io_uring. Page data goes out straight from
 * guest RAM: with zero-copy, each 2 MiB slot of RAM (larger for guests over 32 GiB) is
 * registered as a fixed buffer when a page in it is first sent, and pages go out with
 * IORING_OP_SEND_ZC on it; otherwise with plain IORING_OP_SEND. Messages on one
 * connection stay in order: each connection has at most one batch of linked requests in
 * flight while the next batch fills. */

#define SENDER_BATCH 16 /* messages per linked batch */

typedef struct SenderBatch {
        unsigned n_msgs;
        unsigned n_sqes;
        unsigned completed; /* CQEs seen (not counting zero-copy notifications) */
        bool in_flight;
        uint8_t headers[SENDER_BATCH][MIG_HEADER_SIZE];
        struct {
                uint64_t offset;
                uint32_t len;
                unsigned slot; /* fixed buffer, with zero-copy */
                bool has_data;
        } msgs[SENDER_BATCH];
} SenderBatch;

typedef struct SenderConn {
        int fd;
        SenderBatch batch[2];
        unsigned filling; /* index of the batch being filled */
} SenderConn;

typedef struct Sender {
        struct io_uring ring;
        bool ring_ready;
        bool zerocopy;
        bool buffers_registered;
        uint64_t slot_size;    /* bytes of RAM per fixed-buffer slot, with zero-copy */
        unsigned n_slots;
        bool *slot_registered;
        uint8_t *ram;
        uint64_t ram_size;
        unsigned n_conns;
        SenderConn conns[MIGRATION_MAX_CONNECTIONS];
        uint64_t bytes_completed; /* headers and data the kernel took */
        uint64_t notifs_pending;  /* zero-copy buffers the kernel still references */
        int error;
        /* Every wait for a completion is bounded: past 'deadline_us' (CLOCK_MONOTONIC,
         * 0 = none) it fails with -ETIME; and at least every SENDER_IDLE_US 'idle' (if
         * set) is called, so the owner can publish statistics and check its limits while
         * the peer does not read; a negative return ends the wait with that error. */
        uint64_t deadline_us;
        int (*idle)(void *userdata);
        void *idle_userdata;
} Sender;

#define SENDER_IDLE_US (250 * 1000)

int sender_init(Sender *s, const int *fds, unsigned n, uint8_t *ram, uint64_t ram_size, bool zerocopy);
/* Queue a message; a PAGES message's data is [offset, offset + len) of guest RAM. */
int sender_queue(Sender *s, unsigned conn, uint32_t type, uint64_t a, uint64_t b, uint64_t data_offset,
                 uint32_t data_len);
/* Submit everything queued and wait until the kernel has taken all of it. */
int sender_flush(Sender *s);
/* Whether this kernel has zero-copy send on io_uring (IORING_OP_SEND_ZC), probed once. */
bool sender_zerocopy_supported(void);
/* Wait for outstanding zero-copy notifications (before RAM may go away). */
void sender_done(Sender *s);
