/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-build.h"
#include "daemon.h"
#include "log.h"

static int parse_seconds(const char *s, uint64_t *ret) {
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || s[0] == '-' || (*end != '\0' && strcmp(end, "s") != 0) ||
            v > UINT64_MAX / USEC_PER_SEC)
                return -EINVAL;
        *ret = (uint64_t)v * USEC_PER_SEC;
        return 0;
}

static void help(void) {
        printf("vmmd [OPTIONS...]\n\n"
               "The vmmd KVM virtual machine monitor: serves org.vmmd.VMM1 on the system bus\n"
               "($DBUS_SYSTEM_BUS_ADDRESS when set).\n\n"
               "  -h --help                 Show this help\n"
               "     --version              Show the version\n"
               "     --idle-timeout=SEC     Exit after SEC seconds with no VM and no call\n"
               "                            (0: never; default 0, or 60 when bus-activated)\n"
               "     --shutdown-timeout=SEC On SIGTERM, give guests SEC seconds to power off\n"
               "                            before they are stopped (default 30)\n"
               "     --max-vms=N            Allow at most N VMs (default %u, at most %u)\n\n"
               "Set VMMD_LOG_LEVEL=debug|info|warning|err for more or less logging.\n",
               MANAGER_MAX_VMS_DEFAULT, MANAGER_MAX_VMS_LIMIT);
}

static int parse_argv(int argc, char *argv[], DaemonOptions *o) {
        enum { ARG_VERSION = 0x100, ARG_IDLE_TIMEOUT, ARG_SHUTDOWN_TIMEOUT, ARG_MAX_VMS };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "idle-timeout", required_argument, NULL, ARG_IDLE_TIMEOUT },
                { "shutdown-timeout", required_argument, NULL, ARG_SHUTDOWN_TIMEOUT },
                { "max-vms", required_argument, NULL, ARG_MAX_VMS },
                {},
        };
        unsigned long n;
        char *end;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("vmmd %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_IDLE_TIMEOUT:
                        if (parse_seconds(optarg, &o->idle_timeout_usec) < 0)
                                return log_error_errno(EINVAL, "Invalid --idle-timeout=%s", optarg);
                        break;
                case ARG_SHUTDOWN_TIMEOUT:
                        if (parse_seconds(optarg, &o->shutdown_timeout_usec) < 0)
                                return log_error_errno(EINVAL, "Invalid --shutdown-timeout=%s",
                                                       optarg);
                        break;
                case ARG_MAX_VMS:
                        errno = 0;
                        n = strtoul(optarg, &end, 10);
                        if (errno != 0 || *end != '\0' || optarg[0] == '-' || n == 0 ||
                            n > MANAGER_MAX_VMS_LIMIT)
                                return log_error_errno(EINVAL,
                                                       "Invalid --max-vms=%s: must be 1..%u",
                                                       optarg, MANAGER_MAX_VMS_LIMIT);
                        o->max_vms = (unsigned)n;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        return -EINVAL;
                }

        if (optind < argc)
                return log_error_errno(EINVAL, "This program takes no arguments");
        return 1;
}

static int run(int argc, char *argv[]) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        DaemonOptions options = {
                /* Started by the bus itself (not through systemd): go away when unused. */
                .idle_timeout_usec = getenv("DBUS_STARTER_BUS_TYPE")
                                             ? DAEMON_IDLE_TIMEOUT_BUS_ACTIVATED_USEC
                                             : 0,
                .shutdown_timeout_usec = DAEMON_SHUTDOWN_TIMEOUT_DEFAULT_USEC,
                .max_vms = MANAGER_MAX_VMS_DEFAULT,
        };
        int r;

        log_open("vmmd");
        /* Switches for comparing measurements, read here: the VMM library reads no
         * environment. */
        vm_options_init(&options.vm);
        if (getenv("VMMD_DIRTY_RING") && strcmp(getenv("VMMD_DIRTY_RING"), "0") == 0)
                options.vm.dirty_ring = false;
        if (getenv("VMMD_THP") && strcmp(getenv("VMMD_THP"), "0") == 0)
                options.vm.thp = false;

        r = parse_argv(argc, argv, &options);
        if (r <= 0)
                return r;

        r = daemon_new(&options, &d);
        if (r < 0)
                return r;
        return daemon_run(d);
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : r;
}
