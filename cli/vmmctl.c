/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "config-build.h"
#include "dbus/bus-errors.h"
#include "vmmctl-migrate.h"
#include "vmmctl.h"

static void help(void) {
        printf("vmmctl [OPTIONS...] COMMAND ...\n\n"
               "Control the VMs of vmmd (org.vmmd.VMM1 on the system bus).\n\n"
               "Commands:\n"
               "  list                      List VMs\n"
               "  status NAME               Show the properties of a VM\n"
               "  create NAME CONFIG.json   Create a VM from a JSON config (- reads stdin)\n"
               "  start NAME                Boot a VM\n"
               "  pause NAME                Pause a running VM\n"
               "  resume NAME               Resume a paused VM\n"
               "  shutdown NAME             Ask the guest to power off\n"
               "  stop NAME                 Stop a VM at once\n"
               "  delete NAME               Delete a VM that does not run\n"
               "  console NAME              Attach to the serial console\n"
               "  wait NAME                 Wait until the VM is no longer running\n"
               CTL_MIGRATE_HELP_COMMANDS "\n"
               "Options:\n"
               "  -h --help                 Show this help\n"
               "     --version              Show the version\n"
               "     --address=ADDRESS      Use this D-Bus daemon instead of the system bus\n"
               "     --json                 Print JSON (list, status, jobs, job, migrate)\n"
               "     --no-ask-password      Do not ask polkit for interactive authentication\n"
               "     --start                create: start the VM once created\n"
               "     --timeout=SEC          shutdown: wait up to SEC seconds for the guest to\n"
               "                            power off; wait: give up after SEC seconds;\n"
               "                            migrate, receive: fail the migration after SEC s\n"
               "     --force                shutdown: stop the VM if it did not power off in\n"
               "                            time; delete: stop a running VM first\n"
               "     --no-follow            console: print a file console and exit\n"
               CTL_MIGRATE_HELP_OPTIONS "\n"
               "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n");
}

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

/* Returns 1 to go on, 0 to exit with success, < 0 on a usage error. */
static int parse_argv(int argc, char *argv[], Ctl *c, const char **ret_address) {
        enum {
                ARG_VERSION = 0x100,
                ARG_ADDRESS,
                ARG_JSON,
                ARG_NO_ASK_PASSWORD,
                ARG_START,
                ARG_TIMEOUT,
                ARG_FORCE,
                ARG_NO_FOLLOW,
        };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "address", required_argument, NULL, ARG_ADDRESS },
                { "json", no_argument, NULL, ARG_JSON },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                { "start", no_argument, NULL, ARG_START },
                { "timeout", required_argument, NULL, ARG_TIMEOUT },
                { "force", no_argument, NULL, ARG_FORCE },
                { "no-follow", no_argument, NULL, ARG_NO_FOLLOW },
                CTL_MIGRATE_OPTIONS,
                {},
        };
        int o;

        while ((o = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (o) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("vmmctl %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_ADDRESS:
                        *ret_address = optarg;
                        break;
                case ARG_JSON:
                        c->json = true;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        c->ask_password = false;
                        break;
                case ARG_START:
                        c->start = true;
                        break;
                case ARG_TIMEOUT:
                        if (parse_seconds(optarg, &c->timeout_usec) < 0)
                                return ctl_log_error(-EINVAL, "Invalid --timeout=%s", optarg);
                        c->has_timeout = true;
                        break;
                case ARG_FORCE:
                        c->force = true;
                        break;
                case ARG_NO_FOLLOW:
                        c->follow = false;
                        break;
                default:
                        if (ctl_migrate_parse_option(o, optarg) > 0)
                                break;
                        return -EINVAL;
                }

        if (optind >= argc)
                return ctl_log_error(-EINVAL, "No command given (see vmmctl --help)");
        return 1;
}

static int connect_bus(const char *address, sd_bus **ret) {
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        int r;

        if (!address)
                r = sd_bus_open_system(&bus);
        else {
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
        }
        if (r < 0)
                return ctl_log_error(r, "Failed to connect to %s: %s", address ?: "the system bus",
                                     strerror(-r));
        *ret = TAKE_PTR(bus);
        return 0;
}

static const struct {
        const char *name;
        int n_args; /* after the command */
        const char *usage;
        int (*run)(Ctl *c, int argc, char *argv[]);
} verbs[] = {
        { "list", 0, "list", verb_list },
        { "status", 1, "status NAME", verb_status },
        { "create", 2, "create NAME CONFIG.json", verb_create },
        { "start", 1, "start NAME", verb_action },
        { "pause", 1, "pause NAME", verb_action },
        { "resume", 1, "resume NAME", verb_action },
        { "stop", 1, "stop NAME", verb_action },
        { "shutdown", 1, "shutdown NAME", verb_shutdown },
        { "delete", 1, "delete NAME", verb_delete },
        { "console", 1, "console NAME", verb_console },
        { "wait", 1, "wait NAME", verb_wait },
        { "migrate", 2, "migrate NAME URI", verb_migrate },
        { "receive", 2, "receive NAME URI", verb_receive },
        { "jobs", 0, "jobs", verb_jobs },
        { "job", 1, "job ID", verb_job },
        { "job-cancel", 1, "job-cancel ID", verb_job_cancel },
};

/* Returns the exit status. */
static int run(int argc, char *argv[]) {
        Ctl c = { .ask_password = true, .follow = true };
        const char *address = NULL;
        int r;

        r = parse_argv(argc, argv, &c, &address);
        if (r <= 0)
                return r < 0 ? CTL_EXIT_USAGE : 0;

        for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
                if (strcmp(argv[optind], verbs[i].name) != 0)
                        continue;
                if (argc - optind - 1 != verbs[i].n_args) {
                        ctl_log_error(-EINVAL, "Usage: vmmctl %s", verbs[i].usage);
                        return CTL_EXIT_USAGE;
                }

                (void)bus_errors_register();
                r = connect_bus(address, &c.bus);
                if (r < 0)
                        return CTL_EXIT_FAILURE;
                /* polkit may ask for a password only when a person can answer. */
                (void)sd_bus_set_allow_interactive_authorization(
                        c.bus, c.ask_password && isatty(STDIN_FILENO));
                r = verbs[i].run(&c, argc - optind, argv + optind);
                c.bus = sd_bus_flush_close_unref(c.bus);
                return r < 0 ? CTL_EXIT_FAILURE : 0;
        }
        ctl_log_error(-EINVAL, "Unknown command '%s' (see vmmctl --help)", argv[optind]);
        return CTL_EXIT_USAGE;
}

int main(int argc, char *argv[]) {
        /* A closed stdout (vmmctl console | head) ends us with EPIPE, not a signal. */
        signal(SIGPIPE, SIG_IGN);
        return run(argc, argv);
}
