/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The destination's receive state machine: which message is valid in which state, what it
 * does, and what the state becomes (the table in docs/migration.md). No I/O here. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "job-internal.h"
#include "receive.h"
#include "state-stream.h"

static const char *const rx_state_table[_RX_STATE_MAX] = {
        [RX_HELLO] = "hello",        [RX_SETUP] = "setup",         [RX_PRECOPY] = "precopy",
        [RX_STATE] = "state-received", [RX_READY] = "ready",       [RX_COMMITTED] = "committed",
        [RX_DONE] = "done",          [RX_FAILED] = "failed",
};

/* How a message out of place is described: "<TYPE> <where>". */
static const char *const rx_state_where[_RX_STATE_MAX] = {
        [RX_HELLO] = "before the HELLO",
        [RX_SETUP] = "during setup, before the RAM map or any page",
        [RX_PRECOPY] = "during precopy, before the state",
        [RX_STATE] = "after the state, before COMPLETE",
        [RX_READY] = "after the state was restored, before COMMIT",
        [RX_COMMITTED] = "after COMMIT",
        [RX_DONE] = "after the migration ended",
        [RX_FAILED] = "after the migration failed",
};

static const char *const mig_type_table[_MIG_MAX] = {
        [MIG_HELLO] = "HELLO",       [MIG_HELLO_ACK] = "HELLO_ACK", [MIG_PAGES] = "PAGES",
        [MIG_ZERO] = "ZERO",         [MIG_ITER_END] = "ITER_END",   [MIG_FLUSH] = "FLUSH",
        [MIG_STATE] = "STATE",       [MIG_COMPLETE] = "COMPLETE",   [MIG_READY] = "READY",
        [MIG_COMMIT] = "COMMIT",     [MIG_ACK] = "ACK",             [MIG_ERROR] = "ERROR",
        [MIG_RAM_MAP] = "RAM_MAP",   [MIG_STATE_TRIAL] = "STATE_TRIAL",
        [MIG_TRIAL_DONE] = "TRIAL_DONE",
};

const char *rx_state_to_string(RxState s) {
        return s >= 0 && s < _RX_STATE_MAX ? rx_state_table[s] : NULL;
}

const char *mig_type_to_string(uint32_t type) {
        return type > 0 && type < _MIG_MAX ? mig_type_table[type] : NULL;
}

void rx_init(RxMachine *m, const RxOps *ops, void *userdata) {
        *m = (RxMachine){ .ops = ops, .userdata = userdata };
        atomic_init(&m->state, RX_HELLO);
        pthread_mutex_init(&m->error_lock, NULL);
}

void rx_free(RxMachine *m) {
        free(m->map);
        free(m->state_buf);
        free(m->config);
        m->map = m->state_buf = NULL;
        m->config = NULL;
        pthread_mutex_destroy(&m->error_lock);
}

RxState rx_get_state(RxMachine *m) {
        return atomic_load(&m->state);
}

void rx_get_error(RxMachine *m, char *buf, size_t size) {
        pthread_mutex_lock(&m->error_lock);
        snprintf(buf, size, "%s", m->error);
        pthread_mutex_unlock(&m->error_lock);
}

int rx_fail(RxMachine *m, int r, const char *fmt, ...) {
        va_list ap;

        pthread_mutex_lock(&m->error_lock);
        if (!m->error[0]) {
                va_start(ap, fmt);
                vsnprintf(m->error, sizeof m->error, fmt, ap);
                va_end(ap);
                m->error_errno = r;
        }
        pthread_mutex_unlock(&m->error_lock);
        atomic_store(&m->state, RX_FAILED);
        return r;
}

static int out_of_place(RxMachine *m, unsigned conn, const MigHeader *h) {
        RxState s = rx_get_state(m);
        const char *t = mig_type_to_string(h->type);

        if (conn > 0)
                return rx_fail(m, -EPROTO, "%s on data connection %u, which carries only PAGES, ZERO and FLUSH%s",
                               t, conn, m->conn[conn] == RX_CONN_FLUSHED ? " (and nothing after FLUSH)" : "");
        if (h->type == MIG_COMMIT && s < RX_READY)
                return rx_fail(m, -EPROTO, "COMMIT before the state was restored (receive state %s)",
                               rx_state_to_string(s));
        if ((h->type == MIG_HELLO && s != RX_HELLO) || (h->type == MIG_RAM_MAP && m->map_seen) ||
            (h->type == MIG_STATE_TRIAL && m->trial_done))
                return rx_fail(m, -EPROTO, "a second %s (receive state %s)", t, rx_state_to_string(s));
        if (h->type == MIG_HELLO_ACK || h->type == MIG_READY || h->type == MIG_ACK || h->type == MIG_TRIAL_DONE)
                return rx_fail(m, -EPROTO, "%s, a destination's reply, came from the source (receive state %s)", t,
                               rx_state_to_string(s));
        return rx_fail(m, -EPROTO, "%s %s (receive state %s)", t, rx_state_where[s], rx_state_to_string(s));
}

static int malformed(RxMachine *m, unsigned conn, const MigHeader *h) {
        const char *t = mig_type_to_string(h->type);

        if (h->type == MIG_PAGES || h->type == MIG_ZERO)
                return rx_fail(m, -EBADMSG,
                               "malformed %s message on connection %u (offset 0x%" PRIx64 ", %" PRIu64
                               " pages, %" PRIu32 " bytes; RAM is 0x%" PRIx64 " bytes)",
                               t, conn, h->a, h->b, h->len, m->ram_size);
        if (conn == RX_CONN_NEW)
                return rx_fail(m, -EBADMSG, "malformed %s message on connection %u of %u (payload of %" PRIu32
                               " bytes)", t, m->n_hellos, m->n_conns, h->len);
        return rx_fail(m, -EBADMSG, "malformed %s message on connection %u (payload of %" PRIu32 " bytes, a=%" PRIu64
                       ", b=%" PRIu64 ")", t, conn, h->len, h->a, h->b);
}

/* Is message type 't' valid on connection 0 in state 's'? (The table in docs/migration.md.) */
static bool valid_main(RxMachine *m, RxState s, uint32_t t) {
        switch (t) {
        case MIG_HELLO:
                return s == RX_HELLO && m->n_hellos == 0;
        case MIG_STATE_TRIAL:
                return s == RX_SETUP && !m->trial_done;
        case MIG_RAM_MAP:
                return s == RX_SETUP && !m->map_seen;
        case MIG_PAGES:
        case MIG_ZERO:
                return s == RX_SETUP || s == RX_PRECOPY;
        case MIG_ITER_END:
        case MIG_STATE:
                return s == RX_PRECOPY;
        case MIG_COMPLETE:
                return s == RX_STATE;
        case MIG_COMMIT:
                return s == RX_READY;
        case MIG_ERROR:
                return s < RX_COMMITTED;
        default: /* FLUSH (data connections only) and the destination's own replies */
                return false;
        }
}

static bool valid_data(RxMachine *m, unsigned conn, uint32_t t) {
        switch (t) {
        case MIG_PAGES:
        case MIG_ZERO:
        case MIG_FLUSH:
                return m->conn[conn] == RX_CONN_DATA;
        case MIG_ERROR:
                return m->conn[conn] != RX_CONN_FLUSHED;
        default:
                return false;
        }
}

int rx_accept_header(RxMachine *m, unsigned conn, const MigHeader *h, RxPayload *ret) {
        RxState s = rx_get_state(m);

        if (s == RX_FAILED)
                return m->error_errno ? m->error_errno : -EPROTO;
        if (conn == RX_CONN_NEW) {
                /* A connection accepted after the first: its HELLO says which it is. */
                if (h->type != MIG_HELLO || s != RX_HELLO || m->n_hellos == 0)
                        return rx_fail(m, -EPROTO, "message type %" PRIu32 " (%s) on connection %u of %u before its "
                                       "HELLO (receive state %s)", h->type, mig_type_to_string(h->type) ?: "unknown",
                                       m->n_hellos, m->n_conns, rx_state_to_string(s));
        } else if (conn >= MIGRATION_MAX_CONNECTIONS || (conn > 0 && !m->ram))
                return rx_fail(m, -EPROTO, "internal error: connection %u read before the VM was built", conn);
        else
                m->header_us[conn] = time_monotonic_usec();
        if (conn == 0 && s == RX_HELLO && m->n_hellos == 0 && (h->type != MIG_HELLO || h->a != MIG_MAGIC))
                return rx_fail(m, -EBADMSG, "not a vmmd migration stream (bad magic: the first message is of type %"
                               PRIu32 " with a=0x%016" PRIx64 ")", h->type, h->a);
        if (!mig_type_to_string(h->type))
rx_fail(m, -EBADMSG, "unknown message type %" PRIu32 " on connection %u (receive state %s)",
                               h->type, conn, rx_state_to_string(s));
        if (conn != RX_CONN_NEW && !(conn == 0 ? valid_main(m, s, h->type) : valid_data(m, conn, h->type)))
                return out_of_place(m, conn, h);

        if (h->type == MIG_HELLO) {
                if (h->a != MIG_MAGIC)
                        return rx_fail(m, -EBADMSG, "not a vmmd migration stream (bad magic)");
                if ((h->b & 0xffffffff) != MIG_VERSION)
                        return rx_fail(m, -EPROTONOSUPPORT, "unsupported migration stream version %" PRIu64
                                       " (this host speaks version %d)", h->b & 0xffffffff, MIG_VERSION);
                /* Connection 0 carries the config; the others only the RAM size. */
                if (conn == 0 ? h->len < 8 + 2 || h->len > 8 + MIG_MAX_CONFIG_LEN : h->len != 8)
                        return malformed(m, conn, h);
                *ret = RX_PAYLOAD_BUFFER;
                return 0;
        }
        if (mig_header_validate(h, m->ram_size) < 0)
                return malformed(m, conn, h);
        *ret = h->type == MIG_PAGES ? RX_PAYLOAD_RAM : h->len > 0 ? RX_PAYLOAD_BUFFER : RX_PAYLOAD_NONE;
        return 0;
}

/* A message from the source for the job's error text: printable ASCII only. */
static void source_text(const uint8_t *p, uint32_t len, char *buf, size_t size) {
        size_t n = MIN((size_t)len, size - 1);

        for (size_t i = 0; i < n; i++)
                buf[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
        buf[n] = 0;
}

static uint64_t le64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v |= (uint64_t)p[i] << (8 * i);
        return v;
}

static int build(RxMachine *m) {
        uint8_t *ram = NULL;
        int r;

        r = m->ops->build(m, m->config, m->ram_size, &ram);
        free(m->config);
        m->config = NULL;
        if (r < 0)
                return rx_fail(m, r, "cannot create the VM: %s", strerror(-r));
        m->ram = ram;
        r = m->ops->reply(m, MIG_HELLO_ACK, 0, 0);
        if (r < 0)
                return rx_fail(m, r, "cannot answer the HELLO: %s", strerror(-r));
        atomic_store(&m->state, RX_SETUP);
        return 0;
}

static int take_hello(RxMachine *m, unsigned conn, const MigHeader *h, const uint8_t *p, unsigned *ret_index) {
        unsigned idx = (unsigned)((h->b >> 32) & 0xffff), n = (unsigned)(h->b >> 48);
        uint64_t ram = le64(p);

        if (conn == 0) {
                if (n < 1 || n > MIGRATION_MAX_CONNECTIONS || idx != 0)
                        return rx_fail(m, -EBADMSG, "bad connection index %u of %u on the first connection "
                                       "(it must be connection 0 of 1 to %d)", idx, n, MIGRATION_MAX_CONNECTIONS);
                /* The host limit and the config are checked by build(); the size itself here,
                 * before anything is allocated for it. */
                if (ram % MiB != 0 || ram < VM_CONFIG_MIN_MEMORY_MIB * MiB ||
                    ram > (uint64_t)VM_CONFIG_MAX_MEMORY_MIB * MiB)
                        return rx_fail(m, -EBADMSG, "RAM size %" PRIu64 " bytes out of range (whole MiB, %d to %d MiB)",
                                       ram, VM_CONFIG_MIN_MEMORY_MIB, VM_CONFIG_MAX_MEMORY_MIB);
                size_t len = h->len - 8;
                if (memchr(p + 8, 0, len))
                        return rx_fail(m, -EBADMSG, "the config contains a NUL byte");
                m->config = strndup((const char *)p + 8, len);
                if (!m->config)
                        return rx_fail(m, -ENOMEM, "out of memory");
                m->n_conns = n;
                m->ram_size = ram;
                m->conn[0] = RX_CONN_DATA;
                m->n_hellos = 1;
                if (ret_index)
                        *ret_index = 0;
                return n == 1 ? build(m) : 0;
        }
        if (n != m->n_conns || idx == 0 || idx >= n || m->conn[idx] != RX_CONN_NONE || ram != m->ram_size)
                return rx_fail(m, -EBADMSG, "connection %u of %u (RAM %" PRIu64 " bytes) does not belong to this "
                               "migration (%u connections, RAM %" PRIu64 " bytes%s)",
                               idx, n, ram, m->n_conns, m->ram_size,
                               idx > 0 && idx < MIGRATION_MAX_CONNECTIONS && m->conn[idx] != RX_CONN_NONE
                                       ? ", that index is taken" : "");
        m->conn[idx] = RX_CONN_DATA;
        m->n_hellos++;
        if (ret_index)
                *ret_index = idx;
        return m->n_hellos == m->n_conns ? build(m) : 0;
}

int rx_step(RxMachine *m, unsigned conn, const MigHeader *h, const uint8_t *p, unsigned *ret_index) {
        uint64_t apply_us = 0;
        int r;

        if (rx_get_state(m) == RX_FAILED)
                return m->error_errno ? m->error_errno : -EPROTO;
        atomic_fetch_add(&m->bytes, (uint64_t)MIG_HEADER_SIZE + h->len);

        switch (h->type) {
        case MIG_HELLO:
                return take_hello(m, conn, h, p, ret_index);
        case MIG_PAGES: /* the data is in RAM already */
                if (conn == 0 && rx_get_state(m) == RX_SETUP)
                        atomic_store(&m->state, RX_PRECOPY);
                return 0;
        case MIG_ZERO:
                memset(m->ram + h->a, 0, h->b * MIG_PAGE_SIZE);
                if (conn == 0 && rx_get_state(m) == RX_SETUP)
                        atomic_store(&m->state, RX_PRECOPY);
                return 0;
        case MIG_FLUSH:
                m->conn[conn] = RX_CONN_FLUSHED;
                return 0;
        case MIG_RAM_MAP:
                m->map_seen = true;
                m->map = malloc(h->len);
                if (!m->map)
                        return rx_fail(m, -ENOMEM, "out of memory");
                memcpy(m->map, p, h->len);
                m->map_chunks = h->b;
                atomic_store(&m->state, RX_PRECOPY);
                if (m->ops->prefault)
                        (void)m->ops->prefault(m, m->map, m->map_chunks); /* only slower without */
                return 0;
        case MIG_STATE_TRIAL:
                m->trial_done = true;
                r = m->ops->trial(m, p, h->len, &apply_us);
                if (r < 0)
                        return rx_fail(m, r, "the vCPU/device state was rejected in the rehearsal: %s", strerror(-r));
                r = m->ops->reply(m, MIG_TRIAL_DONE, apply_us, time_monotonic_usec() - m->header_us[0]);
                return r < 0 ? rx_fail(m, r, "cannot answer the state rehearsal: %s", strerror(-r)) : 0;
        case MIG_ITER_END:
                if (h->a != m->iterations)
                        return rx_fail(m, -EBADMSG, "ITER_END of pass %" PRIu64 " where pass %" PRIu32 " was due",
                                       h->a, m->iterations);
                m->iterations++;
                if (m->ops->iteration)
                        m->ops->iteration(m, m->iterations);
                return 0;
        case MIG_STATE:
                m->state_buf = malloc(h->len);
                if (!m->state_buf)
                        return rx_fail(m, -ENOMEM, "out of memory");
                memcpy(m->state_buf, p, h->len);
                m->state_len = h->len;
                m->state_receive_us = time_monotonic_usec() - m->header_us[0];
                atomic_store(&m->state, RX_STATE);
                return 0;
        case MIG_COMPLETE: {
                r = m->ops->end_data(m);
                if (r < 0)
                        return rx_fail(m, r, "a data connection did not finish: %s", strerror(-r));
                for (unsigned i = 1; i < m->n_conns; i++)
                        if (m->conn[i] != RX_CONN_FLUSHED)
                                return rx_fail(m, -EPROTO, "COMPLETE before data connection %u sent FLUSH", i);
                uint64_t t = time_monotonic_usec();
                r = m->ops->restore(m, m->state_buf, m->state_len);
                if (r < 0)
                        return rx_fail(m, r, "the vCPU/device state was rejected: %s", strerror(-r));
                m->restore_us = time_monotonic_usec() - t;
                r = m->ops->reply(m, MIG_READY, m->state_receive_us, m->restore_us);
                if (r < 0)
                        return rx_fail(m, r, "cannot send READY: %s", strerror(-r));
                atomic_store(&m->state, RX_READY);
                return 0;
        }
        case MIG_COMMIT: {
                uint64_t t = time_monotonic_usec();
                atomic_store(&m->state, RX_COMMITTED);
                r = m->ops->resume(m);
                if (r < 0)
                        return rx_fail(m, r, "the guest did not resume after COMMIT: %s", strerror(-r));
                m->resume_us = time_monotonic_usec() - t;
                /* The guest runs here now; a lost acknowledgement does not undo that. */
                (void)m->ops->reply(m, MIG_ACK, m->resume_us, 0);
                atomic_store(&m->state, RX_DONE);
                return 0;
        }
        case MIG_ERROR: {
                char msg[MIG_MAX_ERROR_LEN + 1];
                source_text(p, p ? h->len : 0, msg, sizeof msg);
                return rx_fail(m, -ECONNABORTED, "the source aborted: %s", msg[0] ? msg : "(no reason given)");
        }
        default:
                return rx_fail(m, -EPROTO, "internal error: message type %" PRIu32 " accepted", h->type);
        }
}
