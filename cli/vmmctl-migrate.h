/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <getopt.h>

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
/* --libvirt was given. */
bool ctl_migrate_want_libvirt(void);

int verb_migrate(Ctl *c, int argc, char *argv[]);
int verb_receive(Ctl *c, int argc, char *argv[]);
int verb_jobs(Ctl *c, int argc, char *argv[]);
int verb_job(Ctl *c, int argc, char *argv[]);
int verb_job_cancel(Ctl *c, int argc, char *argv[]);

/* --- shared by vmmctl-migrate.c and vmmctl-job.c --- */

#define JOB_BREAKDOWN_MAX 16

/* The org.vmmd.VMM1.Job properties as read from the bus. */
typedef struct JobInfo {
        char *path;
        uint32_t id;
        char *operation;
        char *vm;
        char *state;
        char *phase;
        double progress;
        bool progress_valid;
        uint64_t bytes_total, bytes_processed, bytes_remaining;
        uint64_t rate;
        uint64_t start_time, elapsed_usec, expected_end_time;
        uint32_t iteration;
        uint64_t dirty_rate;
        uint64_t zero_pages, normal_pages;
        uint32_t throttle_percent;
        uint64_t expected_downtime_usec, downtime_usec;
        struct {
                char *phase;
                uint64_t usec;
        } breakdown[JOB_BREAKDOWN_MAX];
        size_t n_breakdown;
        uint64_t setup_usec, max_downtime_usec, max_bandwidth;
        bool stalled, cancelable;
        uint32_t started_by_uid;
        char *error_name;
        char *error_message;
} JobInfo;

void job_info_done(JobInfo *j);
/* Applies an a{sv} of Job properties (GetAll, or PropertiesChanged's changed values). */
int job_info_read_properties(sd_bus_message *m, JobInfo *j);
/* GetAll on 'path'. */
int job_info_fetch(Ctl *c, const char *path, JobInfo *j);
/* All properties, one a line, with units; or a JSON object. */
void job_info_print(const JobInfo *j);
int job_info_print_json(const JobInfo *j);
bool job_state_is_final_str(const char *state);

/* The precopy passes (GetIterations) as a table; nothing if there are none. Returns how
 * many there are. */
size_t job_print_iterations(Ctl *c, const char *path);

/* The object path for "ID" or "/org/vmmd/VMM1/job/ID". */
int ctl_job_path(const char *arg, char **ret_path);

/* Human formats: "256.0 MiB", "12.3 ms", "812.5 MiB/s". */
const char *format_mib(char *buf, size_t size, uint64_t bytes);
const char *format_usec(char *buf, size_t size, uint64_t usec);
const char *format_rate(char *buf, size_t size, uint64_t bytes_per_sec);
