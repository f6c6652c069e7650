/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Shared by manager.c and managed-vm.c only. */

#include "manager.h"

typedef enum ManagerEvent {
        MANAGER_EVENT_VM_ADDED,
        MANAGER_EVENT_VM_REMOVING,
        MANAGER_EVENT_VM_STATE_CHANGED,
} ManagerEvent;

typedef enum ManagerJobEvent {
        MANAGER_JOB_ADDED,
        MANAGER_JOB_CHANGED,
        MANAGER_JOB_ITERATION,
        MANAGER_JOB_FINISHED,
        MANAGER_JOB_REMOVING,
} ManagerJobEvent;

void manager_notify_job(Manager *m, ManagerJobEvent event, ManagedJob *j, uint32_t index);
/* Removes (and frees) a VM's finished job, telling the observers first. */
void manager_remove_job(Manager *m, ManagedJob *j);
int managed_vm_new_incoming(Manager *m, const char *name, ManagedVm **ret);
/* Re-reads the config of a VM whose config arrived late (incoming). */
void managed_vm_refresh_config(ManagedVm *v);

void manager_notify(Manager *m, ManagerEvent event, ManagedVm *v, VmState old_state,
                    VmState new_state);
void manager_notify_removed(Manager *m, const char *name);

int managed_vm_new(Manager *m, const char *name, const VmConfig *config, ManagedVm **ret);
ManagedVm *managed_vm_free(ManagedVm *v);

/* Sets *ret_error (if not NULL) to a formatted message and returns r. */
int manager_set_error(char **ret_error, int r, const char *format, ...) _printf_(3, 4);
