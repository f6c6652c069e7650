/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "macro.h"
#include "migration.h"
#include "vm.h"

/* The Manager: the set of VMs a daemon runs, their names and limits, and (with migration)
 * the job ids. Plain C over the VMM core, free of any bus code: the D-Bus layer (dbus/),
 * vmmctl's daemon and the tests all drive VMs through these calls, and learn about changes
 * through observers. Everything runs on the thread that owns the sd-event loop.
 *
 * Errors: every call returns 0 (or a positive value) or a negative errno, and, where a
 * person will read it, a message in *ret_error naming the VM and what was wrong:
 *   -EINVAL   bad name or bad config (message from the config parser names the key); a
 *             front end that tells the two apart checks vm_name_is_valid() first
 *   -E2BIG    the config text is larger than VM_CONFIG_MAX_JSON
 *   -EEXIST   a VM of that name exists
 *   -ENOSPC   the VM limit is reached
 *   -EBADFD   the call is not valid in the VM's current state (or no job is active)
 *   -EBUSY    the daemon is shutting down, or a job holds the VM
 *   -ENODEV   the VM has no console
 *   other     from the VMM core (e.g. -ENOENT when /dev/kvm is missing) */

#define MANAGER_MAX_VMS_DEFAULT 64U
#define MANAGER_MAX_VMS_LIMIT 4096U
#define MANAGER_OBSERVERS_MAX 4

/* Migration tunables kept per VM (libvirt's migrate-setmaxdowntime/-setspeed), used by the
 * VM's next migration. */
#define MANAGED_VM_MAX_DOWNTIME_MS_DEFAULT UINT64_C(300)
#define MANAGED_VM_MAX_DOWNTIME_MS_MAX (UINT64_C(3600) * 1000) /* 1 h */
#define MANAGED_VM_MAX_SPEED_MIBPS_MAX (UINT64_MAX / MiB)

typedef struct Manager Manager;
typedef struct ManagedVm ManagedVm;
typedef struct ManagedJob ManagedJob;

/* Calls made on the loop thread after a change. vm_removing is called while the VM is still
 * listed (so a bus layer can still describe it), vm_removed once it is gone.
 * vm_state_changed with old_state == new_state means that other properties of the VM (its
 * job, its console) changed. */
typedef struct ManagerObserver {
        void (*vm_added)(Manager *m, ManagedVm *v, void *userdata);
        void (*vm_removing)(Manager *m, ManagedVm *v, void *userdata);
        void (*vm_removed)(Manager *m, const char *name, void *userdata);
        void (*vm_state_changed)(Manager *m, ManagedVm *v, VmState old_state, VmState new_state,
                                 void *userdata);
        /* Jobs: added, statistics changed (as often as the job publishes: a front end
         * rate-limits), a precopy pass ended, reached its final state, about to be removed. */
        void (*job_added)(Manager *m, ManagedJob *j, void *userdata);
        void (*job_changed)(Manager *m, ManagedJob *j, void *userdata);
        void (*job_iteration)(Manager *m, ManagedJob *j, uint32_t index, void *userdata);
        void (*job_finished)(Manager *m, ManagedJob *j, void *userdata);
        void (*job_removing)(Manager *m, ManagedJob *j, void *userdata);
} ManagerObserver;

/* A migration job and its VM. A finished job stays (with its final statistics) until its VM
 * starts another job or is deleted. */
struct ManagedJob {
        Manager *manager;
        uint32_t id;
        ManagedVm *vm;
        MigrationJob *job;
        sd_event_source *event_source; /* on migration_job_get_event_fd() */
        uint32_t started_by_uid;
        bool finished;
};

struct ManagedVm {
        Manager *manager;
        Vm *vm;
        char *config_json;               /* canonical form, as read back by the Config property */
        sd_event_source *event_source;   /* on vm_get_event_fd() */
        VmState state;                   /* as last reported to the observers */
        uint32_t job_id;                 /* current or last job, 0 if none */
        bool job_active;
        ManagedJob *job;                 /* current or last job, NULL if none */
        bool completed_stats_taken;      /* GetJobStats(completed) without keep */
        uint64_t max_downtime_ms;
        uint64_t max_speed_mibps;        /* 0: unlimited */
};

struct Manager {
        sd_event *event;
        ManagedVm **vms; /* in creation order */
        size_t n_vms;
        unsigned max_vms;
        VmOptions vm_options; /* given to every VM this manager creates */
        uint32_t last_job_id; /* ids start at 1 and are never reused in a daemon's life */
        ManagedJob **jobs;
        size_t n_jobs;
        bool shutting_down;   /* refuse new VMs and Start */
        struct {
                const ManagerObserver *ops;
                void *userdata;
        } observers[MANAGER_OBSERVERS_MAX];
};

int manager_new(sd_event *event, Manager **ret);
Manager *manager_free(Manager *m); /* frees every VM: running ones are stopped by the core */
DEFINE_TRIVIAL_CLEANUP_FUNC(Manager *, manager_free);

int manager_set_max_vms(Manager *m, unsigned n);
void manager_set_vm_options(Manager *m, const VmOptions *options);
int manager_add_observer(Manager *m, const ManagerObserver *ops, void *userdata);
void manager_remove_observer(Manager *m, const ManagerObserver *ops, void *userdata);
void manager_set_shutting_down(Manager *m, bool b);

ManagedVm *manager_find_vm(Manager *m, const char *name);
size_t manager_count_vms(const Manager *m);
size_t manager_count_active_vms(const Manager *m); /* running, paused, incoming, ... */

/* Validates the name and the config (which reads the kernel: call it only for an authorized
 * caller), creates the VM in state 'created'. */
int manager_create_vm(Manager *m, const char *name, const char *config_json, ManagedVm **ret,
                      char **ret_error);
/* Cheap checks a front end may make before authorizing: name syntax, name free, VM limit,
 * config size. manager_create_vm() makes them again. */
int manager_can_create_vm(Manager *m, const char *name, size_t config_size, char **ret_error);
/* Only a VM that does not run (created, stopped, crashed, migrated) can be deleted. */
int manager_delete_vm(Manager *m, ManagedVm *v, char **ret_error);

/* Reserves the next job id (for migration jobs); 0 once all 2^32 - 1 are used. */
uint32_t manager_allocate_job_id(Manager *m);

/* Starts sending a running or paused VM. Params left at their defaults take the VM's
 * MigrateSetMaxDowntime/MigrateSetMaxSpeed values. Errors: -EBADFD wrong state, -EBUSY a
 * job runs, -EINVAL bad URI or parameters, others from the engine. */
int manager_migrate(Manager *m, ManagedVm *v, const char *uri, const MigrationParams *p,
                    bool downtime_given, bool bandwidth_given, uint32_t uid, ManagedJob **ret,
                    char **ret_error);
/* Creates VM 'name' in state incoming and listens on 'uri' for its migration. */
int manager_receive_migration(Manager *m, const char *name, const char *uri, const IncomingParams *p,
                              uint32_t uid, ManagedVm **ret_vm, ManagedJob **ret_job,
                              char **ret_error);
ManagedJob *manager_find_job(Manager *m, uint32_t id);
int managed_job_cancel(ManagedJob *j, char **ret_error);
void managed_job_get_stats(ManagedJob *j, MigrationStats *ret);
const char *managed_job_vm_name(const ManagedJob *j);

/* The lifecycle requests every front end makes (one control surface). */
typedef enum VmAction {
        VM_ACTION_START,
        VM_ACTION_PAUSE,
        VM_ACTION_RESUME,
        VM_ACTION_SHUTDOWN, /* guest-visible power-off request; the guest decides */
        VM_ACTION_STOP,     /* immediate */
        _VM_ACTION_MAX,
        _VM_ACTION_INVALID = -EINVAL,
} VmAction;

const char *vm_action_to_string(VmAction a);
VmAction vm_action_from_string(const char *s);
/* Whether 'a' is valid in state 's' (-EBADFD from managed_vm_act() otherwise). */
bool vm_action_allowed_in(VmAction a, VmState s);

int managed_vm_act(ManagedVm *v, VmAction a, char **ret_error);
int managed_vm_open_console(ManagedVm *v, int *ret_fd, char **ret_error);
int managed_vm_abort_job(ManagedVm *v, char **ret_error);
int managed_vm_set_max_downtime(ManagedVm *v, uint64_t ms, char **ret_error);
int managed_vm_set_max_speed(ManagedVm *v, uint64_t mibps, char **ret_error);

const char *managed_vm_get_name(const ManagedVm *v);
VmState managed_vm_get_state(const ManagedVm *v);
static inline bool vm_state_is_active(VmState s) {
        return s == VM_STATE_RUNNING || s == VM_STATE_PAUSED || s == VM_STATE_INCOMING ||
               s == VM_STATE_MIGRATION_UNKNOWN;
}
