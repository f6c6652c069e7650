/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log-vm.h"
#include "manager-private.h"
#include "vm-name.h"

int manager_new(sd_event *event, Manager **ret) {
        Manager *m;

        if (!event || !ret)
                return -EINVAL;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(event);
        m->max_vms = MANAGER_MAX_VMS_DEFAULT;
        vm_options_init(&m->vm_options);
        *ret = m;
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;

        /* No observer calls here: whoever observed is being torn down too. Jobs go first:
         * a running one is cancelled and joined while its VM still exists. */
        while (m->n_jobs > 0) {
                ManagedJob *j = m->jobs[--m->n_jobs];
                if (j->vm)
                        j->vm->job = NULL;
                j->event_source = sd_event_source_disable_unref(j->event_source);
                migration_job_free(j->job);
                free(j);
        }
        free(m->jobs);
        while (m->n_vms > 0)
                managed_vm_free(m->vms[--m->n_vms]);
        free(m->vms);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

int manager_set_max_vms(Manager *m, unsigned n) {
        if (n == 0 || n > MANAGER_MAX_VMS_LIMIT)
                return -ERANGE;
        m->max_vms = n;
        return 0;
}

void manager_set_vm_options(Manager *m, const VmOptions *options) {
        m->vm_options = *options;
}

int manager_add_observer(Manager *m, const ManagerObserver *ops, void *userdata) {
        for (size_t i = 0; i < ELEMENTSOF(m->observers); i++)
                if (!m->observers[i].ops) {
                        m->observers[i].ops = ops;
                        m->observers[i].userdata = userdata;
                        return 0;
                }
        return -ENOSPC;
}

void manager_remove_observer(Manager *m, const ManagerObserver *ops, void *userdata) {
        for (size_t i = 0; i < ELEMENTSOF(m->observers); i++)
                if (m->observers[i].ops == ops && m->observers[i].userdata == userdata)
                        m->observers[i].ops = NULL;
}

void manager_notify(Manager *m, ManagerEvent event, ManagedVm *v, VmState old_state,
                    VmState new_state) {
        for (size_t i = 0; i < ELEMENTSOF(m->observers); i++) {
                const ManagerObserver *o = m->observers[i].ops;
                void *u = m->observers[i].userdata;

                if (!o)
                        continue;
                switch (event) {
                case MANAGER_EVENT_VM_ADDED:
                        if (o->vm_added)
                                o->vm_added(m, v, u);
                        break;
                case MANAGER_EVENT_VM_REMOVING:
                        if (o->vm_removing)
                                o->vm_removing(m, v, u);
                        break;
                case MANAGER_EVENT_VM_STATE_CHANGED:
                        if (o->vm_state_changed)
                                o->vm_state_changed(m, v, old_state, new_state, u);
                        break;
                }
        }
}

void manager_notify_removed(Manager *m, const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(m->observers); i++) {
                const ManagerObserver *o = m->observers[i].ops;

                if (o && o->vm_removed)
                        o->vm_removed(m, name, m->observers[i].userdata);
        }
}

void manager_set_shutting_down(Manager *m, bool b) {
        m->shutting_down = b;
}

ManagedVm *manager_find_vm(Manager *m, const char *name) {
        if (!name)
                return NULL;
        for (size_t i = 0; i < m->n_vms; i++)
                if (strcmp(managed_vm_get_name(m->vms[i]), name) == 0)
                        return m->vms[i];
        return NULL;
}

size_t manager_count_vms(const Manager *m) {
        return m->n_vms;
}

size_t manager_count_active_vms(const Manager *m) {
        size_t n = 0;

        for (size_t i = 0; i < m->n_vms; i++)
                if (vm_state_is_active(managed_vm_get_state(m->vms[i])))
                        n++;
        return n;
}

int manager_set_error(char **ret_error, int r, const char *format, ...) {
        va_list ap;

        if (ret_error) {
                va_start(ap, format);
                if (vasprintf(ret_error, format, ap) < 0)
                        *ret_error = NULL;
                va_end(ap);
        }
        return r;
}

int manager_can_create_vm(Manager *m, const char *name, size_t config_size, char **ret_error) {
        if (m->shutting_down)
                return manager_set_error(ret_error, -EBUSY, "vmmd is shutting down and accepts no new VMs");
        if (!vm_name_is_valid(name))
                return manager_set_error(ret_error, -EINVAL,
                                 "Invalid VM name: use 1 to %u characters from A-Z, a-z, 0-9, "
                                 "'_', '.' and '-', not starting with '.' or '-'",
                                 VM_NAME_MAX);
        if (manager_find_vm(m, name))
                return manager_set_error(ret_error, -EEXIST, "A VM named '%s' already exists", name);
        if (m->n_vms >= m->max_vms)
                return manager_set_error(ret_error, -ENOSPC,
                                 "Cannot create VM '%s': this daemon already has %zu VMs, the "
                                 "limit",
                                 name, m->n_vms);
        if (config_size > VM_CONFIG_MAX_JSON)
                return manager_set_error(ret_error, -E2BIG,
                                 "Invalid config for VM '%s': %zu bytes, more than the limit of "
                                 "%u bytes",
                                 name, config_size, (unsigned)VM_CONFIG_MAX_JSON);
        return 0;
}

int manager_create_vm(Manager *m, const char *name, const char *config_json, ManagedVm **ret,
                      char **ret_error) {
        _cleanup_(vm_config_freep) VmConfig *config = NULL;
        _cleanup_free_ char *parse_error = NULL;
        ManagedVm **a;
        ManagedVm *v;
        int r;

        if (!config_json)
                return manager_set_error(ret_error, -EINVAL, "Invalid config: none given");
        r = manager_can_create_vm(m, name, strlen(config_json), ret_error);
        if (r < 0)
                return r;

        r = vm_config_parse(config_json, &config, &parse_error);
        if (r < 0)
                return manager_set_error(ret_error, r, "Invalid config for VM '%s': %s", name,
                                 parse_error ?: strerror(-r));

        a = reallocarray(m->vms, m->n_vms + 1, sizeof *m->vms);
        if (!a)
                return manager_set_error(ret_error, -ENOMEM, "Out of memory");
        m->vms = a;

        r = managed_vm_new(m, name, config, &v);
        if (r < 0)
                return manager_set_error(ret_error, r, "Failed to create VM '%s': %s", name,
                                 strerror(-r));

        m->vms[m->n_vms++] = v;
        log_vm(LOG_INFO, name, "Created VM %s (%u vCPUs, %" PRIu64 " MiB, %s kernel %s)", name,
               config->vcpus, config->memory_mib, kernel_format_to_string(config->kernel_format),
               config->kernel);
        manager_notify(m, MANAGER_EVENT_VM_ADDED, v, _VM_STATE_INVALID, v->state);
        if (ret)
                *ret = v;
        return 0;
}

int manager_delete_vm(Manager *m, ManagedVm *v, char **ret_error) {
        char name[VM_NAME_MAX + 1];
        VmState s = managed_vm_get_state(v);
        size_t i;

        if (vm_state_is_active(s))
                return manager_set_error(ret_error, -EBADFD,
                                 "Cannot delete VM '%s': it is %s; stop it first",
                                 managed_vm_get_name(v), vm_state_to_string(s));
        if (v->job_active)
                return manager_set_error(ret_error, -EBUSY,
                                 "Cannot delete VM '%s': job %" PRIu32 " is still running",
                                 managed_vm_get_name(v), v->job_id);

        snprintf(name, sizeof name, "%s", managed_vm_get_name(v));
        for (i = 0; i < m->n_vms; i++)
                if (m->vms[i] == v)
                        break;
        if (i >= m->n_vms)
                return manager_set_error(ret_error, -ENXIO, "No VM named '%s'", name);

        if (v->job)
                manager_remove_job(m, v->job); /* finished: a job goes with its VM */
        manager_notify(m, MANAGER_EVENT_VM_REMOVING, v, s, s);
        log_vm(LOG_INFO, name, "Deleted VM %s", name);

        memmove(m->vms + i, m->vms + i + 1, (m->n_vms - i - 1) * sizeof *m->vms);
        m->n_vms--;
        managed_vm_free(v);
        manager_notify_removed(m, name);
        return 0;
}

uint32_t manager_allocate_job_id(Manager *m) {
        /* Ids are never reused: after 2^32 - 1 jobs there are none left (0). */
        if (m->last_job_id == UINT32_MAX)
                return 0;
        return ++m->last_job_id;
}
