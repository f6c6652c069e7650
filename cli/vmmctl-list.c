/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "dbus/bus-api.h"
#include "vmmctl.h"

/* list and status: human tables by default, JSON with --json. */

static const char *format_bytes(char *buf, size_t size, uint64_t bytes) {
        if (bytes >= GiB && bytes % GiB == 0)
                snprintf(buf, size, "%" PRIu64 "G", bytes / GiB);
        else if (bytes >= MiB && bytes % MiB == 0)
                snprintf(buf, size, "%" PRIu64 "M", bytes / MiB);
        else
                snprintf(buf, size, "%" PRIu64 "B", bytes);
        return buf;
}

static const char *job_or_dash(const VmInfo *i) {
        return i->job && strcmp(i->job, "/") != 0 ? i->job : "-";
}

static json_object *vm_info_to_json(const VmInfo *i, bool with_config) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        json_object_object_add(o, "name", json_object_new_string(i->name ?: ""));
        json_object_object_add(o, "path", json_object_new_string(i->path ?: ""));
        json_object_object_add(o, "state", json_object_new_string(i->state ?: ""));
        json_object_object_add(o, "vcpus", json_object_new_int64(i->vcpus));
        json_object_object_add(o, "memory_bytes", json_object_new_uint64(i->memory_bytes));
        json_object_object_add(o, "console_path", json_object_new_string(i->console_path ?: ""));
        json_object_object_add(o, "job",
                               i->job && strcmp(i->job, "/") != 0 ? json_object_new_string(i->job)
                                                                  : NULL);
        if (with_config) {
                json_object *config = i->config ? json_tokener_parse(i->config) : NULL;
                json_object_object_add(o, "config",
                                       config ?: json_object_new_string(i->config ?: ""));
        }
        return o;
}

int ctl_print_json(json_object *o) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
                                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!s)
                return -ENOMEM;
        puts(s);
        return 0;
}

static int compare_info(const void *a, const void *b) {
        const VmInfo *x = a, *y = b;
        return strcmp(x->name ?: "", y->name ?: "");
}

/* Reads GetManagedObjects() into an array of VmInfo. */
static int read_managed_objects(sd_bus_message *reply, VmInfo **ret, size_t *ret_n) {
        VmInfo *infos = NULL;
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        if (r < 0)
                goto fail;
        while ((r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                const char *path;
                VmInfo info = {};
                bool is_vm = false;

                r = sd_bus_message_read(reply, "o", &path);
                if (r < 0)
                        goto fail;
                r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
                if (r < 0)
                        goto fail;
                while ((r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
                        const char *interface;

                        r = sd_bus_message_read(reply, "s", &interface);
                        if (r >= 0 && strcmp(interface, VMMD_VM_INTERFACE) == 0) {
                                is_vm = true;
                                r = vm_info_read_properties(reply, &info);
                        } else if (r >= 0)
                                r = sd_bus_message_skip(reply, "a{sv}");
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                        if (r < 0) {
                                vm_info_done(&info);
                                goto fail;
                        }
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply); /* a{sa{sv}} */
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply); /* e */
                if (r >= 0 && is_vm) {
                        VmInfo *a = reallocarray(infos, n + 1, sizeof *infos);
                        info.path = strdup(path);
                        if (!a || !info.path)
                                r = -ENOMEM;
                        else {
                                infos = a;
                                infos[n++] = info;
                                info = (VmInfo){};
                        }
                }
                vm_info_done(&info);
                if (r < 0)
                        goto fail;
        }
        if (r < 0)
                goto fail;

        if (n > 0)
                qsort(infos, n, sizeof *infos, compare_info);
        *ret = infos;
        *ret_n = n;
        return 0;
fail:
        for (size_t i = 0; i < n; i++)
                vm_info_done(&infos[i]);
        free(infos);
        return r;
}

int verb_list(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        VmInfo *infos = NULL;
        size_t n = 0;
        int r;

        if (argc != 1)
                return ctl_log_error(-EINVAL, "list takes no arguments");

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, VMMD_MANAGER_PATH,
                               "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", &error,
                               &reply, NULL);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to list VMs");
        r = read_managed_objects(reply, &infos, &n);
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd: %s", strerror(-r));

        if (c->json) {
                json_object *a = json_object_new_array();
                for (size_t i = 0; a && i < n; i++)
                        json_object_array_add(a, vm_info_to_json(&infos[i], false));
                r = a ? ctl_print_json(a) : -ENOMEM;
                json_object_put(a);
        } else if (n == 0)
                puts("No VMs.");
        else {
                int w_name = 4, w_state = 5;
                char mem[32];

                for (size_t i = 0; i < n; i++) {
                        w_name = MAX(w_name, (int)strlen(infos[i].name ?: ""));
                        w_state = MAX(w_state, (int)strlen(infos[i].state ?: ""));
                }
                printf("%-*s  %-*s  %5s  %7s  %s\n", w_name, "NAME", w_state, "STATE", "VCPUS",
                       "MEMORY", "CONSOLE");
                for (size_t i = 0; i < n; i++)
                        printf("%-*s  %-*s  %5" PRIu32 "  %7s  %s\n", w_name, infos[i].name ?: "",
                               w_state, infos[i].state ?: "", infos[i].vcpus,
                               format_bytes(mem, sizeof mem, infos[i].memory_bytes),
                               infos[i].console_path && infos[i].console_path[0]
                                       ? infos[i].console_path
                                       : "-");
                r = 0;
        }

        for (size_t i = 0; i < n; i++)
                vm_info_done(&infos[i]);
        free(infos);
        return r;
}

int verb_status(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL;
        VmInfo info = {};
        char mem[32];
        int r;

        if (argc != 2)
                return ctl_log_error(-EINVAL, "status takes one VM name");

        r = ctl_get_vm_path(c, argv[1], &path);
        if (r < 0)
                return r;
        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, "org.freedesktop.DBus.Properties",
                               "GetAll", &error, &reply, "s", VMMD_VM_INTERFACE);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to read the VM's properties");
        r = vm_info_read_properties(reply, &info);
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd: %s", strerror(-r));
        info.path = TAKE_PTR(path);

        if (c->json) {
                json_object *o = vm_info_to_json(&info, true);
                r = o ? ctl_print_json(o) : -ENOMEM;
                json_object_put(o);
        } else {
                printf("%s\n", info.name ?: "");
                printf("     Path: %s\n", info.path);
                printf("    State: %s\n", info.state ?: "");
                printf("    VCPUs: %" PRIu32 "\n", info.vcpus);
                printf("   Memory: %s (%" PRIu64 " bytes)\n",
                       format_bytes(mem, sizeof mem, info.memory_bytes), info.memory_bytes);
                printf("  Console: %s\n",
                       info.console_path && info.console_path[0] ? info.console_path : "-");
                printf("      Job: %s\n", job_or_dash(&info));
                printf("   Config: %s\n", info.config ?: "");
                r = 0;
        }
        vm_info_done(&info);
        return r;
}
