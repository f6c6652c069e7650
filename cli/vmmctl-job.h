/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vmmctl.h"

/* Jobs: jobs, job, job-cancel (docs/dbus-api.md, Job interface), and the Job properties
 * as vmmctl reads and prints them (vmmctl-migrate.c follows a job with them too). */

int verb_jobs(Ctl *c, int argc, char *argv[]);
int verb_job(Ctl *c, int argc, char *argv[]);
int verb_job_cancel(Ctl *c, int argc, char *argv[]);
/* job: show GetStats() (libvirt's keys) instead of the properties (--libvirt). */
void ctl_job_set_libvirt(bool b);

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
