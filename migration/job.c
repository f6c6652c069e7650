/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>

#include "job-internal.h"

static const char *const job_state_table[_JOB_STATE_MAX] = {
        [JOB_STATE_SETUP] = "setup",         [JOB_STATE_ACTIVE] = "active",
        [JOB_STATE_COMPLETING] = "completing", [JOB_STATE_COMPLETED] = "completed",
        [JOB_STATE_FAILED] = "failed",       [JOB_STATE_CANCELLED] = "cancelled",
};
static const char *const job_phase_table[_JOB_PHASE_MAX] = {
        [JOB_PHASE_SETUP] = "setup",
        [JOB_PHASE_PRECOPY] = "precopy",
        [JOB_PHASE_DOWNTIME] = "downtime",
        [JOB_PHASE_DONE] = "done",
};
static const char *const downtime_phase_table[_DOWNTIME_PHASE_MAX] = {
        [DOWNTIME_FINAL_DIRTY_SYNC] = "final_dirty_sync",
        [DOWNTIME_FINAL_MEMORY] = "final_memory",
        [DOWNTIME_VCPU_STATE] = "vcpu_state",
        [DOWNTIME_DEVICE_STATE] = "device_state",
        [DOWNTIME_SEND_STATE] = "send_state",
        [DOWNTIME_DESTINATION_RESTORE] = "destination_restore",
        [DOWNTIME_DESTINATION_RESUME] = "destination_resume",
        [DOWNTIME_ACK] = "ack",
};
static const char *const zerocopy_table[_ZEROCOPY_MAX] = {
        [ZEROCOPY_AUTO] = "auto",
        [ZEROCOPY_ON] = "on",
        [ZEROCOPY_OFF] = "off",
};

const char *job_state_to_string(JobState s) {
        return s >= 0 && s < _JOB_STATE_MAX ? job_state_table[s] : NULL;
}
const char *job_phase_to_string(JobPhase p) {
        return p >= 0 && p < _JOB_PHASE_MAX ? job_phase_table[p] : NULL;
}
const char *job_operation_to_string(JobOperation o) {
        return o == JOB_OPERATION_MIGRATION_OUT ? "migration-out"
               : o == JOB_OPERATION_MIGRATION_IN ? "migration-in"
                                                 : NULL;
}
const char *downtime_phase_to_string(DowntimePhase p) {
        return p >= 0 && p < _DOWNTIME_PHASE_MAX ? downtime_phase_table[p] : NULL;
}
const char *zerocopy_mode_to_string(ZeroCopyMode m) {
        return m >= 0 && m < _ZEROCOPY_MAX ? zerocopy_table[m] : NULL;
}
int zerocopy_mode_from_string(const char *s, ZeroCopyMode *ret) {
        for (int i = 0; i < _ZEROCOPY_MAX; i++)
                if (s && strcmp(s, zerocopy_table[i]) == 0) {
                        *ret = (ZeroCopyMode)i;
                        return 0;
                }
        return -EINVAL;
}

void migration_params_init(MigrationParams *p) {
        *p = (MigrationParams){
                .max_downtime_ms = MIGRATION_DEFAULT_MAX_DOWNTIME_MS,
                .connections = 1,
                .auto_converge = true,
                .zerocopy = ZEROCOPY_AUTO,
        };
}

int migration_job_new(JobOperation op, Vm *vm, const MigrationCallbacks *cb, void *userdata, MigrationJob **ret) {
        MigrationJob *j = calloc(1, sizeof *j);

        if (!j)
                return -ENOMEM;
        j->operation = op;
        j->vm = vm;
        if (cb)
                j->cb = *cb;
        j->userdata = userdata;
        j->listen_fd = -EBADF;
        for (unsigned i = 0; i < MIGRATION_MAX_CONNECTIONS; i++)
                j->fds[i] = -EBADF;
        pthread_mutex_init(&j->iter_lock, NULL);
        pthread_mutex_init(&j->fd_lock, NULL);
        j->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (j->event_fd < 0) {
                int r = negative_errno();
                migration_job_free(j);
                return r;
        }
        j->stats.state = JOB_STATE_SETUP;
        j->stats.phase = JOB_PHASE_SETUP;
        j->stats.start_time_us = time_realtime_usec();
        j->stats.cancelable = true;
        j->published = j->stats;
        *ret = j;
        return 0;
}

/* The published copy is read and written one 64-bit word at a time with relaxed atomics,
 * the sequence counter ordering them: the C11 form of a sequence lock, so that a reader
 * racing a writer reads a torn copy it then throws away, never undefined behaviour (and
 * ThreadSanitizer sees no data race). */
_Static_assert(sizeof(MigrationStats) % sizeof(uint64_t) == 0, "MigrationStats is not whole words");
_Static_assert(_Alignof(MigrationStats) >= _Alignof(uint64_t), "MigrationStats is not word-aligned");

void job_publish(MigrationJob *j) {
        uint64_t *dst = (uint64_t *)(void *)&j->published;
        const uint64_t *src = (const uint64_t *)(const void *)&j->stats;

        atomic_fetch_add_explicit(&j->seq, 1, memory_order_acq_rel); /* odd: writing */
        atomic_thread_fence(memory_order_release);
        for (size_t i = 0; i < sizeof(MigrationStats) / sizeof(uint64_t); i++)
                __atomic_store_n(&dst[i], src[i], __ATOMIC_RELAXED);
        atomic_fetch_add_explicit(&j->seq, 1, memory_order_release); /* even: stable */
}

#define STALL_US (5 * USEC_PER_SEC)
#define RATE_WINDOW_US (USEC_PER_SEC / 2)

void migration_job_get_stats(MigrationJob *j, MigrationStats *ret) {
        const uint64_t *src = (const uint64_t *)(const void *)&j->published;
        uint64_t *dst = (uint64_t *)(void *)ret;

        for (;;) {
                uint32_t s1 = atomic_load_explicit(&j->seq, memory_order_acquire);
                if (s1 & 1) {
                        sched_yield();
                        continue;
                }
                for (size_t i = 0; i < sizeof(MigrationStats) / sizeof(uint64_t); i++)
                        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
                atomic_thread_fence(memory_order_acquire);
                if (atomic_load_explicit(&j->seq, memory_order_relaxed) == s1)
                        break;
        }
        /* What time alone changes, computed here on the reader's thread: a job thread
         * blocked on a peer that does not read publishes nothing meanwhile. */
        uint64_t progress = atomic_load(&j->progress_us), now = time_monotonic_usec();
        if (job_state_is_final(ret->state) || progress == 0 || now <= progress)
                return;
        ret->elapsed_us = MAX(ret->elapsed_us, time_realtime_usec() - ret->start_time_us);
        uint64_t idle = now - progress;
        if (idle >= STALL_US && (ret->state == JOB_STATE_ACTIVE || ret->state == JOB_STATE_COMPLETING))
                ret->stalled = true;
        if (idle >= 2 * RATE_WINDOW_US) {
                /* Each 0.5 s window without a byte halves the smoothed rate (the job thread's
                 * own update, averaging with a zero window, does the same). */
                uint64_t windows = idle / RATE_WINDOW_US - 1;
                ret->rate = windows >= 63 ? 0 : ret->rate >> windows;
                ret->expected_end_us = 0;
        }
}

void job_post(MigrationJob *j, int events) {
        uint64_t one = 1;

        atomic_fetch_or(&j->pending_events, events);
        (void)!write(j->event_fd, &one, sizeof one);
}

void job_add_iteration(MigrationJob *j, const MigrationIteration *it) {
        pthread_mutex_lock(&j->iter_lock);
        if (j->n_iterations < MIGRATION_MAX_ITERATIONS_KEPT) {
                MigrationIteration *n = realloc(j->iterations, (j->n_iterations + 1) * sizeof *n);
                if (n) {
                        j->iterations = n;
                        j->iterations[j->n_iterations++] = *it;
                }
        }
        pthread_mutex_unlock(&j->iter_lock);
        job_post(j, JOB_EVENT_ITERATION);
}

size_t migration_job_get_iterations(MigrationJob *j, MigrationIteration *ret, size_t max) {
        size_t n;

        pthread_mutex_lock(&j->iter_lock);
        n = j->n_iterations;
        if (ret)
                memcpy(ret, j->iterations, MIN(n, max) * sizeof *ret);
        pthread_mutex_unlock(&j->iter_lock);
        return n;
}

void job_finish(MigrationJob *j, JobState state, const char *error_name, const char *fmt, ...) {
        j->stats.state = state;
        j->stats.phase = JOB_PHASE_DONE;
        j->stats.cancelable = false;
        j->stats.elapsed_us = time_realtime_usec() - j->stats.start_time_us;
        if (j->stats.elapsed_us > 0)
                /* The final rate is the average over the whole job. */
                j->stats.rate = j->stats.bytes_processed * USEC_PER_SEC / j->stats.elapsed_us;
        j->stats.expected_end_us = 0;
        j->stats.stalled = false;
        if (error_name) {
                va_list ap;
                snprintf(j->stats.error_name, sizeof j->stats.error_name, "%s", error_name);
                va_start(ap, fmt);
                vsnprintf(j->stats.error_message, sizeof j->stats.error_message, fmt, ap);
                va_end(ap);
        }
        job_publish(j);
        pthread_mutex_lock(&j->fd_lock);
        j->finished = true;
        pthread_mutex_unlock(&j->fd_lock);
        job_post(j, JOB_EVENT_PROGRESS);
}

/* The job's thread: the owner hears of the end only once the thread has cleaned up and is
 * about to return, so its pthread_join() in migration_job_dispatch() never waits (it runs
 * on the daemon's event loop). */
static void *job_thread(void *p) {
        MigrationJob *j = p;

        j->thread_fn(j);
        job_post(j, JOB_EVENT_FINISHED);
        return NULL;
}

int job_start_thread(MigrationJob *j, void *(*fn)(void *)) {
        sigset_t all, old;
        int r;

        j->thread_fn = fn;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&j->thread, NULL, job_thread, j);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0)
                return -r;
        j->thread_started = true;
        return 0;
}

void job_register_fd(MigrationJob *j, int fd) {
        pthread_mutex_lock(&j->fd_lock);
        if (j->n_fds < MIGRATION_MAX_CONNECTIONS)
                j->fds[j->n_fds++] = fd;
        pthread_mutex_unlock(&j->fd_lock);
}

void job_close_fds(MigrationJob *j) {
        pthread_mutex_lock(&j->fd_lock);
        for (unsigned i = 0; i < j->n_fds; i++)
                j->fds[i] = safe_close(j->fds[i]);
        j->n_fds = 0;
        j->listen_fd = safe_close(j->listen_fd);
        pthread_mutex_unlock(&j->fd_lock);
}

bool job_cancelled(MigrationJob *j) {
        return atomic_load(&j->cancel_requested) != 0;
}

int job_commit(MigrationJob *j) {
        pthread_mutex_lock(&j->fd_lock);
        if (job_cancelled(j)) {
                pthread_mutex_unlock(&j->fd_lock);
                return -ECANCELED;
        }
        atomic_store(&j->committed, 1);
        pthread_mutex_unlock(&j->fd_lock);
        j->stats.cancelable = false;
        return 0;
}

int migration_job_cancel(MigrationJob *j) {
        pthread_mutex_lock(&j->fd_lock);
        if (j->finished) {
                pthread_mutex_unlock(&j->fd_lock);
                return -ESTALE;
        }
        if (atomic_load(&j->committed)) {
                pthread_mutex_unlock(&j->fd_lock);
                return -EBUSY;
        }
        atomic_store(&j->cancel_requested, 1);
        /* Unblock the job thread wherever it waits on the network. */
        for (unsigned i = 0; i < j->n_fds; i++)
                (void)shutdown(j->fds[i], SHUT_RDWR);
        if (j->listen_fd >= 0)
                (void)shutdown(j->listen_fd, SHUT_RDWR);
        pthread_mutex_unlock(&j->fd_lock);
        return 0;
}

int migration_job_set_max_downtime(MigrationJob *j, uint64_t ms) {
        if (ms == 0 || ms > 3600 * 1000)
                return -EINVAL;
        atomic_store(&j->max_downtime_us, ms * USEC_PER_MSEC);
        return 0;
}

int migration_job_set_max_bandwidth(MigrationJob *j, uint64_t mibps) {
        if (mibps > UINT64_MAX / MiB)
                return -EINVAL;
        atomic_store(&j->max_bandwidth, mibps * MiB);
        return 0;
}

int migration_job_get_event_fd(MigrationJob *j) {
        return j->event_fd;
}

void migration_job_dispatch(MigrationJob *j) {
        uint64_t v;
        int ev;

        (void)!read(j->event_fd, &v, sizeof v);
        ev = atomic_exchange(&j->pending_events, 0);

        if ((ev & JOB_EVENT_ITERATION) && j->cb.iteration) {
                uint32_t n = (uint32_t)migration_job_get_iterations(j, NULL, 0);
                uint32_t last = atomic_exchange(&j->last_iteration_reported, n);
                for (uint32_t i = last; i < n; i++)
                        j->cb.iteration(j, i, j->userdata);
        }
        if ((ev & JOB_EVENT_PROGRESS) && j->cb.progress)
                j->cb.progress(j, j->userdata);
        if (ev & JOB_EVENT_FINISHED) {
                /* The job thread is done with the VM: hand it back to the owner. */
                if (j->thread_started) {
                        pthread_join(j->thread, NULL);
                        j->thread_started = false;
                }
                vm_job_end(j->vm);
                if (j->cb.finished)
                        j->cb.finished(j, j->userdata);
        }
}

JobOperation migration_job_get_operation(MigrationJob *j) {
        return j->operation;
}

void migration_job_set_userdata(MigrationJob *j, void *userdata) {
        j->userdata = userdata;
}

Vm *migration_job_get_vm(MigrationJob *j) {
        return j->vm;
}

MigrationJob *migration_job_free(MigrationJob *j) {
        if (!j)
                return NULL;
        if (j->thread_started) {
                (void)migration_job_cancel(j);
                pthread_join(j->thread, NULL);
                vm_job_end(j->vm);
        }
        job_close_fds(j);
        safe_close(j->event_fd);
        free(j->iterations);
        free(j->in_params.config_overlay);
        pthread_mutex_destroy(&j->iter_lock);
        pthread_mutex_destroy(&j->fd_lock);
        free(j);
        return NULL;
}
