/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Migration jobs in the Manager: start, follow on the event loop, cancel, keep until the
 * VM's next job or its deletion. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>

#include "log-vm.h"
#include "manager-private.h"
#include "vm-name.h"

void manager_notify_job(Manager *m, ManagerJobEvent event, ManagedJob *j, uint32_t index) {
        for (size_t i = 0; i < ELEMENTSOF(m->observers); i++) {
                const ManagerObserver *o = m->observers[i].ops;
                void *u = m->observers[i].userdata;

                if (!o)
                        continue;
                switch (event) {
                case MANAGER_JOB_ADDED:
                        if (o->job_added)
                                o->job_added(m, j, u);
                        break;
                case MANAGER_JOB_CHANGED:
                        if (o->job_changed)
                                o->job_changed(m, j, u);
                        break;
                case MANAGER_JOB_ITERATION:
                        if (o->job_iteration)
                                o->job_iteration(m, j, index, u);
                        break;
                case MANAGER_JOB_FINISHED:
                        if (o->job_finished)
                                o->job_finished(m, j, u);
                        break;
                case MANAGER_JOB_REMOVING:
                        if (o->job_removing)
                                o->job_removing(m, j, u);
                        break;
                }
        }
}

const char *managed_job_vm_name(const ManagedJob *j) {
        return managed_vm_get_name(j->vm);
}

void managed_job_get_stats(ManagedJob *j, MigrationStats *ret) {
        migration_job_get_stats(j->job, ret);
}

ManagedJob *manager_find_job(Manager *m, uint32_t id) {
        for (size_t i = 0; i < m->n_jobs; i++)
                if (m->jobs[i]->id == id)
                        return m->jobs[i];
        return NULL;
}

static ManagedJob *managed_job_free(ManagedJob *j) {
        if (!j)
                return NULL;
        j->event_source = sd_event_source_disable_unref(j->event_source);
        /* A job still running is cancelled and joined (daemon shutdown). */
        migration_job_free(j->job);
        free(j);
        return NULL;
}

void manager_remove_job(Manager *m, ManagedJob *j) {
        size_t i;

        manager_notify_job(m, MANAGER_JOB_REMOVING, j, 0);
        for (i = 0; i < m->n_jobs; i++)
                if (m->jobs[i] == j)
                        break;
        if (i < m->n_jobs) {
                memmove(m->jobs + i, m->jobs + i + 1, (m->n_jobs - i - 1) * sizeof *m->jobs);
                m->n_jobs--;
        }
        if (j->vm && j->vm->job == j)
                j->vm->job = NULL;
        managed_job_free(j);
}

static void job_log_end(ManagedJob *j) {
        MigrationStats st;
        char f_vm[sizeof("VM=") + VM_NAME_MAX], f_job[32], f_dt[48];

        migration_job_get_stats(j->job, &st);
        snprintf(f_vm, sizeof f_vm, "VM=%s", managed_job_vm_name(j));
        snprintf(f_job, sizeof f_job, "JOB=%" PRIu32, j->id);
        snprintf(f_dt, sizeof f_dt, "DOWNTIME_USEC=%" PRIu64, st.downtime_us);
        if (st.state == JOB_STATE_COMPLETED)
                log_struct_errno(LOG_INFO, 0, ((const char *const[]){ f_vm, f_job, f_dt, NULL }),
                                 "Job %" PRIu32 " (%s of VM %s) completed in %" PRIu64 " ms, downtime %" PRIu64
                                 " us, %" PRIu64 " bytes, %" PRIu32 " passes",
                                 j->id, job_operation_to_string(migration_job_get_operation(j->job)),
                                 managed_job_vm_name(j), st.elapsed_us / 1000, st.downtime_us,
                                 st.bytes_processed, st.iteration);
        else
                log_struct_errno(LOG_WARNING, 0, ((const char *const[]){ f_vm, f_job, NULL }),
                                 "Job %" PRIu32 " (%s of VM %s) %s: %s", j->id,
                                 job_operation_to_string(migration_job_get_operation(j->job)),
                                 managed_job_vm_name(j), job_state_to_string(st.state), st.error_message);
}

static void on_progress(MigrationJob *mj, void *userdata) {
        ManagedJob *j = userdata;
        manager_notify_job(j->manager, MANAGER_JOB_CHANGED, j, 0);
}

static void on_iteration(MigrationJob *mj, uint32_t index, void *userdata) {
        ManagedJob *j = userdata;
        manager_notify_job(j->manager, MANAGER_JOB_ITERATION, j, index);
}

static void on_finished(MigrationJob *mj, void *userdata) {
        ManagedJob *j = userdata;
        ManagedVm *v = j->vm;

        j->finished = true;
        v->job_active = false;
        v->completed_stats_taken = false;
        job_log_end(j);
        /* The VM's state callbacks for changes made on the job thread arrive through the
         * VM's event fd; the config of an incoming VM is known by now. */
        managed_vm_refresh_config(v);
        manager_notify_job(j->manager, MANAGER_JOB_FINISHED, j, 0);
        manager_notify(j->manager, MANAGER_EVENT_VM_STATE_CHANGED, v, v->state, v->state);
}

static const MigrationCallbacks job_callbacks = {
        .progress = on_progress,
        .iteration = on_iteration,
        .finished = on_finished,
};

static int on_job_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ManagedJob *j = userdata;

        migration_job_dispatch(j->job);
        return 0;
}

/* Takes a started MigrationJob into the Manager. */
static int manager_adopt_job(Manager *m, ManagedVm *v, MigrationJob *mj, uint32_t id, uint32_t uid,
                             ManagedJob **ret) {
        ManagedJob **a, *j;
        int r;

        a = reallocarray(m->jobs, m->n_jobs + 1, sizeof *m->jobs);
        if (!a)
                return -ENOMEM;
        m->jobs = a;
        j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        *j = (ManagedJob){ .manager = m, .id = id, .vm = v, .job = mj, .started_by_uid = uid };
        r = sd_event_add_io(m->event, &j->event_source, migration_job_get_event_fd(mj), EPOLLIN,
                            on_job_event, j);
        if (r < 0) {
                free(j);
                return r;
        }
        (void)sd_event_source_set_description(j->event_source, "migration-job");
        m->jobs[m->n_jobs++] = j;
        v->job = j;
        v->job_id = id;
        v->job_active = true;
        manager_notify_job(m, MANAGER_JOB_ADDED, j, 0);
        manager_notify(m, MANAGER_EVENT_VM_STATE_CHANGED, v, v->state, v->state);
        *ret = j;
        return 0;
}

/* The VM's previous job (finished) makes room for a new one. */
static void drop_previous_job(Manager *m, ManagedVm *v) {
        if (v->job && v->job->finished)
                manager_remove_job(m, v->job);
}

int manager_migrate(Manager *m, ManagedVm *v, const char *uri, const MigrationParams *p,
                    bool downtime_given, bool bandwidth_given, uint32_t uid, ManagedJob **ret,
                    char **ret_error) {
        const char *name = managed_vm_get_name(v);
        MigrationParams params = *p;
        MigrationJob *mj = NULL;
        VmState s = managed_vm_get_state(v);
        uint32_t id;
        int r;

        if (v->job_active)
                return manager_set_error(ret_error, -EBUSY, "Cannot migrate VM '%s': job %" PRIu32 " is running on it",
                                 name, v->job_id);
        if (s != VM_STATE_RUNNING && s != VM_STATE_PAUSED)
                return manager_set_error(ret_error, -EBADFD,
                                 "Cannot migrate VM '%s': it is %s, and only a running or paused VM can be sent",
                                 name, vm_state_to_string(s));
        if (!downtime_given)
                params.max_downtime_ms = v->max_downtime_ms;
        if (!bandwidth_given)
                params.max_bandwidth_mibps = v->max_speed_mibps;
        id = manager_allocate_job_id(m);
        if (id == 0)
                return manager_set_error(ret_error, -ENOSPC, "No job ids left");

        drop_previous_job(m, v);
        r = migration_out_start(v->vm, uri, &params, &job_callbacks, NULL, &mj);
        if (r == -EPROTONOSUPPORT)
                return manager_set_error(ret_error, -ERANGE,
                                 "Cannot migrate VM '%s': zerocopy=on needs a tcp: destination (the kernel has "
                                 "no zero-copy send on unix sockets); use zerocopy=auto or off",
                                 name);
        if (r == -EOPNOTSUPP)
                return manager_set_error(ret_error, -EOPNOTSUPP,
                                 "Cannot migrate VM '%s': zerocopy=on, but this kernel has no zero-copy send "
                                 "on io_uring (IORING_OP_SEND_ZC)",
                                 name);
        if (r == -EINVAL)
                return manager_set_error(ret_error, -ERANGE,
                                 "Cannot migrate VM '%s': \"%s\" is not a valid destination "
                                 "(tcp:HOST:PORT or unix:PATH) or the parameters are out of range",
                                 name, uri);
        if (r == -EADDRNOTAVAIL)
                return manager_set_error(ret_error, -ERANGE, "Cannot migrate VM '%s': cannot resolve the host of \"%s\"",
                                 name, uri);
        if (r < 0)
                return manager_set_error(ret_error, r, "Cannot migrate VM '%s': %s", name, strerror(-r));

        ManagedJob *j;
        r = manager_adopt_job(m, v, mj, id, uid, &j);
        if (r < 0) {
                migration_job_free(mj);
                return manager_set_error(ret_error, r, "Cannot migrate VM '%s': %s", name, strerror(-r));
        }
        /* The engine calls back with the ManagedJob from now on. */
        migration_job_set_userdata(mj, j);
        log_vm(LOG_INFO, name, "Job %" PRIu32 ": migrating VM %s to %s", id, name, uri);
        *ret = j;
        return 0;
}

int manager_receive_migration(Manager *m, const char *name, const char *uri, const IncomingParams *p,
                              uint32_t uid, ManagedVm **ret_vm, ManagedJob **ret_job,
                              char **ret_error) {
        MigrationJob *mj = NULL;
        ManagedVm **a, *v;
        ManagedJob *j;
        uint32_t id;
        int r;

        r = manager_can_create_vm(m, name, 0, ret_error);
        if (r < 0)
                return r;
        id = manager_allocate_job_id(m);
        if (id == 0)
                return manager_set_error(ret_error, -ENOSPC, "No job ids left");
        a = reallocarray(m->vms, m->n_vms + 1, sizeof *m->vms);
        if (!a)
                return manager_set_error(ret_error, -ENOMEM, "Out of memory");
        m->vms = a;
        r = managed_vm_new_incoming(m, name, &v);
        if (r < 0)
                return manager_set_error(ret_error, r, "Failed to create VM '%s': %s", name, strerror(-r));

        r = migration_in_start(v->vm, uri, p, &job_callbacks, NULL, &mj);
        if (r < 0) {
                managed_vm_free(v);
                if (r == -EINVAL || r == -EADDRNOTAVAIL)
                        return manager_set_error(ret_error, -ERANGE,
                                         "Cannot receive VM '%s': \"%s\" is not a valid address to listen on "
                                         "(tcp:HOST:PORT or unix:PATH)",
                                         name, uri);
                if (r == -EEXIST || r == -EADDRINUSE)
                        return manager_set_error(ret_error, -ERANGE,
                                         "Cannot receive VM '%s' on %s: %s (an existing path is never replaced, "
                                         "but for a stale socket of vmmd's own)",
                                         name, uri, r == -EEXIST ? "the path exists and is not a stale socket of ours"
                                                                 : "another process listens there");
                return manager_set_error(ret_error, r, "Cannot receive VM '%s' on %s: %s", name, uri, strerror(-r));
        }
        m->vms[m->n_vms++] = v;
        manager_notify(m, MANAGER_EVENT_VM_ADDED, v, _VM_STATE_INVALID, v->state);

        r = manager_adopt_job(m, v, mj, id, uid, &j);
        if (r < 0) {
                /* Unreachable in practice (allocation); leave the VM stopped, not half-owned. */
                migration_job_free(mj);
                return manager_set_error(ret_error, r, "Cannot receive VM '%s': %s", name, strerror(-r));
        }
        migration_job_set_userdata(mj, j);
        log_vm(LOG_INFO, name, "Job %" PRIu32 ": receiving VM %s on %s", id, name, uri);
        *ret_vm = v;
        *ret_job = j;
        return 0;
}

int managed_job_cancel(ManagedJob *j, char **ret_error) {
        int r = migration_job_cancel(j->job);

        if (r == -ESTALE)
                return manager_set_error(ret_error, -EBADFD, "Job %" PRIu32 " has already ended", j->id);
        if (r == -EBUSY)
                return manager_set_error(ret_error, -EBUSY,
                                 "Job %" PRIu32 " cannot be cancelled: the source has committed the switchover",
                                 j->id);
        if (r < 0)
                return manager_set_error(ret_error, r, "Failed to cancel job %" PRIu32 ": %s", j->id, strerror(-r));
        log_vm(LOG_INFO, managed_job_vm_name(j), "Job %" PRIu32 ": cancel requested", j->id);
        return 0;
}
