/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <getopt.h>

#include "vmmctl-job.h"
#include "vmmctl.h"

/* Live migration and jobs: migrate, receive, jobs, job, job-cancel (docs/dbus-api.md, Job
 * interface). vmmctl.c parses the command line; the options of these commands are listed
 * here and handed to ctl_migrate_parse_option(). */

enum {
        ARG_MIGRATE_FIRST = 0x200,
        ARG_MAX_DOWNTIME = ARG_MIGRATE_FIRST,
        ARG_BANDWIDTH,
        ARG_CONNECTIONS,
        ARG_NO_AUTO_CONVERGE,
        ARG_ZEROCOPY,
        ARG_DISPATCH,
        ARG_CONFIG,
        ARG_PROGRESS,
        ARG_LIBVIRT,
        ARG_SWITCHOVER_TIMEOUT,
        ARG_MIGRATE_LAST,
};

#define CTL_MIGRATE_OPTIONS                                                                        \
        { "max-downtime", required_argument, NULL, ARG_MAX_DOWNTIME },                             \
        { "bandwidth", required_argument, NULL, ARG_BANDWIDTH },                                   \
        { "connections", required_argument, NULL, ARG_CONNECTIONS },                               \
        { "no-auto-converge", no_argument, NULL, ARG_NO_AUTO_CONVERGE },                           \
        { "zerocopy", required_argument, NULL, ARG_ZEROCOPY },                                     \
        { "dispatch", no_argument, NULL, ARG_DISPATCH },                                           \
        { "config", required_argument, NULL, ARG_CONFIG },                                         \
        { "progress", required_argument, NULL, ARG_PROGRESS },                                     \
        { "libvirt", no_argument, NULL, ARG_LIBVIRT },                                             \
        { "switchover-timeout", required_argument, NULL, ARG_SWITCHOVER_TIMEOUT }

#define CTL_MIGRATE_HELP_COMMANDS                                                                  \
        "  migrate NAME URI          Live-migrate a VM to a receiving vmmd (tcp:HOST:PORT,\n"     \
        "                            unix:PATH); follows the job until it ends\n"                 \
        "  receive NAME URI          Receive a VM: listen on URI for a migration\n"               \
        "  jobs                      List jobs\n"                                                 \
        "  job ID                    Show the properties of a job (ID or object path)\n"          \
        "  job-cancel ID             Cancel a running job\n"

#define CTL_MIGRATE_HELP_OPTIONS                                                                   \
        "     --max-downtime=MS      migrate: longest pause of the guest (default 300)\n"         \
        "     --bandwidth=MIBPS      migrate: bandwidth limit in MiB/s (default 0: none)\n"       \
        "     --connections=N        migrate: sockets to send over, 1-16 (default 1)\n"           \
        "     --no-auto-converge     migrate: never throttle the vCPUs\n"                         \
        "     --zerocopy=MODE        migrate: auto, on or off (default auto)\n"                   \
        "     --switchover-timeout=MS migrate: deadline of the switchover, from the pause\n"     \
        "                            (default 2 x max-downtime + 5000)\n"                         \
        "     --config=JSON          receive: JSON object merged over the source's config\n"      \
        "     --dispatch             migrate, receive: print the job and return at once\n"        \
        "     --progress=MODE        migrate, receive: bar, lines, none or auto (default:\n"      \
        "                            a bar on a terminal, a line a second otherwise)\n"           \
        "     --libvirt              job: show GetStats() (libvirt's keys)\n"

/* Returns 1 if 'option' was one of CTL_MIGRATE_OPTIONS and was taken, < 0 on a bad value
 * (the error was printed). */
int ctl_migrate_parse_option(int option, const char *arg);

int verb_migrate(Ctl *c, int argc, char *argv[]);
int verb_receive(Ctl *c, int argc, char *argv[]);
