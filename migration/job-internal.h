/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <pthread.h>
#include <stdatomic.h>

#include "migration.h"
#include "time-util.h"
#include "vm-migration.h"
#include "uri.h"

enum {
        JOB_EVENT_PROGRESS = 1 << 0,
        JOB_EVENT_ITERATION = 1 << 1,
        JOB_EVENT_FINISHED = 1 << 2,
};

struct MigrationJob {
        JobOperation operation;
        Vm *vm;
        MigrationUri uri;
        MigrationParams params;
        IncomingParams in_params;
        MigrationCallbacks cb;
        void *userdata;

        pthread_t thread;
        void *(*thread_fn)(void *);
        bool thread_started;
        int event_fd;
        _Atomic int pending_events;
        _Atomic uint32_t last_iteration_reported;

        _Atomic int cancel_requested;
        _Atomic int committed; /* past the point of no return: cancel refused */
        _Atomic uint64_t max_downtime_us;
        _Atomic uint64_t max_bandwidth; /* bytes/s */
        /* CLOCK_MONOTONIC µs of the last byte that went out (source) or came in; 0 while
         * unknown. Readers derive Stalled and a decaying Rate from it, so both stay right
         * while the job thread is blocked and publishes nothing. */
        _Atomic uint64_t progress_us;

        /* Published statistics: a sequence lock, written by the job thread only. */
        _Atomic uint32_t seq;
        MigrationStats stats;       /* the job thread's working copy */
        MigrationStats published;   /* what readers copy, under seq */

        pthread_mutex_t iter_lock;
        MigrationIteration *iterations; /* guarded by iter_lock */
        size_t n_iterations;

        /* Sockets, closed by the job thread; cancel shuts them down to unblock I/O. */
        pthread_mutex_t fd_lock;
        int listen_fd;
        int fds[MIGRATION_MAX_CONNECTIONS];
        unsigned n_fds;
        bool finished; /* guarded by fd_lock: the thread reached its final state */
};

/* job.c */
int migration_job_new(JobOperation op, Vm *vm, const MigrationCallbacks *cb, void *userdata, MigrationJob **ret);
void job_publish(MigrationJob *j);
void job_post(MigrationJob *j, int events);
void job_add_iteration(MigrationJob *j, const MigrationIteration *it);
/* Sets the final state and error (name without the org.vmmd.VMM1.Error. prefix). */
void job_finish(MigrationJob *j, JobState state, const char *error_name, const char *fmt, ...)
        _printf_(4, 5);
int job_start_thread(MigrationJob *j, void *(*fn)(void *));
void job_register_fd(MigrationJob *j, int fd);
void job_close_fds(MigrationJob *j);
bool job_cancelled(MigrationJob *j);
/* The point of no return of a migration (both sides): -ECANCELED if the job was cancelled
 * first; otherwise marks it committed and no longer cancelable. */
int job_commit(MigrationJob *j);

/* outgoing.c / incoming.c */
void *outgoing_thread(void *p);
void *incoming_thread(void *p);
