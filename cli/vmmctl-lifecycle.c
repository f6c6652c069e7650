/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "dbus/bus-api.h"
#include "vmmctl-wait.h"

/* create, start, pause, resume, stop, shutdown, delete */

/* The daemon takes at most 64 KiB; read a little more so that it, not we, says so. */
#define CONFIG_READ_MAX (1024 * 1024)

static int read_config(const char *path, char **ret) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t n = 0;

        if (strcmp(path, "-") == 0)
                fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
        else
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return ctl_log_error(-errno, "Cannot read %s: %s", path, strerror(errno));

        buf = malloc(CONFIG_READ_MAX + 1);
        if (!buf)
                return ctl_log_error(-ENOMEM, "Out of memory");
        for (;;) {
                ssize_t k = read(fd, buf + n, CONFIG_READ_MAX - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return ctl_log_error(-errno, "Cannot read %s: %s", path, strerror(errno));
                }
                if (k == 0)
                        break;
                n += (size_t)k;
                if (n >= CONFIG_READ_MAX)
                        return ctl_log_error(-E2BIG, "%s is larger than %d bytes", path,
                                             CONFIG_READ_MAX);
        }
        buf[n] = '\0';
        if (strlen(buf) != n)
                return ctl_log_error(-EINVAL, "%s contains a NUL byte", path);
        *ret = TAKE_PTR(buf);
        return 0;
}

int verb_create(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *config = NULL;
        int r;

        if (argc != 3)
                return ctl_log_error(-EINVAL, "create takes a VM name and a config file (- for "
                                              "standard input)");
        r = read_config(argv[2], &config);
        if (r < 0)
                return r;

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, VMMD_MANAGER_PATH, VMMD_MANAGER_INTERFACE,
                               "CreateVM", &error, NULL, "ss", argv[1], config);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to create the VM");
        if (c->start)
                return ctl_call_vm(c, argv[1], "Start", "Failed to start the VM");
        return 0;
}

static const struct {
        const char *verb;
        const char *method;
        const char *what;
} actions[] = {
        { "start", "Start", "Failed to start the VM" },
        { "pause", "Pause", "Failed to pause the VM" },
        { "resume", "Resume", "Failed to resume the VM" },
        { "stop", "Stop", "Failed to stop the VM" },
};

int verb_action(Ctl *c, int argc, char *argv[]) {
        if (argc != 2)
                return ctl_log_error(-EINVAL, "%s takes one VM name", argv[0]);
        for (size_t i = 0; i < ELEMENTSOF(actions); i++)
                if (strcmp(argv[0], actions[i].verb) == 0)
                        return ctl_call_vm(c, argv[1], actions[i].method, actions[i].what);
        return ctl_log_error(-EINVAL, "Unknown command %s", argv[0]);
}

/* Stop, accepting that the VM went down by itself meanwhile. */
static int stop_vm(Ctl *c, const char *name, const char *path) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *state = NULL;
        int r;

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, VMMD_VM_INTERFACE, "Stop", &error,
                               NULL, NULL);
        if (r >= 0)
                return 0;
        if (sd_bus_error_has_name(&error, VMMD_ERROR_INVALID_STATE) &&
            ctl_get_vm_state(c, path, &state) >= 0 && !ctl_state_is_active(state))
                return 0;
        return ctl_log_bus_error(&error, r, "Failed to stop the VM");
}

int verb_shutdown(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL;
        const char *name;
        VmWatch w;
        int r;

        if (argc != 2)
                return ctl_log_error(-EINVAL, "shutdown takes one VM name");
        name = argv[1];

        if (!c->has_timeout)
                /* Just the request: the guest decides. */
                return ctl_call_vm(c, name, "Shutdown", "Failed to shut down the VM");

        /* --timeout: make sure the VM is down when we return. */
        r = ctl_get_vm_path(c, name, &path);
        if (r < 0)
                return r;
        r = vm_watch_begin(c, path, &w);
        if (r < 0)
                return r;
        if (vm_watch_is_down(&w))
                goto done; /* nothing to do */

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, VMMD_VM_INTERFACE, "Shutdown", &error,
                               NULL, NULL);
        if (r < 0) {
                if (!c->force) {
                        r = ctl_log_bus_error(&error, r, "Failed to shut down the VM");
                        goto done;
                }
                /* Not a state a guest can be asked in (incoming, migration-unknown...). */
                fprintf(stderr, "vmmctl: cannot ask VM %s to power off (%s), stopping it\n", name,
                        error.message);
                r = stop_vm(c, name, path);
                goto done;
        }

        r = vm_watch_run(&w, c->timeout_usec);
        if (r == -ETIME) {
                if (!c->force) {
                        r = ctl_log_error(r, "VM %s did not power off within %" PRIu64 " s",
                                          name, c->timeout_usec / USEC_PER_SEC);
                        goto done;
                }
                fprintf(stderr, "VM %s did not power off within %" PRIu64 " s, stopping it\n",
                        name, c->timeout_usec / USEC_PER_SEC);
                r = stop_vm(c, name, path);
        } else if (r >= 0 && w.daemon_gone)
                r = ctl_log_error(-ESRCH, "vmmd exited while VM %s was shutting down", name);
done:
        vm_watch_done(&w);
        return r;
}

int verb_delete(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL, *state = NULL;
        int r;

        if (argc != 2)
                return ctl_log_error(-EINVAL, "delete takes one VM name");
        r = ctl_get_vm_path(c, argv[1], &path);
        if (r < 0)
                return r;

        if (c->force) {
                r = ctl_get_vm_state(c, path, &state);
                if (r < 0)
                        return r;
                if (ctl_state_is_active(state)) {
                        r = stop_vm(c, argv[1], path);
                        if (r < 0)
                                return r;
                }
        }

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, VMMD_VM_INTERFACE, "Delete", &error,
                               NULL, NULL);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to delete the VM");
        return 0;
}
