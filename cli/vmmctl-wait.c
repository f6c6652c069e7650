/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dbus/bus-api.h"
#include "time-util.h"
#include "vmmctl-wait.h"

/* Following a VM's State through PropertiesChanged, until the guest is down. Event-driven:
 * sd_bus_wait() sleeps until a message arrives or the deadline passes. */

static int set_state(VmWatch *w, const char *state) {
        char *s = strdup(state);

        if (!s)
                return -ENOMEM;
        free(w->state);
        w->state = s;
        return 0;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        VmWatch *w = userdata;
        const char *interface;
        int r;

        r = sd_bus_message_read(m, "s", &interface);
        if (r < 0 || strcmp(interface, VMMD_VM_INTERFACE) != 0)
                return 0;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return 0;
        while (sd_bus_message_enter_container(m, 'e', "sv") > 0) {
                const char *key, *value;

                if (sd_bus_message_read(m, "s", &key) < 0)
                        return 0;
                if (strcmp(key, "State") == 0) {
                        if (sd_bus_message_read(m, "v", "s", &value) < 0)
                                return 0;
                        (void)set_state(w, value);
                } else if (sd_bus_message_skip(m, "v") < 0)
                        return 0;
                if (sd_bus_message_exit_container(m) < 0)
                        return 0;
        }
        return 0;
}

static int on_interfaces_removed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        VmWatch *w = userdata;
        const char *path;

        if (sd_bus_message_read(m, "o", &path) >= 0 && strcmp(path, w->path) == 0)
                w->removed = true;
        return 0;
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        VmWatch *w = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) >= 0 &&
            strcmp(name, VMMD_BUS_NAME) == 0 && new_owner[0] == '\0')
                w->daemon_gone = true;
        return 0;
}

int vm_watch_begin(Ctl *c, const char *path, VmWatch *w) {
        int r;

        *w = (VmWatch){ .ctl = c };
        w->path = strdup(path);
        if (!w->path)
                return ctl_log_error(-ENOMEM, "Out of memory");

        /* Matches first, then the current state: no change can fall in between. */
        r = sd_bus_match_signal(c->bus, &w->slots[0], NULL, path,
                                "org.freedesktop.DBus.Properties", "PropertiesChanged",
                                on_properties_changed, w);
        if (r >= 0)
                r = sd_bus_match_signal(c->bus, &w->slots[1], NULL, VMMD_MANAGER_PATH,
                                        "org.freedesktop.DBus.ObjectManager", "InterfacesRemoved",
                                        on_interfaces_removed, w);
        if (r >= 0)
                r = sd_bus_add_match(c->bus, &w->slots[2],
                                     "type='signal',sender='org.freedesktop.DBus',"
                                     "path='/org/freedesktop/DBus',"
                                     "interface='org.freedesktop.DBus',"
                                     "member='NameOwnerChanged',arg0='" VMMD_BUS_NAME "'",
                                     on_name_owner_changed, w);
        if (r < 0) {
                vm_watch_done(w);
                return ctl_log_error(r, "Failed to watch the VM: %s", strerror(-r));
        }

        r = ctl_get_vm_state(c, path, &w->state);
        if (r < 0) {
                vm_watch_done(w);
                return r;
        }
        return 0;
}

bool vm_watch_is_down(const VmWatch *w) {
        return w->removed || w->daemon_gone || !ctl_state_is_active(w->state);
}

int vm_watch_run(VmWatch *w, uint64_t timeout_usec) {
        sd_bus *bus = w->ctl->bus;
        uint64_t deadline = timeout_usec == UINT64_MAX ? UINT64_MAX : time_monotonic_usec() + timeout_usec;
        int r;

        while (!vm_watch_is_down(w)) {
                uint64_t now;

                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return ctl_log_error(r, "Lost the bus: %s", strerror(-r));
                if (r > 0)
                        continue;

                now = time_monotonic_usec();
                if (deadline != UINT64_MAX && now >= deadline)
                        return -ETIME;
                r = sd_bus_wait(bus, deadline == UINT64_MAX ? UINT64_MAX : deadline - now);
                if (r < 0 && r != -EINTR)
                        return ctl_log_error(r, "Failed to wait on the bus: %s", strerror(-r));
        }
        return 0;
}

void vm_watch_done(VmWatch *w) {
        for (size_t i = 0; i < ELEMENTSOF(w->slots); i++)
                w->slots[i] = sd_bus_slot_unref(w->slots[i]);
        free(w->path);
        free(w->state);
        *w = (VmWatch){};
}

int verb_wait(Ctl *c, int argc, char *argv[]) {
        _cleanup_free_ char *path = NULL;
        VmWatch w;
        int r;

        if (argc != 2)
                return ctl_log_error(-EINVAL, "wait takes one VM name");
        r = ctl_get_vm_path(c, argv[1], &path);
        if (r < 0)
                return r;
        r = vm_watch_begin(c, path, &w);
        if (r < 0)
                return r;

        r = vm_watch_run(&w, c->has_timeout ? c->timeout_usec : UINT64_MAX);
        if (r == -ETIME)
                r = ctl_log_error(r, "VM %s is still %s after %" PRIu64 " s", argv[1], w.state,
                                  c->timeout_usec / USEC_PER_SEC);
        else if (r >= 0 && w.daemon_gone)
                r = ctl_log_error(-ESRCH, "vmmd exited while VM %s was %s", argv[1], w.state);
        else if (r >= 0 && !w.removed && strcmp(w.state, "crashed") == 0)
                r = ctl_log_error(-EIO, "VM %s crashed", argv[1]);
        vm_watch_done(&w);
        return r;
}
