/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The destination side: accept the source's connections, build the VM from the config it
 * sends, take pages straight into guest RAM, restore state, and resume only after the
 * source commits (docs/migration.md). Everything read is validated first. */
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "config.h"
#include "job-internal.h"
#include "log.h"
#include "receive.h"
#include "wire.h"

#define DEFAULT_TIMEOUT_S 60
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

typedef struct Receiver {
        struct Incoming *in;
        unsigned idx;
        pthread_t thread;
        bool started;
        int result;
} Receiver;

typedef struct Incoming {
        MigrationJob *j;
        RxMachine rx;
        uint64_t timeout_us; /* for each message, from when we start waiting for it */
        int fds[MIGRATION_MAX_CONNECTIONS]; /* by connection index; closed by the job */
        Receiver receivers[MIGRATION_MAX_CONNECTIONS];
        uint64_t last_publish_us;

        /* Prefault: a thread faults in the chunks of the source's RAM map ahead of the
         * page stream, so receivers copy into present memory. */
        pthread_t prefault_thread;
        bool prefault_started;
        _Atomic bool prefault_stop;
        _Atomic uint64_t prefaulted; /* bytes */
        uint64_t prefault_us;
} Incoming;

static Incoming *incoming_of(RxMachine *m) {
        return m->userdata;
}

/* Reads one message on connection 'conn' (fd) and hands it to the state machine: the
 * header and the whole payload must arrive within the timeout, so a peer that trickles
 * bytes gains nothing. */
static int recv_message(Incoming *in, unsigned conn, int fd, unsigned *ret_index) {
        uint64_t deadline = time_monotonic_usec() + in->timeout_us;
        uint8_t hdr[MIG_HEADER_SIZE];
        _cleanup_free_ uint8_t *buf = NULL;
        RxPayload where;
        MigHeader h;
        int r;

        r = mig_recv_all_until(fd, hdr, sizeof hdr, deadline);
        if (r < 0)
                return r;
        mig_header_decode(hdr, &h);
        r = rx_accept_header(&in->rx, conn, &h, &where);
        if (r < 0)
                return r;
        if (where == RX_PAYLOAD_RAM)
                r = mig_recv_all_until(fd, in->rx.ram + h.a, h.len, deadline);
        else if (where == RX_PAYLOAD_BUFFER) {
                buf = malloc(h.len); /* bounded by rx_accept_header(): 16 MiB at most */
                if (!buf)
                        return rx_fail(&in->rx, -ENOMEM, "out of memory");
                r = mig_recv_all_until(fd, buf, h.len, deadline);
        }
        if (r < 0)
                return r;
        return rx_step(&in->rx, conn, &h, buf, ret_index);
}

/* Faults in each chunk of the RAM map in address order (the order the first pass sends
 * them) with MADV_POPULATE_WRITE, which allocates without writing, so it never races with
 * a receiver filling the same page. Stops at the end of the map, when told, or where the
 * kernel lacks MADV_POPULATE_WRITE. */
static void *prefault_thread(void *p) {
        Incoming *in = p;
        const uint8_t *map = in->rx.map;
        uint64_t chunk = UINT64_C(1) << MIG_MAP_CHUNK_SHIFT, t0 = time_monotonic_usec();

        (void)pthread_setname_np(pthread_self(), "migrate-prefault");
        for (uint64_t c = 0; c < in->rx.map_chunks && !atomic_load(&in->prefault_stop); c++) {
                if (!(map[c / 8] & (1u << (c % 8))))
                        continue;
                uint64_t len = MIN(chunk, in->rx.ram_size - c * chunk);
                int r;
                while ((r = madvise(in->rx.ram + c * chunk, len, MADV_POPULATE_WRITE)) < 0 &&
                       (errno == EINTR || errno == EAGAIN))
                        ;
                if (r < 0) {
                        log_debug("prefault stopped at 0x%" PRIx64 ": %m", c * chunk);
                        break;
                }
                atomic_fetch_add(&in->prefaulted, len);
        }
        in->prefault_us = time_monotonic_usec() - t0;
        return NULL;
}

static int op_prefault(RxMachine *m, const uint8_t *map, uint64_t chunks) {
        Incoming *in = incoming_of(m);
        int r;

        r = pthread_create(&in->prefault_thread, NULL, prefault_thread, in);
        if (r != 0) {
                log_debug("no prefault thread: %s", strerror(r)); /* only slower */
                return -r;
        }
        in->prefault_started = true;
        return 0;
}

static void stop_prefault(Incoming *in) {
        if (!in->prefault_started)
                return;
        atomic_store(&in->prefault_stop, true);
        pthread_join(in->prefault_thread, NULL);
        in->prefault_started = false;
        in->j->stats.prefault_us = in->prefault_us;
        log_debug("%s: prefaulted %" PRIu64 " MiB in %" PRIu64 " ms", vm_get_name(in->j->vm),
                  atomic_load(&in->prefaulted) >> 20, in->prefault_us / 1000);
}

/* Data connections 1..n-1: pages until FLUSH. A failure here fails the machine and wakes
 * the main thread (its read of connection 0 ends), so the job ends at once. */
static void *receiver_thread(void *p) {
        Receiver *rx = p;
        Incoming *in = rx->in;
        char name[16];

        snprintf(name, sizeof name, "migrate-rx%u", rx->idx);
        (void)pthread_setname_np(pthread_self(), name);
        for (;;) {
                int r = recv_message(in, rx->idx, in->fds[rx->idx], NULL);
                if (r < 0) {
                        rx->result = rx_fail(&in->rx, r, "data connection %u: %s", rx->idx,
                                             r == -ECONNRESET  ? "the source closed it before FLUSH"
                                             : r == -ETIMEDOUT ? "timed out waiting for the source"
                                                               : strerror(-r));
                        (void)shutdown(in->fds[0], SHUT_RDWR);
                        break;
                }
                if (in->rx.conn[rx->idx] == RX_CONN_FLUSHED)
                        break;
        }
        return NULL;
}

static int join_receivers(Incoming *in) {
        int r = 0;

        for (unsigned i = 1; i < MIGRATION_MAX_CONNECTIONS; i++) {
                if (!in->receivers[i].started)
                        continue;
                pthread_join(in->receivers[i].thread, NULL);
                in->receivers[i].started = false;
                if (in->receivers[i].result < 0 && r == 0)
                        r = in->receivers[i].result;
        }
        return r;
}

static int op_end_data(RxMachine *m) {
        Incoming *in = incoming_of(m);
        int r = join_receivers(in);

        stop_prefault(in);
        return r;
}

static int accept_one(MigrationJob *j, uint64_t timeout_us, int *ret) {
        struct pollfd p = { .fd = j->listen_fd, .events = POLLIN };
        int r, fd;

        r = poll(&p, 1, timeout_us ? (int)MIN(timeout_us / 1000, (uint64_t)INT32_MAX) : -1);
        if (r < 0)
                return negative_errno();
        if (r == 0)
                return -ETIMEDOUT;
        if (job_cancelled(j))
                return -ECANCELED;
        fd = accept4(j->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
                return job_cancelled(j) ? -ECANCELED : negative_errno();
        *ret = fd;
        return 0;
}

static void set_timeout(int fd, uint64_t timeout_us) {
        struct timeval tv = { .tv_sec = (time_t)(timeout_us / USEC_PER_SEC) };
        /* Replies: a peer that never reads cannot hold us (receiving has its own deadline). */
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* The source's config is untrusted: it is validated like CreateVM's, but no file it names
 * is opened (kernel and initramfs are in the RAM that follows), and its console is not
 * taken: a file console comes only from the destination's own 'config' option; otherwise
 * the console is a pty ("none" stays "none"). */
static int op_build(RxMachine *m, const char *config_json, uint64_t ram_size, uint8_t **ret_ram) {
        Incoming *in = incoming_of(m);
        MigrationJob *j = in->j;
        _cleanup_free_ char *own = NULL, *merged = NULL, *err = NULL;
        _cleanup_(vm_config_freep) VmConfig *src = NULL, *c = NULL;
        const VmMemoryRegion *regions;
        unsigned n_regions;
        uint8_t *ram;
        uint64_t size;
        int r;

        /* Every connection is here: nobody else may connect to this migration (before
         * HELLO_ACK tells the source so). */
        pthread_mutex_lock(&j->fd_lock);
        j->listen_fd = safe_close(j->listen_fd);
        pthread_mutex_unlock(&j->fd_lock);
        migration_uri_unlink(&j->uri);

        r = vm_config_parse_flags(config_json, VM_CONFIG_PARSE_NO_FILES, &src, &err);
        if (r < 0)
                return rx_fail(m, r, "the source's VM config is not valid: %s", err ? err : strerror(-r));
        if (src->serial_mode == SERIAL_MODE_FILE) {
                src->serial_mode = SERIAL_MODE_PTY;
                free(src->serial_path);
                src->serial_path = NULL;
        }
        own = vm_config_to_json(src);
        if (!own)
                return rx_fail(m, -ENOMEM, "out of memory");
        if (j->in_params.config_overlay) {
                r = vm_config_merge_json(own, j->in_params.config_overlay, &merged, &err);
                if (r < 0)
                        return rx_fail(m, r, "cannot merge the config option: %s", err ? err : strerror(-r));
        }
        free(err);
        err = NULL;
        r = vm_config_parse_flags(merged ? merged : own, VM_CONFIG_PARSE_NO_FILES, &c, &err);
        if (r < 0)
                return rx_fail(m, r, "the VM config is not valid here: %s", err ? err : strerror(-r));
        if (c->memory_mib * MiB != ram_size)
                return rx_fail(m, -EBADMSG, "RAM size %" PRIu64 " does not match memory_mib %" PRIu64, ram_size,
                               c->memory_mib);
        r = vm_incoming_setup(j->vm, c);
        if (r < 0)
                return rx_fail(m, r, "cannot create the VM: %s", strerror(-r));
        r = vm_get_ram(j->vm, &ram, &size, &regions, &n_regions);
        if (r < 0)
                return rx_fail(m, r, "cannot map the VM's RAM: %s", strerror(-r));
        if (size != ram_size)
                return rx_fail(m, -EBADMSG, "RAM of %" PRIu64 " bytes where %" PRIu64 " were announced", size,
                               ram_size);
        *ret_ram = ram;
        return 0;
}

static int op_trial(RxMachine *m, const uint8_t *state, size_t len, uint64_t *ret_apply_us) {
        return vm_restore_state_trial(incoming_of(m)->j->vm, state, len, ret_apply_us);
}

static int op_restore(RxMachine *m, const uint8_t *state, size_t len) {
        return vm_restore_state(incoming_of(m)->j->vm, state, len);
}

static int op_resume(RxMachine *m) {
        Incoming *in = incoming_of(m);
        MigrationJob *j = in->j;

        /* Past the point of no return: Cancel() is refused from here on. */
        int r = job_commit(j);
        return r < 0 ? r : vm_resume_incoming(j->vm);
}

static int op_reply(RxMachine *m, uint32_t type, uint64_t a, uint64_t b) {
        return mig_send_msg(incoming_of(m)->fds[0], type, a, b, NULL, 0);
}

static void publish(Incoming *in) {
        MigrationStats *s = &in->j->stats;

        in->last_publish_us = time_monotonic_usec();
        s->bytes_processed = atomic_load(&in->rx.bytes);
        s->memory_processed = s->bytes_processed;
        s->memory_total = in->rx.ram_size;
        s->bytes_total = MAX(s->bytes_total, s->bytes_processed);
        s->elapsed_us = time_realtime_usec() - s->start_time_us;
        s->connections = in->rx.n_conns;
        s->prefault_bytes = atomic_load(&in->prefaulted);
        if (s->elapsed_us > 0)
                s->rate = s->bytes_processed * USEC_PER_SEC / s->elapsed_us;
        job_publish(in->j);
        job_post(in->j, JOB_EVENT_PROGRESS);
}

static void op_iteration(RxMachine *m, uint32_t passes) {
        Incoming *in = incoming_of(m);

        in->j->stats.iteration = passes;
        publish(in);
}

static const RxOps incoming_ops = {
        .build = op_build,
        .trial = op_trial,
        .prefault = op_prefault,
        .end_data = op_end_data,
        .restore = op_restore,
        .resume = op_resume,
        .reply = op_reply,
        .iteration = op_iteration,
};

/* Accepts the connections and takes their HELLOs until the machine has built the VM. */
static int setup(Incoming *in) {
        MigrationJob *j = in->j;
        uint64_t t_setup = 0;
        int fd, r;

        /* The first connection says how many follow; wait for it as long as asked. */
        r = accept_one(j, j->in_params.timeout_s * USEC_PER_SEC, &fd);
        if (r < 0)
                return r == -ETIMEDOUT ? rx_fail(&in->rx, r, "no source connected within timeout_s=%" PRIu64 " s",
                                                 j->in_params.timeout_s)
                                       : r;
        t_setup = time_monotonic_usec();
        job_register_fd(j, fd);
        set_timeout(fd, in->timeout_us);
        in->fds[0] = fd;
        r = recv_message(in, 0, fd, NULL);
        if (r < 0)
                return r;
        while (rx_get_state(&in->rx) == RX_HELLO) {
                unsigned idx = 0;
                r = accept_one(j, in->timeout_us, &fd);
                if (r == -ETIMEDOUT)
                        return rx_fail(&in->rx, r, "timed out waiting for data connection %u of %u (%u arrived)",
                                       in->rx.n_hellos, in->rx.n_conns, in->rx.n_hellos);
                if (r < 0)
                        return r;
                job_register_fd(j, fd);
                set_timeout(fd, in->timeout_us);
                r = recv_message(in, RX_CONN_NEW, fd, &idx);
                if (r < 0)
                        return r;
                in->fds[idx] = fd;
        }
        j->stats.setup_us = time_monotonic_usec() - t_setup;
        return 0;
}

static int run(Incoming *in) {
        MigrationJob *j = in->j;
        MigrationStats *s = &j->stats;
        int r;

        r = setup(in);
        if (r < 0)
                return r;
        s->state = JOB_STATE_ACTIVE;
        s->phase = JOB_PHASE_PRECOPY;
        s->memory_total = in->rx.ram_size;
        s->bytes_total = in->rx.ram_size;
        publish(in);

        for (unsigned k = 1; k < in->rx.n_conns; k++) {
                in->receivers[k] = (Receiver){ .in = in, .idx = k };
                r = pthread_create(&in->receivers[k].thread, NULL, receiver_thread, &in->receivers[k]);
                if (r != 0)
                        return rx_fail(&in->rx, -r, "cannot start a receiver thread: %s", strerror(r));
                in->receivers[k].started = true;
        }

        while (rx_get_state(&in->rx) != RX_DONE) {
                r = recv_message(in, 0, in->fds[0], NULL);
                if (r < 0)
                        return r;
                if (rx_get_state(&in->rx) >= RX_STATE && s->state == JOB_STATE_ACTIVE) {
                        s->state = JOB_STATE_COMPLETING;
                        s->phase = JOB_PHASE_DOWNTIME;
                        publish(in);
                }
                if (time_monotonic_usec() - in->last_publish_us > 100 * 1000)
                        publish(in);
        }
        s->downtime_breakdown_us[DOWNTIME_DESTINATION_RESTORE] = 0;
        s->bytes_processed = atomic_load(&in->rx.bytes);
        s->bytes_remaining = 0;
        s->memory_remaining = 0;
        publish(in);
        return 0;
}

/* Ends every thread that reads the sockets or touches RAM, then closes the sockets. */
static void stop_all(Incoming *in) {
        MigrationJob *j = in->j;

        pthread_mutex_lock(&j->fd_lock);
        for (unsigned i = 0; i < j->n_fds; i++)
                (void)shutdown(j->fds[i], SHUT_RDWR);
        pthread_mutex_unlock(&j->fd_lock);
        (void)join_receivers(in);
        stop_prefault(in);
        job_close_fds(j);
        migration_uri_unlink(&j->uri);
}

void *incoming_thread(void *p) {
        MigrationJob *j = p;
        Incoming in = { .j = j };
        char error[MIGRATION_ERROR_MESSAGE_MAX];
        int r;

        (void)pthread_setname_np(pthread_self(), "migrate-in");
        rx_init(&in.rx, &incoming_ops, &in);
        in.timeout_us = (j->in_params.timeout_s ? j->in_params.timeout_s : DEFAULT_TIMEOUT_S) * USEC_PER_SEC;
        for (unsigned i = 0; i < MIGRATION_MAX_CONNECTIONS; i++)
                in.fds[i] = -EBADF;

        r = run(&in);
        if (r >= 0) {
                stop_all(&in);
                job_finish(j, JOB_STATE_COMPLETED, NULL, NULL);
                goto out;
        }

        /* Resumed here only if the machine got to the end: a guest that did not resume
         * after COMMIT fails the job like any failure before it. */
        rx_get_error(&in.rx, error, sizeof error);
        if (in.fds[0] >= 0 && r != -ECONNABORTED && r != -ECONNRESET) {
                const char *m = error[0] ? error : strerror(-r);
                (void)mig_send_msg(in.fds[0], MIG_ERROR, (uint64_t)-r, 0, m, (uint32_t)strlen(m));
        }
        stop_all(&in);
        /* Drop the half-built VM: it never ran here (or did not resume). */
        if (vm_get_state(j->vm) == VM_STATE_INCOMING || atomic_load(&j->committed))
                (void)vm_stop(j->vm);
        if (job_cancelled(j) && !atomic_load(&j->committed))
                job_finish(j, JOB_STATE_CANCELLED, "Cancelled", "migration cancelled");
        else if (error[0])
                job_finish(j, JOB_STATE_FAILED, "MigrationFailed", "%s", error);
        else
                job_finish(j, JOB_STATE_FAILED, "MigrationFailed", "%s (receive state %s)",
                           r == -ECONNRESET ? "the source closed the connection before the commit"
                           : r == -ETIMEDOUT ? "timed out waiting for the source"
                                             : strerror(-r),
                           rx_state_to_string(rx_get_state(&in.rx)));
out:
        rx_free(&in.rx);
        return NULL;
}

int migration_in_start(Vm *vm, const char *uri, const IncomingParams *p, const MigrationCallbacks *cb,
                       void *userdata, MigrationJob **ret) {
        MigrationJob *j = NULL;
        int r;

        if (vm_job_is_active(vm))
                return -EBUSY;
        if (vm_get_state(vm) != VM_STATE_INCOMING || vm_get_config(vm))
                return -ESTALE;
        r = migration_job_new(JOB_OPERATION_MIGRATION_IN, vm, cb, userdata, &j);
        if (r < 0)
                return r;
        r = migration_uri_parse(uri, &j->uri);
        if (r < 0)
                goto fail;
        if (p) {
                j->in_params.timeout_s = p->timeout_s;
                if (p->config_overlay) {
                        j->in_params.config_overlay = strdup(p->config_overlay);
                        if (!j->in_params.config_overlay) {
                                r = -ENOMEM;
                                goto fail;
                        }
                }
        }
        r = migration_uri_listen(&j->uri, &j->listen_fd);
        if (r < 0)
                goto fail;

        vm_job_begin(vm);
        r = job_start_thread(j, incoming_thread);
        if (r < 0) {
                vm_job_end(vm);
                goto fail;
        }
        *ret = j;
        return 0;
fail:
        migration_job_free(j);
        return r;
}
