/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* org.vmmd.VMM1.Job on /org/vmmd/VMM1/job/<id>, the Manager's job signals, and the
 * libvirt-shaped job statistics shared with the VM object. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bus-errors.h"
#include "time-util.h"
#include "bus-polkit.h"
#include "bus-service.h"
#include "log.h"

#define PROPERTIES_INTERVAL_USEC (250 * USEC_PER_MSEC)

/* libvirt's virDomainJobOperation values */
#define LIBVIRT_OP_MIGRATION_IN 2
#define LIBVIRT_OP_MIGRATION_OUT 3

static bool streq_ptr(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

/* Wait() calls held until their job ends: at most this many per job, and per caller. */
#define BUS_JOB_MAX_WAITERS 256
#define BUS_JOB_MAX_WAITERS_PER_CALLER 16

struct BusJob;

/* One held Wait() call; its caller is tracked, so the call is dropped when the caller
 * leaves the bus instead of being held until the job ends. */
typedef struct BusWaiter {
        struct BusJob *job;
        sd_bus_message *call;
        sd_bus_track *track;
} BusWaiter;

/* Bus-side state of a job: waiters and the PropertiesChanged rate limit. */
typedef struct BusJob {
        uint32_t id;
        BusWaiter **waiters;
        size_t n_waiters;
        uint64_t last_emit_usec;
        sd_event_source *timer;
} BusJob;

static BusWaiter *bus_waiter_free(BusWaiter *w) {
        if (!w)
                return NULL;
        sd_bus_track_unref(w->track);
        sd_bus_message_unref(w->call);
        free(w);
        return NULL;
}

static BusJob *bus_job_get(BusService *s, uint32_t id, bool create) {
        for (size_t i = 0; i < s->n_bus_jobs; i++)
                if (s->bus_jobs[i]->id == id)
                        return s->bus_jobs[i];
        if (!create)
                return NULL;
        BusJob **a = reallocarray(s->bus_jobs, s->n_bus_jobs + 1, sizeof *a);
        if (!a)
                return NULL;
        s->bus_jobs = a;
        BusJob *b = calloc(1, sizeof *b);
        if (!b)
                return NULL;
        b->id = id;
        s->bus_jobs[s->n_bus_jobs++] = b;
        return b;
}

static void bus_job_free(BusJob *b) {
        for (size_t i = 0; i < b->n_waiters; i++)
                bus_waiter_free(b->waiters[i]);
        free(b->waiters);
        sd_event_source_disable_unref(b->timer);
        free(b);
}

static void bus_job_drop(BusService *s, uint32_t id) {
        for (size_t i = 0; i < s->n_bus_jobs; i++)
                if (s->bus_jobs[i]->id == id) {
                        bus_job_free(s->bus_jobs[i]);
                        memmove(s->bus_jobs + i, s->bus_jobs + i + 1, (s->n_bus_jobs - i - 1) * sizeof(BusJob *));
                        s->n_bus_jobs--;
                        return;
                }
}

void bus_jobs_free(BusService *s) {
        for (size_t i = 0; i < s->n_bus_jobs; i++)
                bus_job_free(s->bus_jobs[i]);
        free(s->bus_jobs);
        s->bus_jobs = NULL;
        s->n_bus_jobs = 0;
}

int bus_caller_uid(sd_bus_message *m, uid_t *ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *c = NULL;
        int r;

        /* An authorized call's uid was asked of the bus asynchronously already; asking
         * again (sd_bus_query_sender_creds() without attached creds) would be a
         * synchronous call on the event loop. */
        if (bus_authorized_uid(m, ret))
                return 0;
        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID, &c);
        if (r < 0)
                return r;
        return sd_bus_creds_get_euid(c, ret);
}

int bus_job_path(uint32_t id, char **ret) {
        return asprintf(ret, VMMD_JOB_PATH_PREFIX "/%" PRIu32, id) < 0 ? -ENOMEM : 0;
}

static ManagedJob *bus_job_lookup(BusService *s, const char *path) {
        const char *p = startswith_prefix(path, VMMD_JOB_PATH_PREFIX "/");
        char *end;
        unsigned long id;

        if (!p || !*p || *p == '0')
                return NULL;
        errno = 0;
        id = strtoul(p, &end, 10);
        if (errno || *end || id > UINT32_MAX)
                return NULL;
        return manager_find_job(s->manager, (uint32_t)id);
}

int bus_job_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **ret_found,
                 sd_bus_error *error) {
        ManagedJob *j = bus_job_lookup(userdata, path);

        if (!j)
                return 0;
        *ret_found = j;
        return 1;
}

int bus_job_enumerate(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes, sd_bus_error *error) {
        BusService *s = userdata;
        Manager *m = s->manager;
        char **nodes = calloc(m->n_jobs + 1, sizeof *nodes);

        if (!nodes)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_jobs; i++)
                if (bus_job_path(m->jobs[i]->id, &nodes[i]) < 0) {
                        for (size_t k = 0; k < i; k++)
                                free(nodes[k]);
                        free(nodes);
                        return -ENOMEM;
                }
        *ret_nodes = nodes;
        return 0;
}

/* --- libvirt-shaped statistics (virDomainGetJobStats typed parameters) --- */

static int append_t(sd_bus_message *m, const char *key, uint64_t v) {
        return sd_bus_message_append(m, "{sv}", key, "t", v);
}

int bus_append_libvirt_stats(sd_bus_message *m, ManagedJob *j) {
        MigrationStats st;
        bool done;
        int r;

        managed_job_get_stats(j, &st);
        done = job_state_is_final(st.state);
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "{sv}", "operation", "i",
                                  migration_job_get_operation(j->job) == JOB_OPERATION_MIGRATION_IN
                                          ? LIBVIRT_OP_MIGRATION_IN
                                          : LIBVIRT_OP_MIGRATION_OUT);
        uint64_t remaining_ms = st.rate ? st.bytes_remaining * 1000 / st.rate : 0;
        uint64_t net_us = st.downtime_breakdown_us[DOWNTIME_SEND_STATE] + st.downtime_breakdown_us[DOWNTIME_ACK];
        struct {
                const char *key;
                uint64_t v;
        } keys[] = {
                { "time_elapsed", st.elapsed_us / 1000 },
                { "time_remaining", done ? 0 : remaining_ms },
                { "setup_time", st.setup_us / 1000 },
                { "downtime", (done ? st.downtime_us : st.expected_downtime_us) / 1000 },
                { "downtime_net", net_us / 1000 },
                { "data_total", st.bytes_total },
                { "data_processed", st.bytes_processed },
                { "data_remaining", st.bytes_remaining },
                { "memory_total", st.memory_total },
                { "memory_processed", st.memory_processed },
                { "memory_remaining", st.memory_remaining },
                { "memory_constant", st.zero_pages },
                { "memory_normal", st.normal_pages },
                { "memory_normal_bytes", st.normal_pages * 4096 },
                { "memory_bps", st.rate },
                { "memory_dirty_rate", st.dirty_rate },
                { "memory_page_size", 4096 },
                { "memory_iteration", st.iteration },
        };
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(keys); i++)
                r = append_t(m, keys[i].key, keys[i].v);
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}", "auto_converge_throttle", "i", (int32_t)st.throttle_percent);
        if (r >= 0 && done) {
                r = sd_bus_message_append(m, "{sv}", "success", "b", st.state == JOB_STATE_COMPLETED);
                if (r >= 0 && st.error_message[0])
                        r = sd_bus_message_append(m, "{sv}", "errmsg", "s", st.error_message);
        }
        if (r < 0)
                return r;
        return sd_bus_message_close_container(m);
}

/* libvirt's virDomainJobType for a job. */
int bus_job_libvirt_type(ManagedJob *j) {
        MigrationStats st;

        managed_job_get_stats(j, &st);
        switch (st.state) {
        case JOB_STATE_COMPLETED:
                return 3;
        case JOB_STATE_FAILED:
                return 4;
        case JOB_STATE_CANCELLED:
                return 5;
        default:
                return 2; /* unbounded */
        }
}

/* --- properties --- */

#define STATS_PROPERTY(fn, sig, expr)                                                                   \
        static int fn(sd_bus *bus, const char *path, const char *interface, const char *property,      \
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {                    \
                MigrationStats st;                                                                      \
                managed_job_get_stats(userdata, &st);                                                   \
                return sd_bus_message_append(reply, sig, expr);                                         \
        }

STATS_PROPERTY(property_get_state, "s", job_state_to_string(st.state))
STATS_PROPERTY(property_get_phase, "s", job_phase_to_string(st.phase))
STATS_PROPERTY(property_get_progress, "d",
               st.state == JOB_STATE_COMPLETED ? 1.0
               : st.bytes_processed + st.bytes_remaining
                       ? (double)st.bytes_processed / (double)(st.bytes_processed + st.bytes_remaining)
                       : 0.0)
STATS_PROPERTY(property_get_progress_valid, "b", st.state != JOB_STATE_SETUP)
STATS_PROPERTY(property_get_bytes_total, "t", st.bytes_total)
STATS_PROPERTY(property_get_bytes_processed, "t", st.bytes_processed)
STATS_PROPERTY(property_get_bytes_remaining, "t", st.bytes_remaining)
STATS_PROPERTY(property_get_rate, "t", st.rate)
STATS_PROPERTY(property_get_start_time, "t", st.start_time_us)
STATS_PROPERTY(property_get_elapsed, "t", st.elapsed_us)
STATS_PROPERTY(property_get_expected_end, "t", st.expected_end_us)
STATS_PROPERTY(property_get_iteration, "u", st.iteration)
STATS_PROPERTY(property_get_dirty_rate, "t", st.dirty_rate)
STATS_PROPERTY(property_get_zero_pages, "t", st.zero_pages)
STATS_PROPERTY(property_get_normal_pages, "t", st.normal_pages)
STATS_PROPERTY(property_get_throttle, "u", st.throttle_percent)
STATS_PROPERTY(property_get_expected_downtime, "t", st.expected_downtime_us)
STATS_PROPERTY(property_get_downtime, "t", st.downtime_us)
STATS_PROPERTY(property_get_setup, "t", st.setup_us)
STATS_PROPERTY(property_get_max_downtime, "t", st.max_downtime_us)
STATS_PROPERTY(property_get_max_bandwidth, "t", st.max_bandwidth)
STATS_PROPERTY(property_get_stalled, "b", st.stalled)
STATS_PROPERTY(property_get_cancelable, "b", st.cancelable)
STATS_PROPERTY(property_get_error_message, "s", st.error_message)
STATS_PROPERTY(property_get_convergence_blocker, "s", st.convergence_blocker)
STATS_PROPERTY(property_get_switchover_timeout, "t", st.switchover_timeout_us)

static int property_get_error_name(sd_bus *bus, const char *path, const char *interface, const char *property,
                                   sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        MigrationStats st;
        char name[MIGRATION_ERROR_NAME_MAX + sizeof VMMD_ERROR_PREFIX];

        managed_job_get_stats(userdata, &st);
        if (!st.error_name[0])
                return sd_bus_message_append(reply, "s", "");
        snprintf(name, sizeof name, VMMD_ERROR_PREFIX "%s", st.error_name);
        return sd_bus_message_append(reply, "s", name);
}

static int property_get_breakdown(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        MigrationStats st;
        int r;

        managed_job_get_stats(userdata, &st);
        r = sd_bus_message_open_container(reply, 'a', "{st}");
        for (int p = 0; r >= 0 && p < _DOWNTIME_PHASE_MAX; p++)
                r = sd_bus_message_append(reply, "{st}", downtime_phase_to_string(p), st.downtime_breakdown_us[p]);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int property_get_id(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        ManagedJob *j = userdata;
        return sd_bus_message_append(reply, "u", j->id);
}

static int property_get_operation(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        ManagedJob *j = userdata;
        return sd_bus_message_append(reply, "s", job_operation_to_string(migration_job_get_operation(j->job)));
}

static int property_get_vm(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        ManagedJob *j = userdata;
        _cleanup_free_ char *p = NULL;
        int r = bus_vm_path(managed_job_vm_name(j), &p);
        if (r < 0)
                return r;
        return sd_bus_message_append(reply, "o", p);
}

static int property_get_uid(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        ManagedJob *j = userdata;
        return sd_bus_message_append(reply, "u", j->started_by_uid);
}

/* --- methods --- */

static ManagedJob *job_from_call(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        ManagedJob *j = bus_job_lookup(s, sd_bus_message_get_path(m));
        if (!j)
                sd_bus_error_setf(error, VMMD_ERROR_NO_SUCH_JOB, "The job of %s no longer exists",
                                  sd_bus_message_get_path(m));
        return j;
}

static int cancel_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        ManagedJob *j = job_from_call(s, m, error);
        int r;

        if (!j)
                return -ESRCH;
        r = managed_job_cancel(j, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_cancel(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ManagedJob *j = userdata;
        return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MIGRATE, managed_job_vm_name(j), "cancel",
                             cancel_authorized, error);
}

static int reply_wait(sd_bus_message *call, ManagedJob *j) {
        MigrationStats st;
        char name[MIGRATION_ERROR_NAME_MAX + sizeof VMMD_ERROR_PREFIX] = "";

        managed_job_get_stats(j, &st);
        if (st.error_name[0])
                snprintf(name, sizeof name, VMMD_ERROR_PREFIX "%s", st.error_name);
        return sd_bus_reply_method_return(call, "bss", st.state == JOB_STATE_COMPLETED, name, st.error_message);
}

/* The caller of a held Wait() left the bus: nobody is there to answer. */
static int on_waiter_gone(sd_bus_track *t, void *userdata) {
        BusWaiter *w = userdata;
        BusJob *b = w->job;

        for (size_t i = 0; i < b->n_waiters; i++)
                if (b->waiters[i] == w) {
                        memmove(b->waiters + i, b->waiters + i + 1, (b->n_waiters - i - 1) * sizeof *b->waiters);
                        b->n_waiters--;
                        break;
                }
        bus_waiter_free(w); /* drops the track too, as sd-bus wants of an empty one */
        return 0;
}

static int method_wait(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ManagedJob *j = userdata;
        BusService *s = bus_service_current(m);
        const char *sender = sd_bus_message_get_sender(m);
        BusWaiter *w;
        BusJob *b;
        size_t mine = 0;
        int r;

        if (j->finished)
                return reply_wait(m, j);
        b = bus_job_get(s, j->id, true);
        if (!b)
                return -ENOMEM;
        for (size_t i = 0; sender && i < b->n_waiters; i++)
                if (streq_ptr(sd_bus_message_get_sender(b->waiters[i]->call), sender))
                        mine++;
        if (b->n_waiters >= BUS_JOB_MAX_WAITERS || mine >= BUS_JOB_MAX_WAITERS_PER_CALLER)
                return sd_bus_error_setf(error, VMMD_ERROR_LIMIT_EXCEEDED,
                                         "Job %" PRIu32 " has %s Wait() calls pending (at most %d per caller, %d in all)",
                                         j->id, mine >= BUS_JOB_MAX_WAITERS_PER_CALLER ? "this caller's" : "the most",
                                         BUS_JOB_MAX_WAITERS_PER_CALLER, BUS_JOB_MAX_WAITERS);
        BusWaiter **a = reallocarray(b->waiters, b->n_waiters + 1, sizeof *a);
        if (!a)
                return -ENOMEM;
        b->waiters = a;
        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->job = b;
        w->call = sd_bus_message_ref(m);
        r = sd_bus_track_new(sd_bus_message_get_bus(m), &w->track, on_waiter_gone, w);
        if (r >= 0)
                r = sd_bus_track_add_sender(w->track, m);
        if (r < 0) {
                bus_waiter_free(w);
                return r;
        }
        b->waiters[b->n_waiters++] = w;
        return 1; /* replied when the job ends */
}

static int method_get_stats(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        uint32_t flags;
        int r;

        r = sd_bus_message_read(m, "u", &flags);
        if (r < 0)
                return r;
        if (flags != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS, "Unknown flags 0x%" PRIx32 " (none defined)",
                                         flags);
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = bus_append_libvirt_stats(reply, userdata);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_iterations(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ MigrationIteration *it = NULL;
        ManagedJob *j = userdata;
        size_t n;
        int r;

        n = migration_job_get_iterations(j->job, NULL, 0);
        it = calloc(MAX(n, (size_t)1), sizeof *it);
        if (!it)
                return -ENOMEM;
        n = MIN(n, migration_job_get_iterations(j->job, it, n));
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "(utttttut)");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = sd_bus_message_append(reply, "(utttttut)", it[i].index, it[i].duration_us, it[i].bytes,
                                          it[i].dirty_pages, it[i].dirty_rate, it[i].bandwidth,
                                          it[i].throttle_percent, it[i].expected_downtime_us);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

#define CHANGING SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE
#define CONST SD_BUS_VTABLE_PROPERTY_CONST

const sd_bus_vtable bus_job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "u", property_get_id, 0, CONST),
        SD_BUS_PROPERTY("Operation", "s", property_get_operation, 0, CONST),
        SD_BUS_PROPERTY("VM", "o", property_get_vm, 0, CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, CHANGING),
        SD_BUS_PROPERTY("Phase", "s", property_get_phase, 0, CHANGING),
        SD_BUS_PROPERTY("Progress", "d", property_get_progress, 0, CHANGING),
        SD_BUS_PROPERTY("ProgressValid", "b", property_get_progress_valid, 0, CHANGING),
        SD_BUS_PROPERTY("BytesTotal", "t", property_get_bytes_total, 0, CHANGING),
        SD_BUS_PROPERTY("BytesProcessed", "t", property_get_bytes_processed, 0, CHANGING),
        SD_BUS_PROPERTY("BytesRemaining", "t", property_get_bytes_remaining, 0, CHANGING),
        SD_BUS_PROPERTY("Rate", "t", property_get_rate, 0, CHANGING),
        SD_BUS_PROPERTY("StartTime", "t", property_get_start_time, 0, CONST),
        SD_BUS_PROPERTY("ElapsedUSec", "t", property_get_elapsed, 0, CHANGING),
        SD_BUS_PROPERTY("ExpectedEndTime", "t", property_get_expected_end, 0, CHANGING),
        SD_BUS_PROPERTY("Iteration", "u", property_get_iteration, 0, CHANGING),
        SD_BUS_PROPERTY("DirtyRate", "t", property_get_dirty_rate, 0, CHANGING),
        SD_BUS_PROPERTY("ZeroPages", "t", property_get_zero_pages, 0, CHANGING),
        SD_BUS_PROPERTY("NormalPages", "t", property_get_normal_pages, 0, CHANGING),
        SD_BUS_PROPERTY("ThrottlePercent", "u", property_get_throttle, 0, CHANGING),
        SD_BUS_PROPERTY("ExpectedDowntimeUSec", "t", property_get_expected_downtime, 0, CHANGING),
        SD_BUS_PROPERTY("DowntimeUSec", "t", property_get_downtime, 0, CHANGING),
        SD_BUS_PROPERTY("DowntimeBreakdown", "a{st}", property_get_breakdown, 0, CHANGING),
        SD_BUS_PROPERTY("SetupUSec", "t", property_get_setup, 0, CHANGING),
        SD_BUS_PROPERTY("MaxDowntimeUSec", "t", property_get_max_downtime, 0, CHANGING),
        SD_BUS_PROPERTY("MaxBandwidth", "t", property_get_max_bandwidth, 0, CHANGING),
        SD_BUS_PROPERTY("Stalled", "b", property_get_stalled, 0, CHANGING),
        SD_BUS_PROPERTY("ConvergenceBlocker", "s", property_get_convergence_blocker, 0, CHANGING),
        SD_BUS_PROPERTY("SwitchoverTimeoutUSec", "t", property_get_switchover_timeout, 0, CHANGING),
        SD_BUS_PROPERTY("Cancelable", "b", property_get_cancelable, 0, CHANGING),
        SD_BUS_PROPERTY("StartedByUID", "u", property_get_uid, 0, CONST),
        SD_BUS_PROPERTY("ErrorName", "s", property_get_error_name, 0, CHANGING),
        SD_BUS_PROPERTY("ErrorMessage", "s", property_get_error_message, 0, CHANGING),

        SD_BUS_METHOD("Cancel", NULL, NULL, method_cancel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Wait", SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("b", success, "s", error_name, "s", message), method_wait,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetStats", SD_BUS_ARGS("u", flags), SD_BUS_RESULT("a{sv}", stats),
                                method_get_stats, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetIterations", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(utttttut)", iterations),
                                method_get_iterations, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Completed", SD_BUS_ARGS("b", success, "s", error_name, "s", message), 0),
        SD_BUS_VTABLE_END,
};

/* --- signals from the Manager's job changes --- */

static void emit_changed(BusService *s, ManagedJob *j, BusJob *b) {
        _cleanup_free_ char *path = NULL;
        int r;

        if (b) {
                b->last_emit_usec = time_monotonic_usec();
                b->timer = sd_event_source_disable_unref(b->timer);
        }
        r = bus_job_path(j->id, &path);
        if (r >= 0)
                r = sd_bus_emit_properties_changed_strv(s->bus, path, VMMD_JOB_INTERFACE, NULL);
        if (r < 0)
                log_warning_errno(r, "Failed to signal changes of job %" PRIu32 ": %m", j->id);
}

static int on_emit_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        BusService *s = userdata;
        uint32_t id = (uint32_t)(uintptr_t)sd_event_source_get_userdata(src);
        (void)usec;
        for (size_t i = 0; i < s->n_bus_jobs; i++)
                if (s->bus_jobs[i]->timer == src) {
                        BusJob *b = s->bus_jobs[i];
                        ManagedJob *j = manager_find_job(s->manager, b->id);
                        b->timer = sd_event_source_disable_unref(b->timer);
                        if (j)
                                emit_changed(s, j, b);
                        break;
                }
        (void)id;
        return 0;
}

static void on_job_changed(Manager *m, ManagedJob *j, void *userdata) {
        BusService *s = userdata;
        BusJob *b = bus_job_get(s, j->id, true);
        uint64_t now = time_monotonic_usec();

        if (!b || now >= b->last_emit_usec + PROPERTIES_INTERVAL_USEC) {
                emit_changed(s, j, b);
                return;
        }
        if (b->timer)
                return; /* an emission is already due */
        if (sd_event_add_time(m->event, &b->timer, CLOCK_MONOTONIC, b->last_emit_usec + PROPERTIES_INTERVAL_USEC,
                              0, on_emit_timer, s) < 0)
                emit_changed(s, j, b);
}

static void on_job_added(Manager *m, ManagedJob *j, void *userdata) {
        BusService *s = userdata;
        _cleanup_free_ char *path = NULL, *vm_path = NULL;
        int r;

        (void)bus_job_get(s, j->id, true);
        r = bus_job_path(j->id, &path);
        if (r >= 0)
                r = bus_vm_path(managed_job_vm_name(j), &vm_path);
        if (r >= 0)
                r = sd_bus_emit_object_added(s->bus, path);
        if (r >= 0)
                r = sd_bus_emit_signal(s->bus, VMMD_MANAGER_PATH, VMMD_MANAGER_INTERFACE, "JobNew", "uoo", j->id,
                                       path, vm_path);
        if (r < 0)
                log_warning_errno(r, "Failed to announce job %" PRIu32 ": %m", j->id);
}

static void on_job_iteration(Manager *m, ManagedJob *j, uint32_t index, void *userdata) {
        BusService *s = userdata;
        _cleanup_free_ char *vm_path = NULL;
        int r = bus_vm_path(managed_job_vm_name(j), &vm_path);

        if (r >= 0)
                r = sd_bus_emit_signal(s->bus, vm_path, VMMD_VM_INTERFACE, "MigrationIteration", "i",
                                       (int32_t)index);
        if (r < 0)
                log_warning_errno(r, "Failed to signal an iteration of job %" PRIu32 ": %m", j->id);
}

static void on_job_finished(Manager *m, ManagedJob *j, void *userdata) {
        BusService *s = userdata;
        BusJob *b = bus_job_get(s, j->id, false);
        _cleanup_free_ char *path = NULL, *vm_path = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *sig = NULL;
        MigrationStats st;
        char name[MIGRATION_ERROR_NAME_MAX + sizeof VMMD_ERROR_PREFIX] = "";
        int r;

        /* The final values first, flushed, then the end. */
        emit_changed(s, j, b);
        managed_job_get_stats(j, &st);
        if (st.error_name[0])
                snprintf(name, sizeof name, VMMD_ERROR_PREFIX "%s", st.error_name);
        r = bus_job_path(j->id, &path);
        if (r >= 0)
                r = sd_bus_emit_signal(s->bus, path, VMMD_JOB_INTERFACE, "Completed", "bss",
                                       st.state == JOB_STATE_COMPLETED, name, st.error_message);
        if (r >= 0)
                r = bus_vm_path(managed_job_vm_name(j), &vm_path);
        if (r >= 0)
                r = sd_bus_message_new_signal(s->bus, &sig, vm_path, VMMD_VM_INTERFACE, "JobCompleted");
        if (r >= 0)
                r = bus_append_libvirt_stats(sig, j);
        if (r >= 0)
                r = sd_bus_send(s->bus, sig, NULL);
        if (r < 0)
                log_warning_errno(r, "Failed to signal the end of job %" PRIu32 ": %m", j->id);

        if (b) {
                for (size_t i = 0; i < b->n_waiters; i++) {
                        (void)reply_wait(b->waiters[i]->call, j);
                        b->waiters[i] = bus_waiter_free(b->waiters[i]);
                }
                b->n_waiters = 0;
        }
}

static void on_job_removing(Manager *m, ManagedJob *j, void *userdata) {
        BusService *s = userdata;
        _cleanup_free_ char *path = NULL;
        MigrationStats st;
        int r;

        managed_job_get_stats(j, &st);
        r = bus_job_path(j->id, &path);
        if (r >= 0)
                r = sd_bus_emit_object_removed(s->bus, path);
        if (r >= 0)
                r = sd_bus_emit_signal(s->bus, VMMD_MANAGER_PATH, VMMD_MANAGER_INTERFACE, "JobRemoved", "uos", j->id,
                                       path, job_state_to_string(st.state));
        if (r < 0)
                log_warning_errno(r, "Failed to announce the removal of job %" PRIu32 ": %m", j->id);
        bus_job_drop(s, j->id);
}

const ManagerObserver bus_job_observer = {
        .job_added = on_job_added,
        .job_changed = on_job_changed,
        .job_iteration = on_job_iteration,
        .job_finished = on_job_finished,
        .job_removing = on_job_removing,
};
