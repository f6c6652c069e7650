/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The source side: setup, precopy passes driven by a dirty-log harvester, switchover with
 * commit and acknowledgement (docs/migration.md). */
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>

#include "config.h"
#include "job-internal.h"
#include "socket-util.h"
#include "log.h"
#include "residency.h"
#include "transport.h"

#define PAGE_SIZE 4096
#define BITS_PER_WORD (8 * sizeof(unsigned long))
#define HARVEST_INTERVAL_NS (30 * 1000 * 1000)
#define CONN_CHUNK_PAGES 512 /* 2 MiB: a page always travels on the same connection */
#define PUBLISH_INTERVAL_US (100 * 1000)
#define BANDWIDTH_SAMPLE_MIN (UINT64_C(1) << 20) /* a pass this large measures the link */
#define STATE_SIZE_ESTIMATE (32 * 1024) /* bytes of vCPU/device state, about */
#define REPLY_TIMEOUT_S 60
#define STALL_US (5 * USEC_PER_SEC)
#define PASS_MIN_US (HARVEST_INTERVAL_NS / 1000) /* a pass never comes sooner than new dirty pages */
#define PASS_MIN_BLOCKED_US USEC_PER_SEC /* ... and once a second while the fixed cost blocks */
#define ERROR_SEND_TIMEOUT_US (200 * 1000) /* the best-effort ERROR to a failing destination */

typedef struct Outgoing {
        MigrationJob *j;
        uint8_t *ram;
        uint64_t ram_size, n_pages, n_words;
        int fds[MIGRATION_MAX_CONNECTIONS];
        unsigned n_conns;
        Sender sender;
        bool sender_ready;

        unsigned long *pending; /* to send in this pass (job thread only) */
        unsigned long *dirty;   /* found by the harvester, guarded by dirty_lock */
        pthread_mutex_t dirty_lock;
        _Atomic uint64_t dirty_count;     /* pages in 'dirty' */
        _Atomic uint64_t dirty_rate;      /* pages/s, smoothed */
        _Atomic uint64_t harvest_us;      /* how long a harvest takes: a decaying peak */
        pthread_t harvester;
        bool harvester_started;
        int harvest_stop_fd;
        _Atomic int harvest_error;

        uint64_t pending_count;
        uint64_t bandwidth; /* bytes/s, smoothed over passes */
        uint64_t state_cost_us; /* the switchover's fixed steps, measured by the rehearsal */
        uint64_t last_publish_us, last_progress_us, last_progress_bytes;
        uint64_t bytes_window_start_us, bytes_window_start;
        uint64_t rehearsal_rtt_us; /* the network's share of the rehearsal's round trip */
        uint64_t deadline_us;      /* the switchover's, 0 before it */
        const char *step;          /* what the switchover waits for, for the error */
        bool timeout_s_passed;
        bool paused_by_us;
} Outgoing;

static void fail_errno(MigrationJob *j, int r, const char *what) {
        if (job_cancelled(j))
                job_finish(j, JOB_STATE_CANCELLED, "Cancelled", "migration cancelled");
        else if (r == -EPIPE || r == -ECONNRESET || r == -EIO)
                job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                           "%s: the connection to the destination was lost (%s)", what, strerror(-r));
        else
                job_finish(j, JOB_STATE_FAILED, "MigrationFailed", "%s: %s", what, strerror(-r));
}

/* --- the harvester --- */

static void *harvester_thread(void *p) {
        Outgoing *o = p;
        struct itimerspec its = {
                .it_interval.tv_nsec = HARVEST_INTERVAL_NS,
                .it_value.tv_nsec = HARVEST_INTERVAL_NS,
        };
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        uint64_t last = time_monotonic_usec();

        (void)pthread_setname_np(pthread_self(), "dirty-harvest");
        if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0) {
                atomic_store(&o->harvest_error, -EIO);
                goto out;
        }
        for (;;) {
                struct pollfd fds[2] = {
                        { .fd = o->harvest_stop_fd, .events = POLLIN },
                        { .fd = tfd, .events = POLLIN },
                };
                uint64_t n, now;
                int64_t found;

                if (poll(fds, 2, -1) < 0 && errno != EINTR)
                        break;
                if (fds[0].revents)
                        break;
                if (!(fds[1].revents & POLLIN))
                        continue;
                (void)!read(tfd, &n, sizeof n);

                uint64_t fresh = 0, t = time_monotonic_usec();
                pthread_mutex_lock(&o->dirty_lock);
                found = vm_dirty_log_fetch(o->j->vm, o->dirty, &fresh);
                atomic_fetch_add(&o->dirty_count, fresh);
                pthread_mutex_unlock(&o->dirty_lock);
                if (found < 0) {
                        atomic_store(&o->harvest_error, (int)found);
                        break;
                }
                now = time_monotonic_usec();
                /* The final harvest runs with the guest paused: the estimate counts the
                 * slowest recent one (a peak that decays by a tenth per harvest). */
                atomic_store(&o->harvest_us, MAX(now - t, atomic_load(&o->harvest_us) * 9 / 10));
                if (now > last) {
                        uint64_t rate = (uint64_t)found * USEC_PER_SEC / (now - last);
                        uint64_t old = atomic_load(&o->dirty_rate);
                        /* Smoothed over about ten harvests. */
                        atomic_store(&o->dirty_rate, old ? (old * 9 + rate) / 10 : rate);
                }
                last = now;
        }
out:
        safe_close(tfd);
        return NULL;
}

static void stop_harvester(Outgoing *o) {
        uint64_t one = 1;

        if (!o->harvester_started)
                return;
        (void)!write(o->harvest_stop_fd, &one, sizeof one);
        pthread_join(o->harvester, NULL);
        o->harvester_started = false;
}

/* Moves everything the harvester found into 'pending' (after one more fetch). */
static int collect_dirty(Outgoing *o) {
        int64_t found;

        pthread_mutex_lock(&o->dirty_lock);
        found = vm_dirty_log_fetch(o->j->vm, o->dirty, NULL);
        if (found >= 0) {
                for (uint64_t w = 0; w < o->n_words; w++) {
                        o->pending_count += (uint64_t)__builtin_popcountl(o->dirty[w] & ~o->pending[w]);
                        o->pending[w] |= o->dirty[w];
                        o->dirty[w] = 0;
                }
                atomic_store(&o->dirty_count, 0);
        }
        pthread_mutex_unlock(&o->dirty_lock);
        return found < 0 ? (int)found : 0;
}

/* --- statistics --- */

static void update_stats(Outgoing *o, bool force) {
        MigrationJob *j = o->j;
        MigrationStats *s = &j->stats;
        uint64_t now = time_monotonic_usec(), sent = o->sender_ready ? o->sender.bytes_completed : 0;
        uint64_t remaining_pages = o->pending_count + atomic_load(&o->dirty_count);

        if (!force && now - o->last_publish_us < PUBLISH_INTERVAL_US)
                return;
        o->last_publish_us = now;

        s->elapsed_us = time_realtime_usec() - s->start_time_us;
        s->memory_total = o->ram_size;
        s->memory_processed = sent;
        s->memory_remaining = MIN(remaining_pages * PAGE_SIZE, o->ram_size);
        s->bytes_processed = sent;
        s->bytes_remaining = s->memory_remaining + (s->phase == JOB_PHASE_DONE ? 0 : STATE_SIZE_ESTIMATE);
        s->bytes_total = s->bytes_processed + s->bytes_remaining;
        s->dirty_rate = atomic_load(&o->dirty_rate);
        s->throttle_percent = vm_get_throttle(j->vm);
        s->max_downtime_us = atomic_load(&j->max_downtime_us);
        s->max_bandwidth = atomic_load(&j->max_bandwidth);
        s->connections = o->n_conns;

        /* Rate over the last second or so. */
        if (now - o->bytes_window_start_us >= USEC_PER_SEC / 2) {
                uint64_t dt = now - o->bytes_window_start_us;
                uint64_t rate = (sent - o->bytes_window_start) * USEC_PER_SEC / (dt ? dt : 1);
                s->rate = s->rate ? (s->rate + rate) / 2 : rate;
                o->bytes_window_start_us = now;
                o->bytes_window_start = sent;
        }
        if (s->rate > 0 && s->memory_remaining > 0)
                s->expected_end_us = time_realtime_usec() + s->memory_remaining * USEC_PER_SEC / s->rate;
        if (sent != o->last_progress_bytes) {
                o->last_progress_bytes = sent;
                o->last_progress_us = now;
        }
        atomic_store(&j->progress_us, o->last_progress_us);
        s->stalled = s->state == JOB_STATE_ACTIVE && now - o->last_progress_us > STALL_US;
        job_publish(j);
        job_post(j, JOB_EVENT_PROGRESS);
}

/* --- sending pages --- */

static bool page_is_zero(const uint8_t *p) {
        const uint64_t *w = (const uint64_t *)p;
        uint64_t acc = 0;

        for (unsigned i = 0; i < PAGE_SIZE / 8; i += 8) {
                acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
                if (acc)
                        return false;
        }
        return true;
}

/* Token bucket on the bytes the kernel took: wait until we are back under the limit. */
static int pace(Outgoing *o, uint64_t pass_start_us, uint64_t pass_start_bytes) {
        uint64_t bw = atomic_load(&o->j->max_bandwidth);
        uint64_t sent, due_us, now;

        if (bw == 0)
                return 0;
        sent = o->sender.bytes_completed - pass_start_bytes;
        due_us = pass_start_us + sent * USEC_PER_SEC / bw;
        now = time_monotonic_usec();
        if (due_us > now) {
                int r = sender_flush(&o->sender);
                if (r < 0)
                        return r;
                struct timespec ts = { .tv_sec = (time_t)((due_us - now) / USEC_PER_SEC),
                                       .tv_nsec = (long)((due_us - now) % USEC_PER_SEC * 1000) };
                while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
                        ;
        }
        return 0;
}

static int check_limits(Outgoing *o) {
        MigrationJob *j = o->j;
        int r = atomic_load(&o->harvest_error);

        if (job_cancelled(j))
                return -ECANCELED;
        if (r < 0)
                return r;
        if (vm_has_guest_event(j->vm))
                return -EOWNERDEAD; /* the guest crashed, powered off or reset */
        if (j->params.timeout_s && j->stats.phase == JOB_PHASE_PRECOPY &&
            time_realtime_usec() - j->stats.start_time_us > j->params.timeout_s * USEC_PER_SEC) {
                o->timeout_s_passed = true;
                return -ETIMEDOUT;
        }
        return 0;
}

/* Called by the sender at least every SENDER_IDLE_US while it waits for the kernel to
 * take data (a peer that reads slowly or not at all): statistics stay current, and cancel,
 * timeout_s and a guest event end the precopy even then. */
static void update_stats(Outgoing *o, bool force);
static int sender_idle(void *userdata) {
        Outgoing *o = userdata;

        update_stats(o, false);
        if (o->j->stats.phase == JOB_PHASE_PRECOPY)
                return check_limits(o);
        return job_cancelled(o->j) && !atomic_load(&o->j->committed) ? -ECANCELED : 0;
}

/* Sends the pages of 'run' (all within one connection chunk), zero pages as markers. */
static int send_run(Outgoing *o, uint64_t first, uint64_t n) {
        unsigned conn = (unsigned)((first / CONN_CHUNK_PAGES) % o->n_conns);
        MigrationStats *s = &o->j->stats;
        uint64_t i = 0;
        int r;

        while (i < n) {
                bool zero = page_is_zero(o->ram + (first + i) * PAGE_SIZE);
                uint64_t k = 1;
                while (i + k < n && k < MIG_MAX_PAGES_PER_MSG &&
                       page_is_zero(o->ram + (first + i + k) * PAGE_SIZE) == zero)
                        k++;
                uint64_t off = (first + i) * PAGE_SIZE;
                if (zero) {
                        r = sender_queue(&o->sender, conn, MIG_ZERO, off, k, 0, 0);
                        s->zero_pages += k;
                } else {
                        r = sender_queue(&o->sender, conn, MIG_PAGES, off, k, off, (uint32_t)(k * PAGE_SIZE));
                        s->normal_pages += k;
                }
                if (r < 0)
                        return r;
                i += k;
        }
        return 0;
}

/* One pass over 'pending': every set bit is sent and cleared. */
static int send_pending(Outgoing *o, bool precopy) {
        uint64_t pass_start_us = time_monotonic_usec(), pass_start_bytes = o->sender.bytes_completed;
        int r;

        for (uint64_t w = 0; w < o->n_words; w++) {
                unsigned long bits = o->pending[w];
                if (!bits)
                        continue;
                o->pending[w] = 0;
                while (bits) {
                        unsigned b = (unsigned)__builtin_ctzl(bits);
                        unsigned e = b;
                        /* A run of set bits, cut at connection chunk boundaries. */
                        while (e + 1 < BITS_PER_WORD && (bits >> (e + 1) & 1) &&
                               ((w * BITS_PER_WORD + e + 1) % CONN_CHUNK_PAGES) != 0)
                                e++;
                        uint64_t first = w * BITS_PER_WORD + b, n = e - b + 1;
                        bits &= ~((e + 1 == BITS_PER_WORD ? ~0UL : ((1UL << (e + 1)) - 1)) & ~((1UL << b) - 1));
                        if (first >= o->n_pages)
                                break;
                        n = MIN(n, o->n_pages - first);
                        r = send_run(o, first, n);
                        if (r < 0)
                                return r;
                        o->pending_count -= MIN(o->pending_count, n);
                }
                if (precopy) {
                        r = check_limits(o);
                        if (r < 0)
                                return r;
                        r = pace(o, pass_start_us, pass_start_bytes);
                        if (r < 0)
                                return r;
                }
                update_stats(o, false);
        }
        return sender_flush(&o->sender);
}

/* --- setup --- */

/* Reads the destination's reply on connection 0: only 'want' (or ERROR) is valid here. A
 * wrong, unknown or malformed reply fails the job with a message naming it (but for the
 * acknowledgement, whose failure the caller reports with the commit's consequences). */
static int wait_reply(MigrationJob *j, int fd, uint32_t want, MigHeader *ret, const char *what) {
        static const char *const names[_MIG_MAX] = {
                [MIG_HELLO_ACK] = "HELLO_ACK", [MIG_READY] = "READY",           [MIG_ACK] = "ACK",
                [MIG_ERROR] = "ERROR",         [MIG_TRIAL_DONE] = "TRIAL_DONE",
        };
        const char *w = names[want];
        MigHeader h;
        int r;

        r = mig_recv_header(fd, &h);
        if (r < 0)
                return r;
        if (h.type == MIG_ERROR && h.len <= MIG_MAX_ERROR_LEN) {
                uint8_t raw[MIG_MAX_ERROR_LEN];
                char msg[MIG_MAX_ERROR_LEN + 1] = "";
                if (mig_recv_all(fd, raw, h.len) == 0) {
                        for (uint32_t i = 0; i < h.len; i++)
                                msg[i] = raw[i] >= 0x20 && raw[i] < 0x7f ? (char)raw[i] : '?';
                        msg[h.len] = 0;
                }
                job_finish(j, JOB_STATE_FAILED, "MigrationFailed", "destination refused %s: %s", what, msg);
                return -EREMOTEIO;
        }
        if (h.type != want || mig_header_validate(&h, UINT64_MAX) < 0) {
                if (want != MIG_ACK) {
                        const char *got = h.type < _MIG_MAX ? names[h.type] : NULL;
                        if (h.type == want || (h.type == MIG_ERROR))
                                job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                                           "malformed %s from the destination (payload of %" PRIu32 " bytes)",
                                           got, h.len);
                        else if (got)
                                job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                                           "the destination sent %s while the source waited for %s", got, w);
                        else
                                job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                                           "the destination sent message type %" PRIu32
                                           " (not a reply) while the source waited for %s",
                                           h.type, w);
                }
                return -EPROTO;
        }
        if (ret)
                *ret = h;
        return 0;
}

/* Before each blocking step of the switchover: the sockets' timeouts (and TCP's: unacked
 * data fails the connection) are what is left of its deadline. -ETIME once it passed. */
static int arm_deadline(Outgoing *o, const char *step) {
        uint64_t now = time_monotonic_usec();

        o->step = step;
        if (now >= o->deadline_us)
                return -ETIME;
        uint64_t left = o->deadline_us - now;
        unsigned ms = (unsigned)MAX(DIV_ROUND_UP(left, USEC_PER_MSEC), UINT64_C(1));
        for (unsigned i = 0; i < o->n_conns; i++)
                (void)setsockopt(o->fds[i], IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms); /* fails on unix: fine */
        socket_set_io_timeout_usec(o->fds[0], left);
        return 0;
}

/* A blocking send or receive of the switchover that timed out (SO_SNDTIMEO/SO_RCVTIMEO
 * or TCP_USER_TIMEOUT, all set by arm_deadline() to the deadline) missed the deadline. */
static int deadline_error(int r) {
        return r == -EAGAIN || r == -EWOULDBLOCK || r == -ETIMEDOUT ? -ETIME : r;
}

/* The state rehearsal: saves the vCPU/device state while the guest runs (its vCPUs parked
 * for the save alone) and has the destination load it as a trial. A state the destination
 * cannot take fails the migration here, before any downtime, and the timings measure
 * what the switchover costs besides RAM: parking the vCPUs, saving, the state's round
 * trip with the destination's restore (state -> ready), and one more round trip
 * (commit -> acknowledgement). */
static int rehearse_state(Outgoing *o) {
        MigrationJob *j = o->j;
        _cleanup_free_ uint8_t *state = NULL;
        size_t size;
        uint64_t pause_us, vcpu_us, device_us, t;
        MigHeader h;
        int r;

        r = vm_save_state_live(j->vm, &state, &size, &pause_us, &vcpu_us, &device_us);
        if (r < 0)
                return r;
        t = time_monotonic_usec();
        r = mig_send_msg(o->fds[0], MIG_STATE_TRIAL, 0, 0, state, (uint32_t)size);
        if (r < 0)
                return r;
        r = wait_reply(j, o->fds[0], MIG_TRIAL_DONE, &h, "the state rehearsal");
        if (r < 0)
                return r;
        uint64_t round_trip = time_monotonic_usec() - t;
        /* The destination's extra work (restoring its own state after the trial) is not
         * part of the real switchover: only its apply time is. */
        uint64_t network = round_trip > h.b ? round_trip - h.b : 0;
        o->rehearsal_rtt_us = network;
        o->state_cost_us = pause_us + vcpu_us + device_us + (network + h.a) + network;
        j->stats.state_cost_us = o->state_cost_us;
        log_info("migration: state rehearsal: %zu bytes, vCPUs parked in %" PRIu64 " us, saved in %" PRIu64
                 " us, destination applied it in %" PRIu64 " us, network round trip %" PRIu64
                 " us: state cost %" PRIu64 " us",
                 size, pause_us, vcpu_us + device_us, h.a, network, o->state_cost_us);
        return 0;
}

/* Tells the destination which 2 MiB chunks the first pass sends (those with a touched
 * page), before any page, so it can fault them in ahead of the stream. */
static int send_ram_map(Outgoing *o, const unsigned char *resident) {
        uint64_t chunk_pages = (UINT64_C(1) << MIG_MAP_CHUNK_SHIFT) / PAGE_SIZE;
        uint64_t chunks = DIV_ROUND_UP(o->n_pages, chunk_pages);
        _cleanup_free_ uint8_t *map = calloc(DIV_ROUND_UP(chunks, 8), 1);

        if (!map)
                return -ENOMEM;
        for (uint64_t p = 0; p < o->n_pages; p++)
                if (resident[p] & 1) {
                        uint64_t c = p / chunk_pages;
                        map[c / 8] |= (uint8_t)(1u << (c % 8));
                        p = (c + 1) * chunk_pages - 1; /* on to the next chunk */
                }
        return mig_send_msg(o->fds[0], MIG_RAM_MAP, MIG_MAP_CHUNK_SHIFT, chunks, map,
                            (uint32_t)DIV_ROUND_UP(chunks, 8));
}

static int setup(Outgoing *o) {
        MigrationJob *j = o->j;
        const VmMemoryRegion *regions;
        unsigned n_regions;
        _cleanup_free_ char *config = NULL;
        _cleanup_free_ uint8_t *payload = NULL;
        size_t config_len;
        int r;

        r = vm_get_ram(j->vm, &o->ram, &o->ram_size, &regions, &n_regions);
        if (r < 0)
                return r;
        o->n_pages = o->ram_size / PAGE_SIZE;
        o->n_words = DIV_ROUND_UP(o->n_pages, BITS_PER_WORD);

        config = vm_config_to_json(vm_get_config(j->vm));
        if (!config)
                return -ENOMEM;
        config_len = strlen(config);
        if (config_len > MIG_MAX_CONFIG_LEN)
                return -E2BIG;
        payload = malloc(8 + config_len);
        if (!payload)
                return -ENOMEM;
        memcpy(payload, &o->ram_size, 8);
        memcpy(payload + 8, config, config_len);

        o->n_conns = j->params.connections;
        for (unsigned i = 0; i < o->n_conns; i++) {
                r = migration_uri_connect(&j->uri, &o->fds[i]);
                if (r == -EADDRNOTAVAIL && !j->uri.is_unix && i == 0) {
                        job_finish(j, JOB_STATE_FAILED, "MigrationFailed", "cannot resolve the host of \"%s\"",
                                   j->uri.text);
                        return r;
                }
                if (r < 0)
                        return r;
                job_register_fd(j, o->fds[i]);
                socket_set_io_timeout(o->fds[i], REPLY_TIMEOUT_S);
                r = mig_send_msg(o->fds[i], MIG_HELLO, MIG_MAGIC,
                                 MIG_VERSION | (uint64_t)i << 32 | (uint64_t)o->n_conns << 48, payload,
                                 (uint32_t)(i == 0 ? 8 + config_len : 8));
                if (r < 0)
                        return r;
        }
        r = wait_reply(j, o->fds[0], MIG_HELLO_ACK, NULL, "the VM");
        if (r < 0)
                return r;
        r = rehearse_state(o);
        if (r < 0)
                return r;

        o->pending = calloc(o->n_words, sizeof(unsigned long));
        o->dirty = calloc(o->n_words, sizeof(unsigned long));
        if (!o->pending || !o->dirty)
                return -ENOMEM;

        /* Dirty logging first, then the residency snapshot: a page touched in between is
         * both touched and dirty, never neither. */
        r = vm_dirty_log_start(j->vm);
        if (r < 0)
                return r;
        _cleanup_free_ unsigned char *vec = malloc(o->n_pages);
        if (!vec)
                return -ENOMEM;
        /* Present or swapped out (pagemap), not mincore(): a page swapped out and gone
         * from the swap cache holds data too. */
        int64_t touched = ram_residency(o->ram, o->ram_size, vec);
        if (touched < 0)
                return (int)touched;
        for (uint64_t p = 0; p < o->n_pages; p++)
                if (vec[p] & 1) {
                        o->pending[p / BITS_PER_WORD] |= 1UL << (p % BITS_PER_WORD);
                        o->pending_count++;
                }
        r = send_ram_map(o, vec);
        if (r < 0)
                return r;

        /* After the residency snapshot: a zero-copy slot is pinned (faulted in) when registered. */
        bool zc = j->params.zerocopy == ZEROCOPY_ON ||
                  (j->params.zerocopy == ZEROCOPY_AUTO && !migration_uri_is_local(&j->uri) &&
                   sender_zerocopy_supported());
        r = sender_init(&o->sender, o->fds, o->n_conns, o->ram, o->ram_size, zc);
        o->sender_ready = true; /* sender_done() copes with a half-initialized sender */
        if (r < 0)
                return r;
        o->sender.idle = sender_idle;
        o->sender.idle_userdata = o;
        j->stats.zerocopy = zc;

        o->harvest_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (o->harvest_stop_fd < 0)
                return negative_errno();
        r = pthread_create(&o->harvester, NULL, harvester_thread, o);
        if (r != 0)
                return -r;
        o->harvester_started = true;
        return 0;
}

/* --- the switchover --- */

static int switchover(Outgoing *o) {
        MigrationJob *j = o->j;
        MigrationStats *s = &j->stats;
        uint64_t t0, t1, t2, t3, t4, t5, vcpu_us = 0, device_us = 0;
        _cleanup_free_ uint8_t *state = NULL;
        size_t state_size;
        MigHeader h;
        int r;

        s->state = JOB_STATE_COMPLETING;
        s->phase = JOB_PHASE_DOWNTIME;
        uint64_t timeout_ms = j->params.switchover_timeout_ms
                                      ? j->params.switchover_timeout_ms
                                      : 2 * atomic_load(&j->max_downtime_us) / USEC_PER_MSEC +
                                                MIGRATION_SWITCHOVER_TIMEOUT_BASE_MS;
        s->switchover_timeout_us = timeout_ms * USEC_PER_MSEC;
        update_stats(o, true);

        /* Every wait from the pause on is bounded by one deadline (docs/migration.md). */
        t0 = time_monotonic_usec();
        o->deadline_us = t0 + s->switchover_timeout_us;
        o->sender.deadline_us = o->deadline_us;
        o->step = "pausing the guest";
        if (vm_get_state(j->vm) == VM_STATE_RUNNING) {
                r = vm_pause(j->vm);
                if (r < 0)
                        return r;
                o->paused_by_us = true;
        }
        stop_harvester(o);
        r = collect_dirty(o);
        if (r < 0)
                return r;
        t1 = time_monotonic_usec();

        r = arm_deadline(o, "sending the last dirty pages");
        if (r < 0)
                return r;
        r = send_pending(o, false);
        if (r < 0)
                return r;
        t2 = time_monotonic_usec();

        if (vm_has_guest_event(j->vm))
                return -EOWNERDEAD;
        r = vm_save_state_timed(j->vm, &state, &state_size, &vcpu_us, &device_us);
        if (r < 0)
                return r;
        t3 = time_monotonic_usec();

        for (unsigned i = 1; i < o->n_conns; i++) {
                r = sender_queue(&o->sender, i, MIG_FLUSH, 0, 0, 0, 0);
                if (r < 0)
                        return r;
        }
        r = sender_flush(&o->sender);
        if (r < 0)
                return r;
        r = arm_deadline(o, "sending the vCPU/device state");
        if (r < 0)
                return r;
        r = mig_send_msg(o->fds[0], MIG_STATE, 0, 0, state, (uint32_t)state_size);
        if (r >= 0)
                r = mig_send_msg(o->fds[0], MIG_COMPLETE, 0, 0, NULL, 0);
        if (r < 0)
                return deadline_error(r);
        r = arm_deadline(o, "the destination's READY (it restores the state)");
        if (r < 0)
                return r;
        r = wait_reply(j, o->fds[0], MIG_READY, &h, "the state");
        if (r < 0)
                return deadline_error(r);
        t4 = time_monotonic_usec();
        uint64_t dst_restore_us = h.a + h.b;

        /* The commit must leave time for its acknowledgement within the deadline, or a
         * slow but healthy link ends in migration-unknown: with too little left, fail now,
         * while the source can still resume. */
        uint64_t reserve = MAX(2 * o->rehearsal_rtt_us, s->switchover_timeout_us / 10);
        if (t4 + reserve > o->deadline_us) {
                o->step = "leaving time for the commit's acknowledgement";
                return -ETIME;
        }

        /* The point of no return: from here the source never resumes its copy. */
        r = job_commit(j);
        if (r < 0)
                return r;
        r = arm_deadline(o, "the acknowledgement of the commit");
        if (r >= 0)
                r = mig_send_msg(o->fds[0], MIG_COMMIT, 0, 0, NULL, 0);
        if (r >= 0)
                r = wait_reply(j, o->fds[0], MIG_ACK, &h, "the commit");
        if (r < 0)
                return deadline_error(r); /* the caller sees 'committed' and leaves the guest paused */
        t5 = time_monotonic_usec();

        uint64_t *b = s->downtime_breakdown_us;
        b[DOWNTIME_FINAL_DIRTY_SYNC] = t1 - t0;
        b[DOWNTIME_FINAL_MEMORY] = t2 - t1;
        b[DOWNTIME_VCPU_STATE] = vcpu_us;
        b[DOWNTIME_DEVICE_STATE] = device_us;
        b[DOWNTIME_DESTINATION_RESTORE] = dst_restore_us;
        b[DOWNTIME_SEND_STATE] = (t4 - t3) > dst_restore_us ? (t4 - t3) - dst_restore_us : 0;
        b[DOWNTIME_DESTINATION_RESUME] = h.a;
        b[DOWNTIME_ACK] = (t5 - t4) > h.a ? (t5 - t4) - h.a : 0;
        s->downtime_us = t5 - t0;
        s->memory_remaining = 0;
        s->bytes_remaining = 0;
        s->bytes_processed = o->sender.bytes_completed + state_size;
        s->bytes_total = s->bytes_processed;
        s->memory_processed = o->sender.bytes_completed;
        return 0;
}

/* --- the job --- */

void *outgoing_thread(void *p) {
        MigrationJob *j = p;
        Outgoing o = { .j = j, .harvest_stop_fd = -EBADF };
        MigrationStats *s = &j->stats;
        uint64_t t_setup = time_monotonic_usec();
        unsigned throttle = 0;
        int r;

        (void)pthread_setname_np(pthread_self(), "migrate-out");
        pthread_mutex_init(&o.dirty_lock, NULL);
        for (unsigned i = 0; i < MIGRATION_MAX_CONNECTIONS; i++)
                o.fds[i] = -EBADF;

        r = setup(&o);
        if (r < 0) {
                if (s->state != JOB_STATE_FAILED)
                        fail_errno(j, r, "setup");
                goto out;
        }
        s->setup_us = time_monotonic_usec() - t_setup;
        s->state = JOB_STATE_ACTIVE;
        s->phase = JOB_PHASE_PRECOPY;
        o.last_progress_us = time_monotonic_usec();
        o.bytes_window_start_us = time_monotonic_usec();
        update_stats(&o, true);

        for (uint32_t iter = 0;; iter++) {
                uint64_t t_pass = time_monotonic_usec(), bytes0 = o.sender.bytes_completed;

                r = send_pending(&o, true);
                if (r < 0)
                        goto fail;
                r = sender_queue(&o.sender, 0, MIG_ITER_END, iter, 0, 0, 0);
                if (r < 0)
                        goto fail;
                r = collect_dirty(&o);
                if (r < 0)
                        goto fail;

                uint64_t dt = time_monotonic_usec() - t_pass, bytes = o.sender.bytes_completed - bytes0;
                uint64_t pass_bw = dt > 0 ? bytes * USEC_PER_SEC / dt : 0;
                if (pass_bw > 0)
                        o.bandwidth = o.bandwidth ? (o.bandwidth + pass_bw) / 2 : pass_bw;
                /* The estimate takes the slower of the smoothed rate and this pass's (when
                 * the pass was large enough to measure): a last pass slower than the earlier
                 * ones must not make it promise a downtime it cannot keep. */
                uint64_t bw = bytes >= BANDWIDTH_SAMPLE_MIN && pass_bw > 0 ? MIN(o.bandwidth, pass_bw)
                                                                           : o.bandwidth;
                bw = MAX(bw, UINT64_C(1));
                uint64_t max_bw = atomic_load(&j->max_bandwidth);
                if (max_bw)
                        bw = MIN(bw, max_bw);
                /* What the final pass would send: this pass's leftovers and whatever the
                 * harvester has found since. */
                uint64_t remaining = (o.pending_count + atomic_load(&o.dirty_count)) * PAGE_SIZE;
                s->expected_downtime_us = remaining * USEC_PER_SEC / bw + atomic_load(&o.harvest_us) +
                                          o.state_cost_us;
                s->iteration = iter + 1;
                update_stats(&o, true);

                MigrationIteration it = {
                        .index = iter,
                        .duration_us = dt,
                        .bytes = bytes,
                        .dirty_pages = o.pending_count,
                        .dirty_rate = atomic_load(&o.dirty_rate),
                        .bandwidth = dt ? bytes * USEC_PER_SEC / dt : 0,
                        .throttle_percent = throttle,
                        .expected_downtime_us = s->expected_downtime_us,
                };
                job_add_iteration(j, &it);

                uint64_t max_downtime = atomic_load(&j->max_downtime_us);
                if (s->expected_downtime_us <= max_downtime) {
                        s->convergence_blocker[0] = 0;
                        break;
                }

                /* The fixed part alone over the limit: no pass and no throttle can help. */
                uint64_t harvest = atomic_load(&o.harvest_us);
                bool blocked = harvest + o.state_cost_us > max_downtime;
                if (blocked)
                        snprintf(s->convergence_blocker, sizeof s->convergence_blocker,
                                 "fixed cost alone (state %" PRIu64 " us incl. round trips %" PRIu64
                                 " us, final harvest %" PRIu64 " us) exceeds max_downtime_ms=%" PRIu64,
                                 o.state_cost_us, 2 * o.rehearsal_rtt_us, harvest, max_downtime / USEC_PER_MSEC);
                else
                        s->convergence_blocker[0] = 0;

                /* Auto-converge: after the first pass, while the guest dirties faster than
                 * half of what we send, slow its vCPUs in growing steps. */
                if (j->params.auto_converge && iter >= 1 && !blocked &&
                    it.dirty_rate * PAGE_SIZE > bw / 2 && throttle < 99) {
                        throttle = throttle == 0 ? 20 : MIN(throttle + 10, 99u);
                        r = vm_set_throttle(j->vm, throttle);
                        if (r < 0)
                                goto fail;
                }
                r = check_limits(&o);
                if (r < 0)
                        goto fail;

                /* Paced: a pass comes no sooner than the harvester can have found new dirty
                 * pages, and only once a second while the fixed cost blocks convergence (a
                 * new max_downtime_ms is seen within that second). */
                uint64_t due = t_pass + (blocked ? PASS_MIN_BLOCKED_US : PASS_MIN_US);
                for (uint64_t now = time_monotonic_usec(); now < due; now = time_monotonic_usec()) {
                        uint64_t nap = MIN(due - now, UINT64_C(100000));
                        struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)(nap * 1000) };
                        (void)clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
                        r = check_limits(&o);
                        if (r < 0)
                                goto fail;
                        update_stats(&o, false);
                        if (atomic_load(&j->max_downtime_us) != max_downtime)
                                break;
                }
        }

        r = switchover(&o);
        if (r < 0)
                goto fail;
        (void)vm_set_throttle(j->vm, 0);
        (void)vm_dirty_log_stop(j->vm);
        sender_done(&o.sender);
        o.sender_ready = false;
        (void)vm_set_migration_state(j->vm, VM_STATE_MIGRATED);
        job_finish(j, JOB_STATE_COMPLETED, NULL, NULL);
        goto out;

fail:
        stop_harvester(&o);
        /* Whether it resumes here or waits for the operator, the guest runs on neither
         * throttled nor logged. */
        (void)vm_set_throttle(j->vm, 0);
        (void)vm_dirty_log_stop(j->vm);
        if (atomic_load(&j->committed)) {
                /* The destination may be running the guest: never resume here. */
                (void)vm_set_migration_state(j->vm, VM_STATE_MIGRATION_UNKNOWN);
                if (s->state != JOB_STATE_FAILED)
                        job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                                   "no acknowledgement after the commit (%s): the guest may run on the "
                                   "destination; it stays paused here in state migration-unknown",
                                   r == -ETIME ? "switchover deadline passed" : strerror(-r));
        } else {
                /* Resume ours first (the destination never resumes before COMMIT), then tell
                 * the destination to drop its copy, best effort and briefly. */
                const char *msg = job_cancelled(j) ? "cancelled by the source" : "source failed";
                if (o.paused_by_us)
                        (void)vm_resume(j->vm);
                uint64_t resumed_us = time_monotonic_usec();
                if (o.fds[0] >= 0 && !job_cancelled(j)) {
                        socket_set_io_timeout_usec(o.fds[0], ERROR_SEND_TIMEOUT_US);
                        (void)mig_send_msg(o.fds[0], MIG_ERROR, (uint64_t)-r, 0, msg, (uint32_t)strlen(msg));
                }
                if (s->state != JOB_STATE_FAILED && s->state != JOB_STATE_CANCELLED) {
                        if (r == -ETIME && !job_cancelled(j))
                                job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                                           "the switchover missed its deadline (switchover_timeout_ms=%" PRIu64
                                           ") at %s; the guest was resumed here after a pause of %" PRIu64 " ms",
                                           s->switchover_timeout_us / USEC_PER_MSEC, o.step ? o.step : "?",
                                           o.deadline_us ? (resumed_us - (o.deadline_us - s->switchover_timeout_us)) / USEC_PER_MSEC : 0);
                        else if (r == -ETIMEDOUT && o.timeout_s_passed && !job_cancelled(j) &&
                                 s->convergence_blocker[0])
                                job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                                           "did not converge within timeout_s=%" PRIu64 " s: %s",
                                           j->params.timeout_s, s->convergence_blocker);
                        else if (r == -ETIMEDOUT && o.timeout_s_passed && !job_cancelled(j))
                                job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                                           "did not converge within timeout_s=%" PRIu64
                                           " s (dirty rate %" PRIu64 " pages/s, transfer rate %" PRIu64
                                           " bytes/s, %" PRIu64 " bytes still dirty)",
                                           j->params.timeout_s, s->dirty_rate,
                                           o.bandwidth ? o.bandwidth : s->rate, s->memory_remaining);
                        else if (r == -EOWNERDEAD && !job_cancelled(j)) {
                                char what[300];
                                vm_get_guest_event(j->vm, what, sizeof what);
                                job_finish(j, JOB_STATE_FAILED, "MigrationFailed",
                                           "the guest %s during the migration; it is not sent", what);
                        }
                        else
                                fail_errno(j, r, s->phase == JOB_PHASE_DOWNTIME ? "switchover" : "precopy");
                }
        }
out:
        stop_harvester(&o);
        /* Shut the sockets down (close alone leaves io_uring's references open): in-flight
         * sends to a peer that does not read end at once. */
        for (unsigned i = 0; i < o.n_conns; i++)
                if (o.fds[i] >= 0)
                        (void)shutdown(o.fds[i], SHUT_RDWR);
        job_close_fds(j);
        if (o.sender_ready)
                sender_done(&o.sender);
        if (!job_state_is_final(j->stats.state)) {
                (void)vm_dirty_log_stop(j->vm);
                fail_errno(j, -EIO, "internal error");
        }
        safe_close(o.harvest_stop_fd);
        free(o.pending);
        free(o.dirty);
        pthread_mutex_destroy(&o.dirty_lock);
        return NULL;
}

int migration_out_start(Vm *vm, const char *uri, const MigrationParams *p, const MigrationCallbacks *cb,
                        void *userdata, MigrationJob **ret) {
        MigrationJob *j = NULL;
        VmState st = vm_get_state(vm);
        int r;

        if (vm_job_is_active(vm))
                return -EBUSY;
        if (st != VM_STATE_RUNNING && st != VM_STATE_PAUSED)
                return -ESTALE;
        if (p->connections < 1 || p->connections > MIGRATION_MAX_CONNECTIONS || p->max_downtime_ms == 0 ||
            p->max_downtime_ms > 3600 * 1000 || p->max_bandwidth_mibps > UINT64_MAX / MiB ||
            p->zerocopy < 0 || p->zerocopy >= _ZEROCOPY_MAX ||
            p->switchover_timeout_ms > MIGRATION_SWITCHOVER_TIMEOUT_MAX_MS)
                return -EINVAL;

        r = migration_job_new(JOB_OPERATION_MIGRATION_OUT, vm, cb, userdata, &j);
        if (r < 0)
                return r;
        r = migration_uri_parse(uri, &j->uri);
        if (r < 0)
                goto fail;
        /* Zero-copy asked for where it cannot be: the kernel has no zero-copy send on unix
         * sockets, and none at all without IORING_OP_SEND_ZC. */
        r = p->zerocopy != ZEROCOPY_ON ? 0 : j->uri.is_unix ? -EPROTONOSUPPORT
                                         : !sender_zerocopy_supported() ? -EOPNOTSUPP
                                                                        : 0;
        if (r < 0)
                goto fail;
        j->params = *p;
        j->max_downtime_us = p->max_downtime_ms * USEC_PER_MSEC;
        j->max_bandwidth = p->max_bandwidth_mibps * MiB;
        j->stats.max_downtime_us = j->max_downtime_us;
        j->stats.max_bandwidth = j->max_bandwidth;
        j->stats.connections = p->connections;
        j->published = j->stats;

        vm_job_begin(vm);
        r = job_start_thread(j, outgoing_thread);
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
