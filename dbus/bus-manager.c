/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <string.h>

#include "bus-errors.h"
#include "bus-polkit.h"
#include "bus-service.h"
#include "config-build.h"
#include "daemon/vm-name.h"

/* org.vmmd.VMM1.Manager on /org/vmmd/VMM1. */

static int reply_invalid_name(sd_bus_error *error) {
        return sd_bus_error_setf(error, VMMD_ERROR_INVALID_NAME,
                                 "Invalid VM name: use 1 to %u characters from A-Z, a-z, 0-9, "
                                 "'_', '.' and '-', not starting with '.' or '-'",
                                 VM_NAME_MAX);
}

static int property_get_version(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PACKAGE_VERSION);
}

static int create_vm_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL, *path = NULL;
        const char *name, *config;
        int r;

        r = sd_bus_message_read(m, "ss", &name, &config);
        if (r < 0)
                return r;

        r = manager_create_vm(s->manager, name, config, NULL, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);

        r = bus_vm_path(name, &path);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "o", path);
}

static int method_create_vm(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        BusService *s = userdata;
        const char *name, *config;
        int r;

        r = sd_bus_message_read(m, "ss", &name, &config);
        if (r < 0)
                return r;
        if (!vm_name_is_valid(name))
                return reply_invalid_name(error);

        /* Cheap checks before asking polkit; the config is parsed (and its files opened)
         * only for an authorized caller. */
        r = manager_can_create_vm(s->manager, name, strlen(config), &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);

        return bus_authorize(s, m, VMMD_ACTION_MANAGE, name, "create", create_vm_authorized,
                             error);
}

static int method_get_vm(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *path = NULL;
        BusService *s = userdata;
        const char *name;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        if (!vm_name_is_valid(name))
                return reply_invalid_name(error);
        if (!manager_find_vm(s->manager, name))
                return sd_bus_error_setf(error, VMMD_ERROR_NO_SUCH_VM, "No VM named '%s'", name);

        r = bus_vm_path(name, &path);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "o", path);
}

static int method_list_vms(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        BusService *s = userdata;
        int r;

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(so)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->manager->n_vms; i++) {
                _cleanup_free_ char *path = NULL;
                const char *name = managed_vm_get_name(s->manager->vms[i]);

                r = bus_vm_path(name, &path);
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "(so)", name, path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_list_jobs(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        BusService *s = userdata;
        int r;

        /* (id, operation, state, path) of every job object. */
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(usso)");
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->manager->n_jobs; i++) {
                ManagedJob *j = s->manager->jobs[i];
                _cleanup_free_ char *path = NULL;
                MigrationStats st;

                managed_job_get_stats(j, &st);
                r = bus_job_path(j->id, &path);
                if (r < 0)
                        return r;
                r = sd_bus_message_append(reply, "(usso)", j->id,
                                          job_operation_to_string(migration_job_get_operation(j->job)),
                                          job_state_to_string(st.state), path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* ReceiveMigration's a{sv}: config s, timeout_s t. */
static int read_receive_options(sd_bus_message *m, IncomingParams *p, sd_bus_error *error) {
        int r;

        *p = (IncomingParams){};
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *type;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, NULL, &type);
                if (r < 0)
                        return r;
                if (strcmp(key, "config") == 0) {
                        const char *c;
                        if (strcmp(type, "s") != 0)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option 'config' must be of type 's', got '%s'", type);
                        r = sd_bus_message_read(m, "v", "s", &c);
                        if (r < 0)
                                return r;
                        if (strlen(c) > VM_CONFIG_MAX_JSON)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option 'config' is larger than %d bytes", VM_CONFIG_MAX_JSON);
                        p->config_overlay = (char *)c; /* valid while the message is */
                } else if (strcmp(key, "timeout_s") == 0) {
                        if (strcmp(type, "t") != 0)
                                return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                         "Option 'timeout_s' must be of type 't', got '%s'", type);
                        r = sd_bus_message_read(m, "v", "t", &p->timeout_s);
                        if (r < 0)
                                return r;
                } else
                        return sd_bus_error_setf(error, SD_BUS_ERROR_INVALID_ARGS,
                                                 "Unknown option '%s' (known: config, timeout_s)", key);
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (p->config_overlay) {
                /* The overlay must at least be a JSON object; the merged result is checked
                 * like any config when the source's part arrives. */
                _cleanup_free_ char *merged = NULL, *err = NULL;
                if (vm_config_merge_json("{}", p->config_overlay, &merged, &err) < 0)
                        return sd_bus_error_setf(error, VMMD_ERROR_INVALID_CONFIG, "Invalid config option: %s",
                                                 err ?: "not a JSON object");
        }
        return 0;
}

static int receive_migration_authorized(BusService *s, sd_bus_message *m, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL, *vm_path = NULL, *job_path = NULL;
        const char *name, *uri;
        IncomingParams p;
        ManagedVm *v;
        ManagedJob *j;
        uid_t uid = 0;
        int r;

        r = sd_bus_message_read(m, "ss", &name, &uri);
        if (r < 0)
                return r;
        r = read_receive_options(m, &p, error);
        if (r < 0)
                return r;
        (void)bus_caller_uid(m, &uid);
        r = manager_receive_migration(s->manager, name, uri, &p, (uint32_t)uid, &v, &j, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        r = bus_vm_path(name, &vm_path);
        if (r >= 0)
                r = bus_job_path(j->id, &job_path);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "oo", vm_path, job_path);
}

static int method_receive_migration(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        BusService *s = userdata;
        const char *name, *uri;
        IncomingParams p;
        int r;

        r = sd_bus_message_read(m, "ss", &name, &uri);
        if (r < 0)
                return r;
        if (!vm_name_is_valid(name))
                return reply_invalid_name(error);
        r = read_receive_options(m, &p, error);
        if (r < 0)
                return r;
        r = manager_can_create_vm(s->manager, name, 0, &message);
        if (r < 0)
                return bus_error_from_core(error, r, message);
        return bus_authorize(s, m, VMMD_ACTION_MIGRATE, name, "receive-migration", receive_migration_authorized,
                             error);
}

const sd_bus_vtable bus_manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("CreateVM",
                                SD_BUS_ARGS("s", name, "s", config_json),
                                SD_BUS_RESULT("o", vm),
                                method_create_vm,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetVM",
                                SD_BUS_ARGS("s", name),
                                SD_BUS_RESULT("o", vm),
                                method_get_vm,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListVMs",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(so)", vms),
                                method_list_vms,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListJobs",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("a(usso)", jobs),
                                method_list_jobs,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ReceiveMigration",
                                SD_BUS_ARGS("s", name, "s", listen_uri, "a{sv}", options),
                                SD_BUS_RESULT("o", vm, "o", job),
                                method_receive_migration,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("JobNew", SD_BUS_ARGS("u", id, "o", job, "o", vm), 0),
        SD_BUS_SIGNAL_WITH_ARGS("JobRemoved", SD_BUS_ARGS("u", id, "o", job, "s", result), 0),
        SD_BUS_VTABLE_END,
};
