/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "vm.h"

/* Live migration jobs (docs/migration.md). A job runs on a thread of its own and drives
 * its VM through vm_job_begin()/vm_job_end(). Its owner (the daemon's event loop, a test)
 * polls migration_job_get_event_fd() and calls migration_job_dispatch(), which runs the
 * callbacks on the owner thread. Statistics are a snapshot published by the job thread
 * under a sequence lock: reading them never waits for the job. */

typedef enum ZeroCopyMode {
        ZEROCOPY_AUTO, /* plain sends on loopback and unix sockets, zero-copy otherwise */
        ZEROCOPY_ON,
        ZEROCOPY_OFF,
        _ZEROCOPY_MAX,
} ZeroCopyMode;

typedef struct MigrationParams {
        uint64_t max_downtime_ms;     /* default 300 */
        uint64_t max_bandwidth_mibps; /* 0 = unlimited */
        unsigned connections;         /* 1..MIGRATION_MAX_CONNECTIONS, default 1 */
        bool auto_converge;           /* default true */
        uint64_t timeout_s;           /* 0 = none */
        ZeroCopyMode zerocopy;        /* default auto */
        uint64_t switchover_timeout_ms; /* 0 = derived from max_downtime_ms (see below) */
} MigrationParams;

/* The switchover's deadline when switchover_timeout_ms is 0: 2 × max_downtime_ms + 5 s,
 * from max_downtime_ms as it is when the switchover starts (docs/migration.md). */
#define MIGRATION_SWITCHOVER_TIMEOUT_BASE_MS 5000
#define MIGRATION_SWITCHOVER_TIMEOUT_MAX_MS (3600 * 1000)

#define MIGRATION_MAX_CONNECTIONS 16
#define MIGRATION_DEFAULT_MAX_DOWNTIME_MS 300

typedef struct IncomingParams {
        char *config_overlay; /* JSON object merged over the config the source sends, or NULL */
        uint64_t timeout_s;   /* 0 = none: how long to wait for the source, and for each message */
} IncomingParams;

void migration_params_init(MigrationParams *p);
const char *zerocopy_mode_to_string(ZeroCopyMode m);
int zerocopy_mode_from_string(const char *s, ZeroCopyMode *ret);

typedef enum JobState {
        JOB_STATE_SETUP,
        JOB_STATE_ACTIVE,
        JOB_STATE_COMPLETING,
        JOB_STATE_COMPLETED,
        JOB_STATE_FAILED,
        JOB_STATE_CANCELLED,
        _JOB_STATE_MAX,
} JobState;

typedef enum JobPhase {
        JOB_PHASE_SETUP,
        JOB_PHASE_PRECOPY,
        JOB_PHASE_DOWNTIME,
        JOB_PHASE_DONE,
        _JOB_PHASE_MAX,
} JobPhase;

typedef enum JobOperation {
        JOB_OPERATION_MIGRATION_OUT,
        JOB_OPERATION_MIGRATION_IN,
        _JOB_OPERATION_MAX,
} JobOperation;

const char *job_state_to_string(JobState s);
const char *job_phase_to_string(JobPhase p);
const char *job_operation_to_string(JobOperation o);
static inline bool job_state_is_final(JobState s) {
        return s >= JOB_STATE_COMPLETED;
}

/* The downtime breakdown, source phases then the destination's (SPEC §4). */
typedef enum DowntimePhase {
        DOWNTIME_FINAL_DIRTY_SYNC,
        DOWNTIME_FINAL_MEMORY,
        DOWNTIME_VCPU_STATE,
        DOWNTIME_DEVICE_STATE,
        DOWNTIME_SEND_STATE,
        DOWNTIME_DESTINATION_RESTORE,
        DOWNTIME_DESTINATION_RESUME,
        DOWNTIME_ACK,
        _DOWNTIME_PHASE_MAX,
} DowntimePhase;

const char *downtime_phase_to_string(DowntimePhase p);

#define MIGRATION_ERROR_NAME_MAX 64
#define MIGRATION_ERROR_MESSAGE_MAX 256

typedef struct MigrationStats {
        JobState state;
        JobPhase phase;
        uint64_t bytes_total;     /* RAM + vCPU/device state */
        uint64_t bytes_processed; /* sent (source) or received (destination) */
        uint64_t bytes_remaining; /* dirty RAM + state still to send */
        uint64_t memory_total, memory_processed, memory_remaining;
        uint64_t rate;             /* bytes/s, smoothed */
        uint64_t start_time_us;    /* CLOCK_REALTIME */
        uint64_t elapsed_us;
        uint64_t expected_end_us;  /* CLOCK_REALTIME estimate, 0 if unknown */
        uint32_t iteration;        /* completed precopy passes */
        uint64_t dirty_rate;       /* pages/s, measured by the harvester */
        uint64_t zero_pages, normal_pages;
        uint32_t throttle_percent;
        uint64_t expected_downtime_us;
        uint64_t downtime_us;      /* measured, 0 until known */
        uint64_t downtime_breakdown_us[_DOWNTIME_PHASE_MAX];
        uint64_t setup_us;
        uint64_t state_cost_us;    /* source: the switchover's fixed cost as the state
                                      rehearsal measured it (docs/migration.md) */
        uint64_t max_downtime_us;
        uint64_t max_bandwidth;    /* bytes/s, 0 = unlimited */
        bool stalled;              /* no progress for 5 s */
        bool cancelable;
        bool zerocopy;             /* zero-copy sends used */
        unsigned connections;
        uint64_t prefault_bytes;   /* destination: RAM faulted in ahead of the stream */
        uint64_t prefault_us;      /* destination: how long that took */
        uint64_t switchover_timeout_us; /* source: the switchover's deadline, from the pause */
        /* Source: why the migration cannot converge as things are, "" when nothing known
         * stops it (e.g. the switchover's fixed cost alone exceeds max_downtime_ms). */
        char convergence_blocker[MIGRATION_ERROR_MESSAGE_MAX];
        char error_name[MIGRATION_ERROR_NAME_MAX];     /* e.g. "MigrationFailed", "" if none */
        char error_message[MIGRATION_ERROR_MESSAGE_MAX];
} MigrationStats;

typedef struct MigrationIteration {
        uint32_t index;
        uint64_t duration_us;
        uint64_t bytes;
        uint64_t dirty_pages;  /* found dirty at the end of the pass */
        uint64_t dirty_rate;   /* pages/s */
        uint64_t bandwidth;    /* bytes/s */
        uint32_t throttle_percent;
        uint64_t expected_downtime_us;
} MigrationIteration;

#define MIGRATION_MAX_ITERATIONS_KEPT 1024

typedef struct MigrationJob MigrationJob;

typedef struct MigrationCallbacks {
        void (*progress)(MigrationJob *j, void *userdata);          /* stats changed */
        void (*iteration)(MigrationJob *j, uint32_t index, void *userdata); /* a pass ended */
        void (*finished)(MigrationJob *j, void *userdata);          /* final state reached */
} MigrationCallbacks;

/* Starts sending 'vm' (running or paused) to 'uri' ("tcp:HOST:PORT" or "unix:PATH").
 * -EINVAL bad URI/params, -ESTALE wrong VM state, -EBUSY a job already drives the VM. */
int migration_out_start(Vm *vm, const char *uri, const MigrationParams *p,
                        const MigrationCallbacks *cb, void *userdata, MigrationJob **ret);
/* Starts receiving into 'vm' (made with vm_new_incoming()). Binds the listening socket
 * before returning, so a source may connect as soon as this returns. */
int migration_in_start(Vm *vm, const char *uri, const IncomingParams *p,
                       const MigrationCallbacks *cb, void *userdata, MigrationJob **ret);

int migration_job_get_event_fd(MigrationJob *j);
void migration_job_dispatch(MigrationJob *j);
/* Requests cancellation; the job ends as cancelled (before the commit) soon after. */
int migration_job_cancel(MigrationJob *j);
int migration_job_set_max_downtime(MigrationJob *j, uint64_t ms);
int migration_job_set_max_bandwidth(MigrationJob *j, uint64_t mibps);
void migration_job_get_stats(MigrationJob *j, MigrationStats *ret);
/* Copies up to 'max' iteration records; returns how many there are in all. */
size_t migration_job_get_iterations(MigrationJob *j, MigrationIteration *ret, size_t max);
JobOperation migration_job_get_operation(MigrationJob *j);
/* Changes the userdata the callbacks get (before the first dispatch). */
void migration_job_set_userdata(MigrationJob *j, void *userdata);
Vm *migration_job_get_vm(MigrationJob *j);
/* Waits for the job thread to end (after the final state). */
MigrationJob *migration_job_free(MigrationJob *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(MigrationJob *, migration_job_free);
