/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dbus/bus-api.h"
#include "vmmctl.h"

/* One line, whatever the message holds. */
static void print_one_line(FILE *f, const char *s) {
        for (; s && *s; s++)
                fputc(*s == '\n' || *s == '\r' ? ' ' : *s, f);
}

int ctl_log_bus_error(const sd_bus_error *e, int r, const char *what) {
        fputs("vmmctl: ", stderr);
        if (e && sd_bus_error_is_set(e)) {
                bool ours = strncmp(e->name, VMMD_ERROR_PREFIX, strlen(VMMD_ERROR_PREFIX)) == 0;

                /* The daemon's own messages name the VM and the cause; other errors (no
                 * daemon, no bus, access) get the context of what we tried. */
                if (!ours && what)
                        fprintf(stderr, "%s: ", what);
                print_one_line(stderr, e->message ?: e->name);
                fprintf(stderr, " (%s)\n", e->name);
                r = -sd_bus_error_get_errno(e);
        } else {
                if (what)
                        fprintf(stderr, "%s: ", what);
                fprintf(stderr, "%s\n", strerror(r < 0 ? -r : r));
        }
        return r < 0 ? r : -EIO;
}

int ctl_log_error(int r, const char *format, ...) {
        va_list ap;

        fputs("vmmctl: ", stderr);
        va_start(ap, format);
        vfprintf(stderr, format, ap);
        va_end(ap);
        fputc('\n', stderr);
        return r < 0 ? r : -r;
}

int ctl_get_vm_path(Ctl *c, const char *name, char **ret_path) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *path;
        char *p;
        int r;

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, VMMD_MANAGER_PATH, VMMD_MANAGER_INTERFACE,
                               "GetVM", &error, &reply, "s", name);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to look up the VM");
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd");
        p = strdup(path);
        if (!p)
                return ctl_log_error(-ENOMEM, "Out of memory");
        *ret_path = p;
        return 0;
}

int ctl_call_vm(Ctl *c, const char *name, const char *method, const char *what) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        r = ctl_get_vm_path(c, name, &path);
        if (r < 0)
                return r;
        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, VMMD_VM_INTERFACE, method, &error,
                               NULL, NULL);
        if (r < 0)
                return ctl_log_bus_error(&error, r, what);
        return 0;
}

int ctl_get_vm_state(Ctl *c, const char *path, char **ret_state) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_get_property_string(c->bus, VMMD_BUS_NAME, path, VMMD_VM_INTERFACE, "State",
                                       &error, ret_state);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to read the VM's state");
        return 0;
}

bool ctl_state_is_active(const char *state) {
        static const char *const active[] = { "running", "paused", "incoming",
                                              "migration-unknown" };

        for (size_t i = 0; state && i < ELEMENTSOF(active); i++)
                if (strcmp(state, active[i]) == 0)
                        return true;
        return false;
}

void vm_info_done(VmInfo *i) {
        free(i->name);
        free(i->path);
        free(i->state);
        free(i->config);
        free(i->job);
        free(i->console_path);
        *i = (VmInfo){};
}

/* type: "s" or "o" */
static int read_string_variant(sd_bus_message *m, const char *type, char **field) {
        const char *s;
        char *copy;
        int r;

        r = sd_bus_message_read(m, "v", type, &s);
        if (r < 0)
                return r;
        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

int ctl_read_properties(sd_bus_message *m, CtlPropertyReader read, void *userdata) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents;

                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;
                r = read(m, key, contents, userdata);
                if (r == 0)
                        r = sd_bus_message_skip(m, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int read_vm_property(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        VmInfo *i = userdata;
        int r;

        if (strcmp(key, "Name") == 0 && strcmp(contents, "s") == 0)
                r = read_string_variant(m, "s", &i->name);
        else if (strcmp(key, "State") == 0 && strcmp(contents, "s") == 0)
                r = read_string_variant(m, "s", &i->state);
        else if (strcmp(key, "Config") == 0 && strcmp(contents, "s") == 0)
                r = read_string_variant(m, "s", &i->config);
        else if (strcmp(key, "ConsolePath") == 0 && strcmp(contents, "s") == 0)
                r = read_string_variant(m, "s", &i->console_path);
        else if (strcmp(key, "Job") == 0 && strcmp(contents, "o") == 0)
                r = read_string_variant(m, "o", &i->job);
        else if (strcmp(key, "VCPUs") == 0 && strcmp(contents, "u") == 0)
                r = sd_bus_message_read(m, "v", "u", &i->vcpus);
        else if (strcmp(key, "MemoryBytes") == 0 && strcmp(contents, "t") == 0)
                r = sd_bus_message_read(m, "v", "t", &i->memory_bytes);
        else
                return 0;
        return r < 0 ? r : 1;
}

int vm_info_read_properties(sd_bus_message *m, VmInfo *i) {
        return ctl_read_properties(m, read_vm_property, i);
}
