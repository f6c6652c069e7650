/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <string.h>

#include "bus-errors.h"
#include "bus-polkit.h"
#include "bus-service.h"
#include "log.h"

/* org.vmmd.VMM1.VM on /org/vmmd/VMM1/vm/<name escaped with sd_bus_path_encode()>. */

/* libvirt's virDomainGetJobStats() flags and job types */
#define JOB_STATS_COMPLETED 1U
#define JOB_STATS_KEEP_COMPLETED 2U
#define JOB_TYPE_NONE 0

int bus_vm_path(const char *name, char **ret) {
        return sd_bus_path_encode(VMMD_VM_PATH_PREFIX, name, ret);
}

static ManagedVm *bus_vm_lookup(BusService *s, const char *path) {
        _cleanup_free_ char *name = NULL;

        if (sd_bus_path_decode(path, VMMD_VM_PATH_PREFIX, &name) <= 0)
                return NULL;
        return manager_find_vm(s->manager, name);
}

int bus_vm_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                void **ret_found, sd_bus_error *error) {
        ManagedVm *v = bus_vm_lookup(userdata, path);

        if (!v)
                return 0;
        *ret_found = v;
        return 1;
}

int bus_vm_enumerate(sd_bus *bus, const char *path, void *userdata, char ***ret_nodes,
                     sd_bus_error *error) {
        BusService *s = userdata;
        Manager *m = s->manager;
        char **nodes;
        int r;

        nodes = calloc(m->n_vms + 1, sizeof *nodes);
        if (!nodes)
                return -ENOMEM;
        for (size_t i = 0; i < m->n_vms; i++) {
                r = bus_vm_path(managed_vm_get_name(m->vms[i]), &nodes[i]);
                if (r < 0) {
                        for (size_t j = 0; j < i; j++)
                                free(nodes[j]);
                        free(nodes);
                        return r;
                }
        }
        *ret_nodes = nodes;
        return 0;
}

/* After an authorization the VM is looked up again: it may have gone meanwhile. */
static int bus_vm_from_call(BusService *s, sd_bus_message *m, ManagedVm **ret,
                            sd_bus_error *error) {
        ManagedVm *v = bus_vm_lookup(s, sd_bus_message_get_path(m));

        if (!v)
                return sd_bus_error_setf(error, VMMD_ERROR_NO_SUCH_VM,
                                         "The VM of %s no longer exists",
                                         sd_bus_message_get_path(m));
        *ret = v;
        return 0;
}

/* --- properties --- */

static int property_get_name(sd_bus *bus, const char *path, const char *interface,
                             const char *property, sd_bus_message *reply, void *userdata,
                             sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", managed_vm_get_name(userdata));
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface,
                              const char *property, sd_bus_message *reply, void *userdata,
                              sd_bus_error *error) {
        return sd_bus_message_append(reply, "s",
                                     vm_state_to_string(managed_vm_get_state(userdata)));
}

static int property_get_vcpus(sd_bus *bus, const char *path, const char *interface,
                              const char *property, sd_bus_message *reply, void *userdata,
                              sd_bus_error *error) {
        ManagedVm *v = userdata;
        const VmConfig *c = vm_get_config(v->vm);
        return sd_bus_message_append(reply, "u", (uint32_t)(c ? c->vcpus : 0));
}

static int property_get_memory_bytes(sd_bus *bus, const char *path, const char *interface,
                                     const char *property, sd_bus_message *reply, void *userdata,
                                     sd_bus_error *error) {
        ManagedVm *v = userdata;
        const VmConfig *c = vm_get_config(v->vm);
        return sd_bus_message_append(reply, "t", c ? c->memory_mib * MiB : 0);
}

static int property_get_config(sd_bus *bus, const char *path, const char *interface,
                               const char *property, sd_bus_message *reply, void *userdata,
                               sd_bus_error *error) {
        ManagedVm *v = userdata;
        return sd_bus_message_append(reply, "s", v->config_json);
}

static int property_get_job(sd_bus *bus, const char *path, const char *interface,
                            const char *property, sd_bus_message *reply, void *userdata,
                            sd_bus_error *error) {
        ManagedVm *v = userdata;
        char p[sizeof(VMMD_JOB_PATH_PREFIX "/") + 10];

        if (v->job_id == 0)
                return sd_bus_message_append(reply, "o", "/");
        snprintf(p, sizeof p, VMMD_JOB_PATH_PREFIX "/%" PRIu32, v->job_id);
        return sd_bus_message_append(reply, "o", p);
}

static int property_get_console_path(sd_bus *bus, const char *path, const char *interface,
                                     const char *property, sd_bus_message *reply,
                                     void *userdata, sd_bus_error *error) {
        ManagedVm *v = userdata;
        const char *p = vm_get_console_path(v->vm);
        return sd_bus_message_append(reply, "s", p ?: "");
}

/* --- lifecycle --- */

static const struct {
        const char *member;
        VmAction action;
} action_members[] = {
        { "Start", VM_ACTION_START },       { "Pause", VM_ACTION_PAUSE },
        { "Resume", VM_ACTION_RESUME },     { "Shutdown", VM_ACTION_SHUTDOWN },
        { "Stop", VM_ACTION_STOP },
};

static VmAction action_of_call(sd_bus_message *m) {
        const char *member = sd_bus_message_get_member(m);

        for (size_t i = 0; member && i < ELEMENTSOF(action_members); i++)
                if (strcmp(action_members[i].member, member) == 0)
                        return action_members[i].action;
        return _VM_ACTION_INVALID;
}

static int vm_action_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        ManagedVm *v;
        int r;

        r = bus_vm_from_call(s, m, &v, error);
        if (r < 0)
                return r;
        r = managed_vm_act(v, action_of_call(m), &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_vm_action(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ManagedVm *v = userdata;
        VmAction a = action_of_call(m);

        if (a < 0)
                return -EINVAL;
        return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MANAGE,
                             managed_vm_get_name(v), vm_action_to_string(a), vm_action_authorized,
                             error);
}

static int delete_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        ManagedVm *v;
        int r;

        r = bus_vm_from_call(s, m, &v, error);
        if (r < 0)
                return r;
        r = manager_delete_vm(s->manager, v, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_delete(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MANAGE,
                             managed_vm_get_name(userdata), "delete", delete_authorized, error);
}

static int open_console_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        _cleanup_close_ int fd = -EBADF;
        ManagedVm *v;
        int r;

        r = bus_vm_from_call(s, m, &v, error);
        if (r < 0)
                return r;
        r = managed_vm_open_console(v, &fd, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        /* sd-bus duplicates the fd into the message. */
        return sd_bus_reply_method_return(m, "h", fd);
}

static int method_open_console(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        /* The console takes input too: as privileged as the lifecycle calls. */
        return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MANAGE,
                             managed_vm_get_name(userdata), "console", open_console_authorized,
                             error);
}

/* --- migration and jobs (libvirt-shaped) --- */

/* Reads Migrate's a{sv} options: every key known and of its type, every value in range. */
static int read_migrate_options(sd_bus_message *m, MigrationParams *p, bool *downtime_given,
                                bool *bandwidth_given, sd_bus_error *error) {
        int r;

        migration_params_init(p);
        *downtime_given = *bandwidth_given = false;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *type;
                char t;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, NULL, &type);
                if (r < 0)
                        return r;
                t = strcmp(key, "connections") == 0      ? 'u'
                    : strcmp(key, "auto_converge") == 0  ? 'b'
                    : strcmp(key, "zerocopy") == 0       ? 's'
                    : strcmp(key, "max_downtime_ms") == 0 || strcmp(key, "max_bandwidth_mibps") == 0 ||
                                      strcmp(key, "timeout_s") == 0 || strcmp(key, "switchover_timeout_ms") == 0
                            ? 't'
                            : 0;
                if (!t)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown option '%s' (known: max_downtime_ms, max_bandwidth_mibps, "
                                                 "connections, auto_converge, timeout_s, zerocopy, switchover_timeout_ms)",
                                                 key);
                if (strlen(type) != 1 || type[0] != t)
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Option '%s' must be of type '%c', got '%s'", key, t, type);
                r = sd_bus_message_enter_container(m, 'v', type);
                if (r < 0)
                        return r;
                if (t == 't') {
                        uint64_t v;
                        r = sd_bus_message_read(m, "t", &v);
                        if (r < 0)
                                return r;
                        if (strcmp(key, "max_downtime_ms") == 0) {
                                if (v == 0 || v > MANAGED_VM_MAX_DOWNTIME_MS_MAX)
                                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                                 "max_downtime_ms must be between 1 and %" PRIu64,
                                                                 MANAGED_VM_MAX_DOWNTIME_MS_MAX);
                                p->max_downtime_ms = v;
                                *downtime_given = true;
                        } else if (strcmp(key, "max_bandwidth_mibps") == 0) {
                                if (v > MANAGED_VM_MAX_SPEED_MIBPS_MAX)
                                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                                 "max_bandwidth_mibps is too large");
                                p->max_bandwidth_mibps = v;
                                *bandwidth_given = true;
                        } else if (strcmp(key, "switchover_timeout_ms") == 0) {
                                if (v > MIGRATION_SWITCHOVER_TIMEOUT_MAX_MS)
                                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                                 "switchover_timeout_ms must be at most %d (0: derived "
                                                                 "from max_downtime_ms)",
                                                                 MIGRATION_SWITCHOVER_TIMEOUT_MAX_MS);
                                p->switchover_timeout_ms = v;
                        } else
                                p->timeout_s = v;
                } else if (t == 'u') {
                        uint32_t v;
                        r = sd_bus_message_read(m, "u", &v);
                        if (r < 0)
                                return r;
                        if (v < 1 || v > MIGRATION_MAX_CONNECTIONS)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "connections must be between 1 and %d, got %" PRIu32,
                                                         MIGRATION_MAX_CONNECTIONS, v);
                        p->connections = v;
                } else if (t == 'b') {
                        int v;
                        r = sd_bus_message_read(m, "b", &v);
                        if (r < 0)
                                return r;
                        p->auto_converge = v;
                } else {
                        const char *v;
                        r = sd_bus_message_read(m, "s", &v);
                        if (r < 0)
                                return r;
                        if (zerocopy_mode_from_string(v, &p->zerocopy) < 0)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "zerocopy must be \"auto\", \"on\" or \"off\", got \"%s\"", v);
                }
                r = sd_bus_message_exit_container(m);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int migrate_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL, *path = NULL;
        MigrationParams p;
        bool downtime_given, bandwidth_given;
        const char *uri;
        ManagedVm *v;
        ManagedJob *j;
        uid_t uid = 0;
        int r;

        r = bus_vm_from_call(s, m, &v, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(m, "s", &uri);
        if (r < 0)
                return r;
        r = read_migrate_options(m, &p, &downtime_given, &bandwidth_given, error);
        if (r < 0)
                return r;
        (void)bus_caller_uid(m, &uid);
        r = manager_migrate(s->manager, v, uri, &p, downtime_given, bandwidth_given, (uint32_t)uid, &j, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        r = bus_job_path(j->id, &path);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "o", path);
}

static int method_migrate(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        MigrationParams p;
        bool a, b;
        const char *uri;
        int r;

        /* Arguments are checked before asking polkit, and read again afterwards. */
        r = sd_bus_message_read(m, "s", &uri);
        if (r < 0)
                return r;
        r = read_migrate_options(m, &p, &a, &b, error);
        if (r < 0)
                return r;
        return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MIGRATE, managed_vm_get_name(userdata),
                             "migrate", migrate_authorized, error);
}

static int read_job_stats_flags(sd_bus_message *m, uint32_t *ret, sd_bus_error *error) {
        uint32_t flags;
        int r;

        r = sd_bus_message_read(m, "u", &flags);
        if (r < 0)
                return r;
        if (flags & ~(JOB_STATS_COMPLETED | JOB_STATS_KEEP_COMPLETED))
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown flags 0x%" PRIx32 " (known: 1 completed, 2 "
                                         "keep completed)",
                                         flags);
        if ((flags & JOB_STATS_KEEP_COMPLETED) && !(flags & JOB_STATS_COMPLETED))
                return sd_bus_error_set(error, SD_BUS_ERROR_INVALID_ARGS,
                                        "Flag 2 (keep completed) needs flag 1 (completed)");
        *ret = flags;
        return 0;
}

static int reply_job_stats(sd_bus_message *m, ManagedVm *v, uint32_t flags) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        ManagedJob *j = v->job;
        int r;

        /* Without flags: the active job. With "completed": the last finished one, which
         * without "keep" is then no longer reported (the Job object itself stays). */
        if (j && (flags & JOB_STATS_COMPLETED) ? (!j->finished || v->completed_stats_taken) : (!j || j->finished))
                j = NULL;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "i", (int32_t)(j ? bus_job_libvirt_type(j) : JOB_TYPE_NONE));
        if (r < 0)
                return r;
        if (j)
                r = bus_append_libvirt_stats(reply, j);
        else {
                r = sd_bus_message_open_container(reply, 'a', "{sv}");
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        }
        if (r < 0)
                return r;
        if (j && (flags & JOB_STATS_COMPLETED) && !(flags & JOB_STATS_KEEP_COMPLETED))
                v->completed_stats_taken = true;
        return sd_bus_send(NULL, reply, NULL);
}

static int get_job_stats_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        ManagedVm *v;
        uint32_t flags;
        int r;

        r = bus_vm_from_call(s, m, &v, error);
        if (r < 0)
                return r;
        r = read_job_stats_flags(m, &flags, error);
        if (r < 0)
                return r;
        return reply_job_stats(m, v, flags);
}

static int method_get_job_stats(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ManagedVm *v = userdata;
        uint32_t flags;
        int r;

        r = read_job_stats_flags(m, &flags, error);
        if (r < 0)
                return r;
        /* Taking the last finished job's statistics (flag 1 without 2) changes what the
         * next caller gets: as privileged as AbortJob. Reading is open. */
        if (flags == JOB_STATS_COMPLETED && v->job && v->job->finished && !v->completed_stats_taken)
                return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MIGRATE, managed_vm_get_name(v),
                                     "get-job-stats", get_job_stats_authorized, error);
        return reply_job_stats(m, v, flags);
}

static int abort_job_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        ManagedVm *v;
        int r;

        r = bus_vm_from_call(s, m, &v, error);
        if (r < 0)
                return r;
        r = managed_vm_abort_job(v, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_abort_job(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MIGRATE,
                             managed_vm_get_name(userdata), "abort-job", abort_job_authorized,
                             error);
}

static int read_value_and_flags(sd_bus_message *m, uint64_t *ret_value, sd_bus_error *error) {
        uint64_t value;
        uint32_t flags;
        int r;

        r = sd_bus_message_read(m, "tu", &value, &flags);
        if (r < 0)
                return r;
        if (flags != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown flags 0x%" PRIx32 " (none are defined)", flags);
        *ret_value = value;
        return 0;
}

static int set_max_downtime_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        ManagedVm *v;
        uint64_t ms = 0;
        int r;

        r = read_value_and_flags(m, &ms, error);
        if (r < 0)
                return r;
        r = bus_vm_from_call(s, m, &v, error);
        if (r < 0)
                return r;
        r = managed_vm_set_max_downtime(v, ms, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_migrate_set_max_downtime(sd_bus_message *m, void *userdata,
                                           sd_bus_error *error) {
        uint64_t ms = 0;
        int r;

        r = read_value_and_flags(m, &ms, error);
        if (r < 0)
                return r;
        if (ms == 0 || ms > MANAGED_VM_MAX_DOWNTIME_MS_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Maximum downtime must be between 1 and %" PRIu64
                                         " ms, got %" PRIu64,
                                         MANAGED_VM_MAX_DOWNTIME_MS_MAX, ms);
        return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MIGRATE,
                             managed_vm_get_name(userdata), "set-max-downtime",
                             set_max_downtime_authorized, error);
}

static int method_migrate_get_max_downtime(sd_bus_message *m, void *userdata,
                                           sd_bus_error *error) {
        ManagedVm *v = userdata;
        uint32_t flags;
        int r;

        r = sd_bus_message_read(m, "u", &flags);
        if (r < 0)
                return r;
        if (flags != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown flags 0x%" PRIx32 " (none are defined)", flags);
        return sd_bus_reply_method_return(m, "t", v->max_downtime_ms);
}

static int set_max_speed_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        ManagedVm *v;
        uint64_t mibps = 0;
        int r;

        r = read_value_and_flags(m, &mibps, error);
        if (r < 0)
                return r;
        r = bus_vm_from_call(s, m, &v, error);
        if (r < 0)
                return r;
        r = managed_vm_set_max_speed(v, mibps, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        return sd_bus_reply_method_return(m, NULL);
}

static int method_migrate_set_max_speed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        uint64_t mibps = 0;
        int r;

        r = read_value_and_flags(m, &mibps, error);
        if (r < 0)
                return r;
        if (mibps > MANAGED_VM_MAX_SPEED_MIBPS_MAX)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Maximum speed must be at most %" PRIu64 " MiB/s",
                                         MANAGED_VM_MAX_SPEED_MIBPS_MAX);
        return bus_authorize(bus_service_current(m), m, VMMD_ACTION_MIGRATE,
                             managed_vm_get_name(userdata), "set-max-speed",
                             set_max_speed_authorized, error);
}

static int method_migrate_get_max_speed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        ManagedVm *v = userdata;
        uint32_t flags;
        int r;

        r = sd_bus_message_read(m, "u", &flags);
        if (r < 0)
                return r;
        if (flags != 0)
                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                         "Unknown flags 0x%" PRIx32 " (none are defined)", flags);
        return sd_bus_reply_method_return(m, "t", v->max_speed_mibps);
}

const sd_bus_vtable bus_vm_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", property_get_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        /* Constant but for an incoming VM, whose config arrives with the migration. */
        SD_BUS_PROPERTY("VCPUs", "u", property_get_vcpus, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("MemoryBytes", "t", property_get_memory_bytes, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Config", "s", property_get_config, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Job", "o", property_get_job, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ConsolePath", "s", property_get_console_path, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),

        SD_BUS_METHOD("Start", NULL, NULL, method_vm_action, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Pause", NULL, NULL, method_vm_action, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Resume", NULL, NULL, method_vm_action, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Shutdown", NULL, NULL, method_vm_action, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Stop", NULL, NULL, method_vm_action, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Delete", NULL, NULL, method_delete, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("OpenConsole",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("h", fd),
                                method_open_console,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Migrate",
                                SD_BUS_ARGS("s", destination_uri, "a{sv}", options),
                                SD_BUS_RESULT("o", job),
                                method_migrate,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetJobStats",
                                SD_BUS_ARGS("u", flags),
                                SD_BUS_RESULT("i", type, "a{sv}", stats),
                                method_get_job_stats,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("AbortJob", NULL, NULL, method_abort_job, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MigrateSetMaxDowntime",
                                SD_BUS_ARGS("t", ms, "u", flags),
                                SD_BUS_NO_RESULT,
                                method_migrate_set_max_downtime,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MigrateGetMaxDowntime",
                                SD_BUS_ARGS("u", flags),
                                SD_BUS_RESULT("t", ms),
                                method_migrate_get_max_downtime,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MigrateSetMaxSpeed",
                                SD_BUS_ARGS("t", mib_per_s, "u", flags),
                                SD_BUS_NO_RESULT,
                                method_migrate_set_max_speed,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("MigrateGetMaxSpeed",
                                SD_BUS_ARGS("u", flags),
                                SD_BUS_RESULT("t", mib_per_s),
                                method_migrate_get_max_speed,
                                SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_SIGNAL_WITH_ARGS("JobCompleted", SD_BUS_ARGS("a{sv}", stats), 0),
        SD_BUS_SIGNAL_WITH_ARGS("MigrationIteration", SD_BUS_ARGS("i", iteration), 0),
        SD_BUS_VTABLE_END,
};

/* --- signals from the Manager's changes --- */

static void on_vm_added(Manager *m, ManagedVm *v, void *userdata) {
        BusService *s = userdata;
        _cleanup_free_ char *path = NULL;
        int r;

        r = bus_vm_path(managed_vm_get_name(v), &path);
        if (r >= 0)
                r = sd_bus_emit_object_added(s->bus, path);
        if (r < 0)
                log_warning_errno(r, "Failed to announce VM %s on the bus: %m",
                                  managed_vm_get_name(v));
}

static void on_vm_removing(Manager *m, ManagedVm *v, void *userdata) {
        BusService *s = userdata;
        _cleanup_free_ char *path = NULL;
        int r;

        r = bus_vm_path(managed_vm_get_name(v), &path);
        if (r >= 0)
                r = sd_bus_emit_object_removed(s->bus, path);
        if (r < 0)
                log_warning_errno(r, "Failed to announce the removal of VM %s on the bus: %m",
                                  managed_vm_get_name(v));
}

static void on_vm_state_changed(Manager *m, ManagedVm *v, VmState old_state, VmState new_state,
                                void *userdata) {
        BusService *s = userdata;
        _cleanup_free_ char *path = NULL;
        int r;

        r = bus_vm_path(managed_vm_get_name(v), &path);
        if (r >= 0 && old_state != new_state)
                r = sd_bus_emit_properties_changed(s->bus, path, VMMD_VM_INTERFACE, "State",
                                                   "ConsolePath", NULL);
        else if (r >= 0)
                r = sd_bus_emit_properties_changed(s->bus, path, VMMD_VM_INTERFACE, "Job",
                                                   "ConsolePath", "Config", "VCPUs", "MemoryBytes",
                                                   NULL);
        if (r < 0)
                log_warning_errno(r, "Failed to signal the state of VM %s: %m",
                                  managed_vm_get_name(v));
}

const ManagerObserver bus_vm_observer = {
        .vm_added = on_vm_added,
        .vm_removing = on_vm_removing,
        .vm_state_changed = on_vm_state_changed,
};
