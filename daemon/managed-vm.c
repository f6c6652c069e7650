/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "log-vm.h"
#include "manager-private.h"

/* Which states each action is valid in is the core's table (vmm/vm-state.c): the D-Bus
 * API allows an action only where it changes something (Pause() of a paused VM is
 * InvalidState), the core's own calls take "already there" as success. */
static const struct {
        const char *verb;
        int (*call)(Vm *vm);
} action_table[_VM_ACTION_MAX] = {
        [VM_ACTION_START] = { "start", vm_start },
        [VM_ACTION_PAUSE] = { "pause", vm_pause },
        [VM_ACTION_RESUME] = { "resume", vm_resume },
        [VM_ACTION_SHUTDOWN] = { "shutdown", vm_request_shutdown },
        [VM_ACTION_STOP] = { "stop", vm_stop },
};

_Static_assert((int)VM_ACTION_START == (int)VM_REQUEST_START, "VmAction follows VmRequest");
_Static_assert((int)VM_ACTION_PAUSE == (int)VM_REQUEST_PAUSE, "VmAction follows VmRequest");
_Static_assert((int)VM_ACTION_RESUME == (int)VM_REQUEST_RESUME, "VmAction follows VmRequest");
_Static_assert((int)VM_ACTION_SHUTDOWN == (int)VM_REQUEST_SHUTDOWN, "VmAction follows VmRequest");
_Static_assert((int)VM_ACTION_STOP == (int)VM_REQUEST_STOP, "VmAction follows VmRequest");
_Static_assert((int)_VM_ACTION_MAX == (int)_VM_REQUEST_MAX, "VmAction follows VmRequest");

const char *vm_action_to_string(VmAction a) {
        return vm_request_to_string((VmRequest)a);
}

VmAction vm_action_from_string(const char *s) {
        VmRequest r = vm_request_from_string(s);
        return r < 0 ? _VM_ACTION_INVALID : (VmAction)r;
}

bool vm_action_allowed_in(VmAction a, VmState s) {
        return vm_request_transition((VmRequest)a, s) == VM_TRANSITION_ALLOWED;
}

const char *managed_vm_get_name(const ManagedVm *v) {
        return vm_get_name(v->vm);
}

VmState managed_vm_get_state(const ManagedVm *v) {
        return vm_get_state(v->vm);
}

static int managed_vm_on_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        ManagedVm *v = userdata;
        int r;

        if (revents & (EPOLLHUP | EPOLLERR)) {
                log_vm(LOG_WARNING, managed_vm_get_name(v),
                       "Event fd of VM %s hung up, ignoring it", managed_vm_get_name(v));
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        }

        r = vm_dispatch_events(v->vm);
        if (r < 0)
                log_vm_errno(LOG_WARNING, r, managed_vm_get_name(v),
                             "Failed to handle events of VM %s: %m", managed_vm_get_name(v));
        return 0;
}

/* Watches the VM's event fd. Written so that it does not matter whether the core keeps one
 * fd for the VM's life or makes a new one on each start. */
static int managed_vm_sync_event_source(ManagedVm *v) {
        int fd = vm_get_event_fd(v->vm), r;

        if (v->event_source) {
                if (fd >= 0 && sd_event_source_get_io_fd(v->event_source) == fd)
                        return 0;
                v->event_source = sd_event_source_disable_unref(v->event_source);
        }
        if (fd < 0)
                return 0;

        r = sd_event_add_io(v->manager->event, &v->event_source, fd, EPOLLIN, managed_vm_on_event,
                            v);
        if (r < 0)
                return log_vm_errno(LOG_ERR, r, managed_vm_get_name(v),
                                    "Failed to watch events of VM %s: %m",
                                    managed_vm_get_name(v));
        (void)sd_event_source_set_description(v->event_source, "vm-events");
        return 0;
}

/* Tells the observers about a state the core reached, once, whether it came through the
 * state callback or synchronously from a call. */
static void managed_vm_refresh_state(ManagedVm *v) {
        VmState old_state = v->state, new_state = vm_get_state(v->vm);

        (void)managed_vm_sync_event_source(v);
        if (new_state == old_state)
                return;

        v->state = new_state;
        {
                char f_vm[sizeof("VM=") + VM_NAME_MAX], f_state[64];
                snprintf(f_vm, sizeof f_vm, "VM=%s", managed_vm_get_name(v));
                snprintf(f_state, sizeof f_state, "VM_STATE=%s", vm_state_to_string(new_state));
                log_struct_errno(new_state == VM_STATE_CRASHED ? LOG_WARNING : LOG_INFO, 0,
                                 ((const char *const[]){ f_vm, f_state, NULL }),
                                 "VM %s is now %s (was %s)", managed_vm_get_name(v),
                                 vm_state_to_string(new_state), vm_state_to_string(old_state));
        }
        manager_notify(v->manager, MANAGER_EVENT_VM_STATE_CHANGED, v, old_state, new_state);
}

void managed_vm_refresh_config(ManagedVm *v) {
        const VmConfig *c = vm_get_config(v->vm);
        char *json;

        if (!c || (v->config_json && v->config_json[0]))
                return;
        json = vm_config_to_json(c);
        if (!json)
                return;
        free(v->config_json);
        v->config_json = json;
}

static void managed_vm_on_state(Vm *vm, VmState old_state, VmState new_state, void *userdata) {
        ManagedVm *v = userdata;

        managed_vm_refresh_config(v);

        /* old == new: the core says that something other than the state changed (a job's
         * progress, the console): pass it on as a "change" without a new state. */
        if (old_state == new_state && new_state == v->state) {
                manager_notify(v->manager, MANAGER_EVENT_VM_STATE_CHANGED, v, v->state, v->state);
                return;
        }
        managed_vm_refresh_state(v);
}

/* Wraps a core VM (taking it over on success); config_json is "" until a config exists. */
static int managed_vm_wrap(Manager *m, Vm **vm, ManagedVm **ret) {
        const VmConfig *c = vm_get_config(*vm);
        ManagedVm *v;

        v = calloc(1, sizeof *v);
        if (!v)
                return -ENOMEM;
        v->manager = m;
        v->max_downtime_ms = MANAGED_VM_MAX_DOWNTIME_MS_DEFAULT;
        v->config_json = c ? vm_config_to_json(c) : strdup("");
        if (!v->config_json) {
                free(v);
                return -ENOMEM;
        }
        v->vm = TAKE_PTR(*vm);
        v->state = vm_get_state(v->vm);
        vm_set_state_callback(v->vm, managed_vm_on_state, v);
        (void)managed_vm_sync_event_source(v);
        *ret = v;
        return 0;
}

int managed_vm_new(Manager *m, const char *name, const VmConfig *config, ManagedVm **ret) {
        _cleanup_(vm_freep) Vm *vm = NULL;
        int r;

        r = vm_new(name, config, &vm);
        if (r < 0)
                return r;
        vm_set_options(vm, &m->vm_options);
        return managed_vm_wrap(m, &vm, ret);
}

/* A VM that receives a migration: no config until the source sends it. */
int managed_vm_new_incoming(Manager *m, const char *name, ManagedVm **ret) {
        _cleanup_(vm_freep) Vm *vm = NULL;
        int r;

        r = vm_new_incoming(name, &vm);
        if (r < 0)
                return r;
        vm_set_options(vm, &m->vm_options);
        return managed_vm_wrap(m, &vm, ret);
}

ManagedVm *managed_vm_free(ManagedVm *v) {
        if (!v)
                return NULL;
        v->event_source = sd_event_source_disable_unref(v->event_source);
        if (v->vm) {
                /* vm_free() stops a running VM: no callbacks into a half-freed object. */
                vm_set_state_callback(v->vm, NULL, NULL);
                if (vm_state_is_active(vm_get_state(v->vm)))
                        log_vm(LOG_NOTICE, vm_get_name(v->vm), "Stopping VM %s",
                               vm_get_name(v->vm));
                vm_free(v->vm);
        }
        free(v->config_json);
        free(v);
        return NULL;
}

int managed_vm_act(ManagedVm *v, VmAction a, char **ret_error) {
        const char *name = managed_vm_get_name(v);
        VmState s = managed_vm_get_state(v);
        int r;

        if (a < 0 || a >= _VM_ACTION_MAX)
                return manager_set_error(ret_error, -EINVAL, "Unknown action");
        if (a == VM_ACTION_START && v->manager->shutting_down)
                return manager_set_error(ret_error, -EBUSY,
                                 "Cannot start VM '%s': vmmd is shutting down", name);
        if (v->job_active && a != VM_ACTION_STOP)
                return manager_set_error(ret_error, -EBUSY,
                                 "Cannot %s VM '%s': job %" PRIu32 " is running on it; abort "
                                 "the job first",
                                 action_table[a].verb, name, v->job_id);
        if (a == VM_ACTION_START && !vm_get_config(v->vm))
                return manager_set_error(ret_error, -EBADFD,
                                 "Cannot start VM '%s': it has no configuration (its incoming "
                                 "migration ended before the source sent one); delete it",
                                 name);
        if (!vm_action_allowed_in(a, s)) {
                char allowed[128];

                (void)vm_request_allowed_states((VmRequest)a, allowed, sizeof allowed);
                return manager_set_error(ret_error, -EBADFD,
                                 "Cannot %s VM '%s': it is %s, and %s needs a VM that is %s",
                                 action_table[a].verb, name, vm_state_to_string(s),
                                 action_table[a].verb, allowed);
        }

        r = action_table[a].call(v->vm);
        managed_vm_refresh_state(v);
        if (r < 0) {
                if (a == VM_ACTION_START && access("/dev/kvm", R_OK | W_OK) < 0)
                        return manager_set_error(ret_error, r,
                                         "Failed to start VM '%s': KVM is not available "
                                         "(/dev/kvm: %s)",
                                         name, strerror(errno));
                return manager_set_error(ret_error, r, "Failed to %s VM '%s': %s", action_table[a].verb,
                                 name, strerror(-r));
        }

        if (a == VM_ACTION_SHUTDOWN)
                log_vm(LOG_INFO, name, "Asked the guest of VM %s to power off", name);
        return 0;
}

int managed_vm_open_console(ManagedVm *v, int *ret_fd, char **ret_error) {
        const char *name = managed_vm_get_name(v);
        int fd = -EBADF, r;

        r = vm_open_console(v->vm, &fd);
        if (r == -ENODEV) {
                if (vm_get_config(v->vm) && vm_get_config(v->vm)->serial_mode == SERIAL_MODE_NONE)
                        return manager_set_error(ret_error, r,
                                         "VM '%s' has no console: its serial mode is \"none\"",
                                         name);
                return manager_set_error(ret_error, r, "The console of VM '%s' is not available while it is %s",
                                 name, vm_state_to_string(managed_vm_get_state(v)));
        }
        if (r < 0)
                return manager_set_error(ret_error, r, "Failed to open the console of VM '%s': %s", name,
                                 strerror(-r));
        *ret_fd = fd;
        return 0;
}

int managed_vm_abort_job(ManagedVm *v, char **ret_error) {
        if (!v->job_active || !v->job)
                return manager_set_error(ret_error, -EBADFD, "No job is active on VM '%s'",
                                 managed_vm_get_name(v));
        return managed_job_cancel(v->job, ret_error);
}

int managed_vm_set_max_downtime(ManagedVm *v, uint64_t ms, char **ret_error) {
        if (ms == 0 || ms > MANAGED_VM_MAX_DOWNTIME_MS_MAX)
                return manager_set_error(ret_error, -ERANGE,
                                 "Maximum downtime must be between 1 and %" PRIu64 " ms, got %" PRIu64,
                                 MANAGED_VM_MAX_DOWNTIME_MS_MAX, ms);
        v->max_downtime_ms = ms;
        /* As libvirt does: a running migration takes the new limit at once. */
        bool live = v->job_active && v->job && migration_job_set_max_downtime(v->job->job, ms) == 0;
        log_vm(LOG_INFO, managed_vm_get_name(v), "Maximum migration downtime of VM %s set to %" PRIu64 " ms%s",
               managed_vm_get_name(v), ms, live ? ", also for the running job" : "");
        return 0;
}

int managed_vm_set_max_speed(ManagedVm *v, uint64_t mibps, char **ret_error) {
        if (mibps > MANAGED_VM_MAX_SPEED_MIBPS_MAX)
                return manager_set_error(ret_error, -ERANGE,
                                 "Maximum migration speed must be at most %" PRIu64 " MiB/s",
                                 MANAGED_VM_MAX_SPEED_MIBPS_MAX);
        v->max_speed_mibps = mibps;
        bool live = v->job_active && v->job && migration_job_set_max_bandwidth(v->job->job, mibps) == 0;
        log_vm(LOG_INFO, managed_vm_get_name(v), "Maximum migration speed of VM %s set to %" PRIu64 " MiB/s%s%s",
               managed_vm_get_name(v), mibps, mibps == 0 ? " (unlimited)" : "",
               live ? ", also for the running job" : "");
        return 0;
}
