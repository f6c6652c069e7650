/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-bus.h>

#include "macro.h"

/* vmmctl: a CLI over the org.vmmd.VMM1 bus API (docs/dbus-api.md), in the style of
 * machinectl and virsh. Every command is one or a few bus calls; errors from the daemon are
 * printed as one line: "vmmctl: <message> (<error name>)". */

typedef struct Ctl {
        sd_bus *bus;
        bool json;
        bool ask_password;
        bool force;
        bool start;
        bool follow;
        bool has_timeout;
        uint64_t timeout_usec;
} Ctl;

/* Exit statuses */
#define CTL_EXIT_FAILURE 1
#define CTL_EXIT_USAGE 2

/* Prints "vmmctl: <message> (<name>)" for a bus error and returns -errno. */
int ctl_log_bus_error(const sd_bus_error *e, int r, const char *what);
int ctl_log_error(int r, const char *format, ...) _printf_(2, 3);

/* The object path of VM 'name' (Manager.GetVM). */
int ctl_get_vm_path(Ctl *c, const char *name, char **ret_path);
/* Calls a no-argument method of VM 'name'. */
int ctl_call_vm(Ctl *c, const char *name, const char *method, const char *what);
int ctl_get_vm_state(Ctl *c, const char *path, char **ret_state);
/* Whether a state means the guest is up (running, paused, incoming, migration-unknown). */
bool ctl_state_is_active(const char *state);

/* The VM's properties as read from the bus. */
typedef struct VmInfo {
        char *name;
        char *path;
        char *state;
        uint32_t vcpus;
        uint64_t memory_bytes;
        char *config;
        char *job;
        char *console_path;
} VmInfo;

/* Walks an a{sv} of properties: 'read' gets each key and its variant's signature and
 * returns 1 if it read the variant, 0 to have it skipped, or -errno. */
typedef int (*CtlPropertyReader)(sd_bus_message *m, const char *key, const char *contents, void *userdata);
int ctl_read_properties(sd_bus_message *m, CtlPropertyReader read, void *userdata);

/* Prints a JSON value, pretty, on stdout. */
struct json_object;
int ctl_print_json(struct json_object *o);

void vm_info_done(VmInfo *i);
/* Reads an a{sv} of the org.vmmd.VMM1.VM properties. */
int vm_info_read_properties(sd_bus_message *m, VmInfo *i);

int verb_list(Ctl *c, int argc, char *argv[]);
int verb_status(Ctl *c, int argc, char *argv[]);
int verb_create(Ctl *c, int argc, char *argv[]);
int verb_action(Ctl *c, int argc, char *argv[]); /* start, pause, resume, stop */
int verb_shutdown(Ctl *c, int argc, char *argv[]);
int verb_delete(Ctl *c, int argc, char *argv[]);
int verb_wait(Ctl *c, int argc, char *argv[]);
int verb_console(Ctl *c, int argc, char *argv[]);
