/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "time-util.h"
#include "transport.h"

#define RING_ENTRIES 1024
#define ZC_SLOT_MIN (UINT64_C(2) << 20) /* a page run never crosses a 2 MiB boundary */
#define ZC_SLOT_MAX (UINT64_C(1) << 30) /* io_uring's limit for one registered buffer */
#define ZC_SLOTS_MAX 16384u             /* io_uring's limit for the buffer table */

/* user_data: conn << 8 | batch << 1 | is_data. */
static uint64_t tag(unsigned conn, unsigned batch, bool is_data) {
        return (uint64_t)conn << 8 | (uint64_t)batch << 1 | (is_data ? 1 : 0);
}

int sender_init(Sender *s, const int *fds, unsigned n, uint8_t *ram, uint64_t ram_size, bool zerocopy) {
        int r;

        *s = (Sender){ .ram = ram, .ram_size = ram_size, .n_conns = n, .zerocopy = zerocopy };
        if (n == 0 || n > MIGRATION_MAX_CONNECTIONS)
                return -EINVAL;
        for (unsigned i = 0; i < n; i++)
                s->conns[i].fd = fds[i];

        r = io_uring_queue_init(RING_ENTRIES, &s->ring, 0);
        if (r < 0)
                return r;
        s->ring_ready = true;

        if (zerocopy) {
                /* A sparse table: a slot is registered (and so pinned and faulted in) only
                 * when a page in it is first sent. Registering all of RAM up front would
                 * fault in every page the guest never touched. */
                s->slot_size = ZC_SLOT_MIN;
                while (DIV_ROUND_UP(ram_size, s->slot_size) > ZC_SLOTS_MAX && s->slot_size < ZC_SLOT_MAX)
                        s->slot_size <<= 1;
                s->n_slots = (unsigned)DIV_ROUND_UP(ram_size, s->slot_size);
                if (s->n_slots > ZC_SLOTS_MAX)
                        return -E2BIG;
                s->slot_registered = calloc(s->n_slots, sizeof(bool));
                if (!s->slot_registered)
                        return -ENOMEM;
                r = io_uring_register_buffers_sparse(&s->ring, s->n_slots);
                if (r < 0)
                        return r;
                s->buffers_registered = true;
        }
        return 0;
}

/* The fixed-buffer index for a message at 'offset', registering its slot on first use. */
static int zc_slot(Sender *s, uint64_t offset, uint32_t len, unsigned *ret) {
        unsigned slot = (unsigned)(offset / s->slot_size);
        uint64_t start = (uint64_t)slot * s->slot_size;

        if (slot >= s->n_slots || offset + len > start + s->slot_size)
                return -EINVAL;
        if (!s->slot_registered[slot]) {
                struct iovec iov = {
                        .iov_base = s->ram + start,
                        .iov_len = MIN(s->slot_size, s->ram_size - start),
                };
                int r = io_uring_register_buffers_update_tag(&s->ring, slot, &iov, NULL, 1);
                if (r < 0)
                        return r;
                s->slot_registered[slot] = true;
        }
        *ret = slot;
        return 0;
}

static void handle_cqe(Sender *s, struct io_uring_cqe *cqe) {
        unsigned conn = (unsigned)(cqe->user_data >> 8), b = (unsigned)(cqe->user_data >> 1) & 1;
        SenderBatch *batch;

        if (cqe->flags & IORING_CQE_F_NOTIF) {
                s->notifs_pending--;
                return;
        }
        if (conn >= s->n_conns)
                return;
        batch = &s->conns[conn].batch[b];
        if (cqe->res < 0) {
                if (!s->error)
                        s->error = cqe->res == -ECANCELED ? -EIO : cqe->res;
        } else
                s->bytes_completed += (uint64_t)cqe->res;
        if (!(cqe->flags & IORING_CQE_F_MORE) && (cqe->user_data & 1) && s->zerocopy)
                s->notifs_pending--; /* no notification will follow this one */
        if (++batch->completed == batch->n_sqes) {
                batch->in_flight = false;
                batch->n_msgs = batch->n_sqes = batch->completed = 0;
        }
}

/* Blocks for a completion, in slices of at most SENDER_IDLE_US, until 'deadline_us'. */
static int wait_one(Sender *s) {
        for (;;) {
                struct io_uring_cqe *cqe;
                uint64_t slice = SENDER_IDLE_US, now = time_monotonic_usec();
                int r;

                if (s->deadline_us) {
                        if (now >= s->deadline_us)
                                return -ETIME;
                        slice = MIN(slice, s->deadline_us - now);
                }
                struct __kernel_timespec ts = { .tv_sec = (long long)(slice / USEC_PER_SEC),
                                                .tv_nsec = (long long)(slice % USEC_PER_SEC * 1000) };
                r = io_uring_wait_cqe_timeout(&s->ring, &cqe, &ts);
                if (r == 0)
                        return 0;
                if (r != -ETIME && r != -EINTR)
                        return r;
                if (s->idle) {
                        r = s->idle(s->idle_userdata);
                        if (r < 0)
                                return r;
                }
        }
}

/* Reaps completions; with 'wait', blocks for at least one. */
static int reap(Sender *s, bool wait) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        int r;

        if (wait) {
                r = wait_one(s);
                if (r < 0)
                        return r;
        }
        io_uring_for_each_cqe(&s->ring, head, cqe) {
                handle_cqe(s, cqe);
                n++;
        }
        io_uring_cq_advance(&s->ring, n);
        return s->error;
}

static struct io_uring_sqe *get_sqe(Sender *s) {
        struct io_uring_sqe *sqe;

        while (!(sqe = io_uring_get_sqe(&s->ring))) {
                int r = io_uring_submit(&s->ring);
                if (r >= 0)
                        r = reap(s, true);
                if (r < 0) {
                        if (!s->error)
                                s->error = r;
                        return NULL;
                }
        }
        return sqe;
}

/* Turns a filled batch into linked SQEs and submits it. */
static int submit_batch(Sender *s, unsigned ci, unsigned bi) {
        SenderConn *c = &s->conns[ci];
        SenderBatch *b = &c->batch[bi];
        unsigned total = 0;
        int r;

        for (unsigned i = 0; i < b->n_msgs; i++)
                total += b->msgs[i].has_data ? 2 : 1;
        b->n_sqes = total;
        b->completed = 0;
        b->in_flight = true;

        unsigned k = 0;
        for (unsigned i = 0; i < b->n_msgs; i++) {
                struct io_uring_sqe *sqe = get_sqe(s);
                if (!sqe)
                        return s->error ? s->error : -EIO;
                io_uring_prep_send(sqe, c->fd, b->headers[i], MIG_HEADER_SIZE, MSG_WAITALL | MSG_NOSIGNAL);
                io_uring_sqe_set_data64(sqe, tag(ci, bi, false));
                if (++k < total)
                        sqe->flags |= IOSQE_IO_LINK;

                if (!b->msgs[i].has_data)
                        continue;
                sqe = get_sqe(s);
                if (!sqe)
                        return s->error ? s->error : -EIO;
                uint8_t *p = s->ram + b->msgs[i].offset;
                if (s->zerocopy) {
                        io_uring_prep_send_zc_fixed(sqe, c->fd, p, b->msgs[i].len, MSG_WAITALL | MSG_NOSIGNAL,
                                                    0, b->msgs[i].slot);
                        s->notifs_pending++;
                } else
                        io_uring_prep_send(sqe, c->fd, p, b->msgs[i].len, MSG_WAITALL | MSG_NOSIGNAL);
                io_uring_sqe_set_data64(sqe, tag(ci, bi, true));
                if (++k < total)
                        sqe->flags |= IOSQE_IO_LINK;
        }
        r = io_uring_submit(&s->ring);
        return r < 0 ? r : 0;
}

/* Makes the filling batch of a connection go out once the other one is done. */
static int push(Sender *s, unsigned ci) {
        SenderConn *c = &s->conns[ci];
        unsigned other = c->filling ^ 1;
        int r;

        if (c->batch[c->filling].n_msgs == 0)
                return 0;
        while (c->batch[other].in_flight) {
                r = reap(s, true);
                if (r < 0)
                        return r;
        }
        r = submit_batch(s, ci, c->filling);
        if (r < 0)
                return r;
        c->filling = other;
        return 0;
}

int sender_queue(Sender *s, unsigned ci, uint32_t type, uint64_t a, uint64_t b, uint64_t data_offset,
                 uint32_t data_len) {
        SenderConn *c;
        SenderBatch *batch;
        int r;

        if (s->error)
                return s->error;
        if (ci >= s->n_conns || (data_len && (data_offset > s->ram_size || data_len > s->ram_size - data_offset)))
                return -EINVAL;
        c = &s->conns[ci];
        batch = &c->batch[c->filling];
        if (batch->n_msgs == SENDER_BATCH) {
                r = push(s, ci);
                if (r < 0)
                        return r;
                batch = &c->batch[c->filling];
        }
        unsigned slot = 0;
        if (data_len && s->zerocopy) {
                r = zc_slot(s, data_offset, data_len, &slot);
                if (r < 0)
                        return r;
        }
        mig_header_encode(&(MigHeader){ .type = type, .len = data_len, .a = a, .b = b },
                          batch->headers[batch->n_msgs]);
        batch->msgs[batch->n_msgs].slot = slot;
        batch->msgs[batch->n_msgs].offset = data_offset;
        batch->msgs[batch->n_msgs].len = data_len;
        batch->msgs[batch->n_msgs].has_data = data_len > 0;
        batch->n_msgs++;
        /* Reap what is done without waiting, to keep byte counts current. */
        return reap(s, false);
}

int sender_flush(Sender *s) {
        int r;

        for (unsigned i = 0; i < s->n_conns; i++) {
                r = push(s, i);
                if (r < 0)
                        return r;
        }
        for (;;) {
                bool busy = false;
                for (unsigned i = 0; i < s->n_conns; i++)
                        busy = busy || s->conns[i].batch[0].in_flight || s->conns[i].batch[1].in_flight;
                if (!busy)
                        return s->error;
                r = reap(s, true);
                if (r < 0)
                        return r;
        }
}

static bool zc_supported;

static void probe_zerocopy(void) {
        struct io_uring_probe *p = io_uring_get_probe();

        zc_supported = p && io_uring_opcode_supported(p, IORING_OP_SEND_ZC);
        if (p)
                io_uring_free_probe(p);
}

bool sender_zerocopy_supported(void) {
        static pthread_once_t once = PTHREAD_ONCE_INIT;

        (void)pthread_once(&once, probe_zerocopy);
        return zc_supported;
}

void sender_done(Sender *s) {
        if (!s->ring_ready)
                return;
        /* Requests may still be in flight after an error: the sockets are shut down by
         * then, so they complete quickly; then wait for every zero-copy notification. */
        for (;;) {
                bool busy = s->notifs_pending > 0;
                for (unsigned i = 0; i < s->n_conns; i++)
                        busy = busy || s->conns[i].batch[0].in_flight || s->conns[i].batch[1].in_flight;
                if (!busy)
                        break;
                struct io_uring_cqe *cqe;
                struct __kernel_timespec ts = { .tv_sec = 5 };
                if (io_uring_wait_cqe_timeout(&s->ring, &cqe, &ts) < 0)
                        break;
                (void)reap(s, false);
        }
        if (s->buffers_registered)
                (void)io_uring_unregister_buffers(&s->ring);
        free(s->slot_registered);
        s->slot_registered = NULL;
        io_uring_queue_exit(&s->ring);
        s->ring_ready = false;
}
