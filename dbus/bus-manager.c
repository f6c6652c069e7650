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
        int r;

        /* (id, operation, state, path) of every job object. Jobs are created by migration,
         * which is not implemented yet: the list is empty. */
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(usso)");
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_receive_migration(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return sd_bus_error_set(error, VMMD_ERROR_NOT_SUPPORTED,
                                "Cannot receive a VM: " VMMD_MIGRATION_NOT_IMPLEMENTED);
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
