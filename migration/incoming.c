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
#include "socket-util.h"
#include "log.h"
#include "state-stream.h"
#include "wire.h"

#define DEFAULT_TIMEOUT_S 60
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

typedef struct Receiver {
        struct Incoming *in;
        unsigned idx;
        int fd;
        pthread_t thread;
        bool started;
        int result;
} Receiver;

typedef struct Incoming {
        MigrationJob *j;
        uint8_t *ram;
        uint64_t ram_size;
        unsigned n_conns;
        int fds[MIGRATION_MAX_CONNECTIONS];
        Receiver rx[MIGRATION_MAX_CONNECTIONS];
        _Atomic uint64_t bytes;
        char error[256];
        pthread_mutex_t error_lock;

        /* Prefault: a thread faults in the chunks of the source's RAM map ahead of the
         * page stream, so receivers copy into present memory. */
        uint8_t *map;
        uint64_t map_chunks;
        pthread_t prefault_thread;
        bool prefault_started;
        _Atomic bool prefault_stop;
        _Atomic uint64_t prefaulted; /* bytes */
        uint64_t prefault_us;
} Incoming;

static void set_error(Incoming *in, const char *fmt, ...) _printf_(2, 3);
static void set_error(Incoming *in, const char *fmt, ...) {
        va_list ap;

        pthread_mutex_lock(&in->error_lock);
        if (!in->error[0]) {
                va_start(ap, fmt);
                vsnprintf(in->error, sizeof in->error, fmt, ap);
                va_end(ap);
        }
        pthread_mutex_unlock(&in->error_lock);
}

/* Handles one page message: data goes straight into guest RAM. */
static int take_pages(Incoming *in, int fd, const MigHeader *h) {
        int r;

        if (mig_header_validate(h, in->ram_size) < 0)
                return -EBADMSG;
        if (h->type == MIG_ZERO) {
                memset(in->ram + h->a, 0, h->b * MIG_PAGE_SIZE);
                return 0;
        }
        r = mig_recv_all(fd, in->ram + h->a, h->len);
        if (r >= 0)
                atomic_fetch_add(&in->bytes, (uint64_t)h->len + MIG_HEADER_SIZE);
        return r;
}

/* Faults in each chunk of the RAM map in address order (the order the first pass sends
 * them) with MADV_POPULATE_WRITE, which allocates without writing, so it never races with
 * a receiver filling the same page. Stops at the end of the map, when told, or where the
 * kernel lacks MADV_POPULATE_WRITE. */
static void *prefault_thread(void *p) {
        Incoming *in = p;
        uint64_t chunk = UINT64_C(1) << MIG_MAP_CHUNK_SHIFT, t0 = time_monotonic_usec();

        (void)pthread_setname_np(pthread_self(), "migrate-prefault");
        for (uint64_t c = 0; c < in->map_chunks && !atomic_load(&in->prefault_stop); c++) {
                if (!(in->map[c / 8] & (1u << (c % 8))))
                        continue;
                uint64_t len = MIN(chunk, in->ram_size - c * chunk);
                int r;
                while ((r = madvise(in->ram + c * chunk, len, MADV_POPULATE_WRITE)) < 0 &&
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

static int start_prefault(Incoming *in, int fd, const MigHeader *h) {
        int r;

        if (in->map || mig_header_validate(h, in->ram_size) < 0) {
                set_error(in, "bad RAM map message (%u bytes)", h->len);
                return -EBADMSG;
        }
        in->map = malloc(h->len);
        if (!in->map)
                return -ENOMEM;
        r = mig_recv_all(fd, in->map, h->len);
        if (r < 0)
                return r;
        in->map_chunks = h->b;
        r = pthread_create(&in->prefault_thread, NULL, prefault_thread, in);
        if (r != 0) {
                log_debug("no prefault thread: %s", strerror(r)); /* only slower */
                return 0;
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

static int read_error_msg(Incoming *in, int fd, const MigHeader *h) {
        char msg[MIG_MAX_ERROR_LEN + 1] = "";

        if (h->len <= MIG_MAX_ERROR_LEN && mig_recv_all(fd, msg, h->len) == 0)
                msg[h->len] = 0;
        set_error(in, "the source aborted: %s", msg);
        return -ECONNABORTED;
}

/* Data connections 1..n-1: pages until FLUSH. */
static void *receiver_thread(void *p) {
        Receiver *rx = p;
        Incoming *in = rx->in;
        char name[16];

        snprintf(name, sizeof name, "migrate-rx%u", rx->idx);
        (void)pthread_setname_np(pthread_self(), name);
        for (;;) {
                MigHeader h;
                int r = mig_recv_header(rx->fd, &h);
                if (r < 0) {
                        rx->result = r;
                        break;
                }
                if (h.type == MIG_FLUSH && h.len == 0) {
                        rx->result = 0;
                        break;
                }
                if (h.type == MIG_ERROR) {
                        rx->result = read_error_msg(in, rx->fd, &h);
                        break;
                }
                if (h.type != MIG_PAGES && h.type != MIG_ZERO) {
                        set_error(in, "unexpected message %u on data connection %u", h.type, rx->idx);
                        rx->result = -EBADMSG;
                        break;
                }
                r = take_pages(in, rx->fd, &h);
                if (r < 0) {
                        if (r == -EBADMSG)
                                set_error(in, "malformed page message on connection %u (offset 0x%" PRIx64
                                              ", %" PRIu64 " pages)", rx->idx, h.a, h.b);
                        rx->result = r;
                        break;
                }
        }
        return NULL;
}

static int accept_one(MigrationJob *j, unsigned timeout_s, int *ret) {
        struct pollfd p = { .fd = j->listen_fd, .events = POLLIN };
        int r, fd;

        r = poll(&p, 1, timeout_s ? (int)(timeout_s * 1000) : -1);
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

/* Reads a HELLO: returns the connection index and count, and for connection 0 the RAM
 * size and config. */
static int read_hello(Incoming *in, int fd, unsigned *ret_idx, unsigned *ret_n, uint64_t *ret_ram,
                      char **ret_config) {
        MigHeader h;
        uint64_t ram;
        int r;

        r = mig_recv_header(fd, &h);
        if (r < 0)
                return r;
        if (h.type != MIG_HELLO || h.a != MIG_MAGIC) {
                set_error(in, "not a vmmd migration stream (bad magic)");
                return -EBADMSG;
        }
        if ((h.b & 0xffffffff) != MIG_VERSION) {
                set_error(in, "unsupported migration stream version %u", (unsigned)(h.b & 0xffffffff));
                return -EPROTONOSUPPORT;
        }
        if (mig_header_validate(&h, 0) < 0) {
                set_error(in, "malformed hello");
                return -EBADMSG;
        }
        *ret_idx = (unsigned)((h.b >> 32) & 0xffff);
        *ret_n = (unsigned)(h.b >> 48);
        if (*ret_n < 1 || *ret_n > MIGRATION_MAX_CONNECTIONS || *ret_idx >= *ret_n) {
                set_error(in, "bad connection index %u of %u", *ret_idx, *ret_n);
                return -EBADMSG;
        }
        r = mig_recv_all(fd, &ram, 8);
        if (r < 0)
                return r;
        *ret_ram = ram;
        if (ret_config) {
                char *c = malloc(h.len - 8 + 1);
                if (!c)
                        return -ENOMEM;
                r = mig_recv_all(fd, c, h.len - 8);
                if (r < 0) {
                        free(c);
                        return r;
                }
                c[h.len - 8] = 0;
                if (strlen(c) != h.len - 8) {
                        free(c);
                        set_error(in, "config contains a NUL byte");
                        return -EBADMSG;
                }
                *ret_config = c;
        } else if (h.len != 8) {
                set_error(in, "config on a data connection");
                return -EBADMSG;
        }
        return 0;
}

static int setup_vm(Incoming *in, const char *config_json, uint64_t ram_size) {
        MigrationJob *j = in->j;
        _cleanup_free_ char *merged = NULL, *err = NULL;
        VmConfig *c = NULL;
        const VmMemoryRegion *regions;
        unsigned n_regions;
        int r;

        if (j->in_params.config_overlay) {
                r = vm_config_merge_json(config_json, j->in_params.config_overlay, &merged, &err);
                if (r < 0) {
                        set_error(in, "cannot merge the config option: %s", err ? err : strerror(-r));
                        return r;
                }
        }
        r = vm_config_parse(merged ? merged : config_json, &c, &err);
        if (r < 0) {
                set_error(in, "the VM config is not valid here: %s", err ? err : strerror(-r));
                return r;
        }
        if (c->memory_mib * MiB != ram_size) {
                set_error(in, "RAM size %" PRIu64 " does not match memory_mib %" PRIu64, ram_size, c->memory_mib);
                vm_config_free(c);
                return -EBADMSG;
        }
        r = vm_incoming_setup(j->vm, c);
        vm_config_free(c);
        if (r < 0) {
                set_error(in, "cannot create the VM: %s", strerror(-r));
                return r;
        }
        return vm_get_ram(j->vm, &in->ram, &in->ram_size, &regions, &n_regions);
}

static void publish(Incoming *in) {
        MigrationStats *s = &in->j->stats;

        s->bytes_processed = atomic_load(&in->bytes);
        s->memory_processed = s->bytes_processed;
        s->memory_total = in->ram_size;
        s->bytes_total = MAX(s->bytes_total, s->bytes_processed);
        s->elapsed_us = time_realtime_usec() - s->start_time_us;
        s->connections = in->n_conns;
        s->prefault_bytes = atomic_load(&in->prefaulted);
        if (s->elapsed_us > 0)
                s->rate = s->bytes_processed * USEC_PER_SEC / s->elapsed_us;
        job_publish(in->j);
        job_post(in->j, JOB_EVENT_PROGRESS);
}

static int join_receivers(Incoming *in) {
        int r = 0;

        for (unsigned i = 1; i < in->n_conns; i++) {
                if (!in->rx[i].started)
                        continue;
                pthread_join(in->rx[i].thread, NULL);
                in->rx[i].started = false;
                if (in->rx[i].result < 0 && r == 0)
                        r = in->rx[i].result;
        }
        return r;
}

/* Connection 0: pages, iteration ends, then state, complete, commit. */
static int run(Incoming *in) {
        MigrationJob *j = in->j;
        MigrationStats *s = &j->stats;
        int fd0 = in->fds[0];
        _cleanup_free_ uint8_t *state = NULL;
        uint32_t state_len = 0;
        uint64_t receive_us = 0, last_publish = 0;
        int r;

        for (;;) {
                MigHeader h;

                r = mig_recv_header(fd0, &h);
                if (r < 0)
                        return r;
                switch (h.type) {
                case MIG_PAGES:
                case MIG_ZERO:
                        r = take_pages(in, fd0, &h);
                        if (r == -EBADMSG)
                                set_error(in, "malformed page message (offset 0x%" PRIx64 ", %" PRIu64 " pages)",
                                          h.a, h.b);
                        if (r < 0)
                                return r;
                        break;
                case MIG_RAM_MAP:
                        r = start_prefault(in, fd0, &h);
                        if (r < 0)
                                return r;
                        break;
                case MIG_ITER_END:
                        s->iteration = (uint32_t)h.a + 1;
                        publish(in);
                        break;
                case MIG_STATE_TRIAL: {
                        /* The source's rehearsal: load its state as a trial, so a state this
                         * host cannot take fails the migration before the guest is paused,
                         * and tell it how long that took. */
                        uint64_t t = time_monotonic_usec(), apply_us = 0;
                        if (mig_header_validate(&h, in->ram_size) < 0 || state) {
                                set_error(in, "bad state trial message (%u bytes)", h.len);
                                return -EBADMSG;
                        }
                        _cleanup_free_ uint8_t *trial = malloc(h.len);
                        if (!trial)
                                return -ENOMEM;
                        r = mig_recv_all(fd0, trial, h.len);
                        if (r < 0)
                                return r;
                        r = vm_restore_state_trial(j->vm, trial, h.len, &apply_us);
                        if (r < 0) {
                                set_error(in, "the vCPU/device state was rejected in the rehearsal: %s",
                                          vm_get_state_error(j->vm)[0] ? vm_get_state_error(j->vm)
                                                                       : strerror(-r));
                                return r;
                        }
                        r = mig_send_msg(fd0, MIG_TRIAL_DONE, apply_us, time_monotonic_usec() - t, NULL, 0);
                        if (r < 0)
                                return r;
                        break;
                }
                case MIG_STATE: {
                        uint64_t t = time_monotonic_usec();
                        if (mig_header_validate(&h, in->ram_size) < 0 || state) {
                                set_error(in, "bad state message (%u bytes)", h.len);
                                return -EBADMSG;
                        }
                        state = malloc(h.len);
                        if (!state)
                                return -ENOMEM;
                        r = mig_recv_all(fd0, state, h.len);
                        if (r < 0)
                                return r;
                        state_len = h.len;
                        receive_us = time_monotonic_usec() - t;
                        s->state = JOB_STATE_COMPLETING;
                        s->phase = JOB_PHASE_DOWNTIME;
                        break;
                }
                case MIG_COMPLETE: {
                        uint64_t t;
                        if (!state) {
                                set_error(in, "complete without state");
                                return -EBADMSG;
                        }
                        r = join_receivers(in);
                        if (r < 0)
                                return r;
                        stop_prefault(in);
                        t = time_monotonic_usec();
                        r = vm_restore_state(j->vm, state, state_len);
                        if (r < 0) {
                                set_error(in, "the vCPU/device state was rejected: %s",
                                          vm_get_state_error(j->vm)[0] ? vm_get_state_error(j->vm)
                                                                       : strerror(-r));
                                return r;
                        }
                        uint64_t restore_us = time_monotonic_usec() - t;
                        r = mig_send_msg(fd0, MIG_READY, receive_us, restore_us, NULL, 0);
                        if (r < 0)
                                return r;
                        break;
                }
                case MIG_COMMIT: {
                        uint64_t t = time_monotonic_usec();
                        if (!state) {
                                set_error(in, "commit before state");
                                return -EBADMSG;
                        }
                        atomic_store(&j->committed, 1);
                        s->cancelable = false;
                        r = vm_resume_incoming(j->vm);
                        if (r < 0) {
                                set_error(in, "cannot resume the guest: %s", strerror(-r));
                                return r;
                        }
                        /* The guest runs here now; a lost acknowledgement does not undo that. */
                        (void)mig_send_msg(fd0, MIG_ACK, time_monotonic_usec() - t, 0, NULL, 0);
                        s->downtime_breakdown_us[DOWNTIME_DESTINATION_RESTORE] = 0;
                        s->bytes_processed = atomic_load(&in->bytes) + state_len;
                        s->bytes_remaining = 0;
                        s->memory_remaining = 0;
                        publish(in);
                        return 0;
                }
                case MIG_ERROR:
                        return read_error_msg(in, fd0, &h);
                default:
                        set_error(in, "unexpected message type %u", h.type);
                        return -EBADMSG;
                }
                if (time_monotonic_usec() - last_publish > 100 * 1000) {
                        last_publish = time_monotonic_usec();
                        publish(in);
                }
        }
}

void *incoming_thread(void *p) {
        MigrationJob *j = p;
        Incoming in = { .j = j };
        MigrationStats *s = &j->stats;
        unsigned timeout_s = j->in_params.timeout_s ? (unsigned)j->in_params.timeout_s : DEFAULT_TIMEOUT_S;
        _cleanup_free_ char *config = NULL;
        uint64_t ram_size = 0, t_setup = 0;
        unsigned idx, n;
        int fd = -EBADF, r;

        (void)pthread_setname_np(pthread_self(), "migrate-in");
        pthread_mutex_init(&in.error_lock, NULL);
        for (unsigned i = 0; i < MIGRATION_MAX_CONNECTIONS; i++)
                in.fds[i] = -EBADF;

        /* The first connection says how many follow; wait for it as long as asked. */
        r = accept_one(j, (unsigned)j->in_params.timeout_s, &fd);
        if (r < 0)
                goto fail;
        t_setup = time_monotonic_usec();
        job_register_fd(j, fd);
        socket_set_io_timeout(fd, timeout_s);
        r = read_hello(&in, fd, &idx, &n, &ram_size, &config);
        if (r < 0)
                goto fail;
        if (idx != 0) {
                set_error(&in, "the first connection must be connection 0");
                r = -EBADMSG;
                goto fail;
        }
        in.n_conns = n;
        in.fds[0] = fd;
        for (unsigned k = 1; k < n; k++) {
                unsigned ki, kn;
                uint64_t kram;
                r = accept_one(j, timeout_s, &fd);
                if (r < 0)
                        goto fail;
                job_register_fd(j, fd);
                socket_set_io_timeout(fd, timeout_s);
                r = read_hello(&in, fd, &ki, &kn, &kram, NULL);
                if (r < 0)
                        goto fail;
                if (kn != n || ki == 0 || in.fds[ki] >= 0 || kram != ram_size) {
                        set_error(&in, "connection %u of %u does not belong to this migration", ki, kn);
                        r = -EBADMSG;
                        goto fail;
                }
                in.fds[ki] = fd;
        }

        r = setup_vm(&in, config, ram_size);
        if (r < 0)
                goto fail;
        r = mig_send_msg(in.fds[0], MIG_HELLO_ACK, 0, 0, NULL, 0);
        if (r < 0)
                goto fail;
        s->setup_us = time_monotonic_usec() - t_setup;
        s->state = JOB_STATE_ACTIVE;
        s->phase = JOB_PHASE_PRECOPY;
        s->memory_total = in.ram_size;
        s->bytes_total = in.ram_size;
        publish(&in);

        for (unsigned k = 1; k < n; k++) {
                in.rx[k] = (Receiver){ .in = &in, .idx = k, .fd = in.fds[k] };
                r = pthread_create(&in.rx[k].thread, NULL, receiver_thread, &in.rx[k]);
                if (r != 0) {
                        r = -r;
                        goto fail;
                }
                in.rx[k].started = true;
        }

        r = run(&in);
        if (r < 0)
                goto fail;
        job_close_fds(j);
        job_finish(j, JOB_STATE_COMPLETED, NULL, NULL);
        goto out;

fail:
        if (atomic_load(&j->committed)) {
                /* Resumed here: this copy is the guest, whatever happened to the socket. */
                job_close_fds(j);
                join_receivers(&in);
                job_finish(j, JOB_STATE_COMPLETED, NULL, NULL);
                goto out;
        }
        if (in.fds[0] >= 0 && r != -ECONNABORTED && r != -ECONNRESET) {
                const char *m = in.error[0] ? in.error : strerror(-r);
                (void)mig_send_msg(in.fds[0], MIG_ERROR, (uint64_t)-r, 0, m, (uint32_t)strlen(m));
        }
        job_close_fds(j); /* ends the receivers' reads */
        join_receivers(&in);
        stop_prefault(&in);
        /* Drop the half-built VM: it never ran here. */
        if (vm_get_state(j->vm) == VM_STATE_INCOMING)
                (void)vm_stop(j->vm);
        if (job_cancelled(j))
                job_finish(j, JOB_STATE_CANCELLED, "Cancelled", "migration cancelled");
        else if (in.error[0])
                job_finish(j, JOB_STATE_FAILED, "MigrationFailed", "%s", in.error);
        else
                job_finish(j, JOB_STATE_FAILED, "MigrationFailed", "%s",
                           r == -ECONNRESET ? "the source closed the connection before the commit"
                           : r == -ETIMEDOUT ? "timed out waiting for the source"
                                             : strerror(-r));
out:
        stop_prefault(&in);
        free(in.map);
        pthread_mutex_destroy(&in.error_lock);
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
