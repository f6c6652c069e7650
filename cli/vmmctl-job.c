/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "dbus/bus-api.h"
#include "vmmctl-format.h"
#include "vmmctl-job.h"

/* Jobs: reading the Job interface's properties, and the jobs, job, job-cancel commands. */

typedef enum FieldType {
        FIELD_U32,
        FIELD_U64,
        FIELD_DOUBLE,
        FIELD_BOOL,
        FIELD_STRING,
        FIELD_PATH,
} FieldType;

typedef enum Unit {
        UNIT_NONE,
        UNIT_BYTES,
        UNIT_USEC,
        UNIT_RATE,       /* bytes/s */
        UNIT_PAGES_RATE, /* pages/s */
        UNIT_TIME,       /* µs since the epoch */
        UNIT_PERCENT,
        UNIT_PAGES,
        UNIT_FRACTION,   /* 0..1 */
} Unit;

static const struct {
        const char *name;
        FieldType type;
        size_t offset;
        Unit unit;
} job_fields[] = {
        { "Id", FIELD_U32, offsetof(JobInfo, id), UNIT_NONE },
        { "Operation", FIELD_STRING, offsetof(JobInfo, operation), UNIT_NONE },
        { "VM", FIELD_PATH, offsetof(JobInfo, vm), UNIT_NONE },
        { "State", FIELD_STRING, offsetof(JobInfo, state), UNIT_NONE },
        { "Phase", FIELD_STRING, offsetof(JobInfo, phase), UNIT_NONE },
        { "Progress", FIELD_DOUBLE, offsetof(JobInfo, progress), UNIT_FRACTION },
        { "ProgressValid", FIELD_BOOL, offsetof(JobInfo, progress_valid), UNIT_NONE },
        { "BytesTotal", FIELD_U64, offsetof(JobInfo, bytes_total), UNIT_BYTES },
        { "BytesProcessed", FIELD_U64, offsetof(JobInfo, bytes_processed), UNIT_BYTES },
        { "BytesRemaining", FIELD_U64, offsetof(JobInfo, bytes_remaining), UNIT_BYTES },
        { "Rate", FIELD_U64, offsetof(JobInfo, rate), UNIT_RATE },
        { "StartTime", FIELD_U64, offsetof(JobInfo, start_time), UNIT_TIME },
        { "ElapsedUSec", FIELD_U64, offsetof(JobInfo, elapsed_usec), UNIT_USEC },
        { "ExpectedEndTime", FIELD_U64, offsetof(JobInfo, expected_end_time), UNIT_TIME },
        { "Iteration", FIELD_U32, offsetof(JobInfo, iteration), UNIT_NONE },
        { "DirtyRate", FIELD_U64, offsetof(JobInfo, dirty_rate), UNIT_PAGES_RATE },
        { "ZeroPages", FIELD_U64, offsetof(JobInfo, zero_pages), UNIT_PAGES },
        { "NormalPages", FIELD_U64, offsetof(JobInfo, normal_pages), UNIT_PAGES },
        { "ThrottlePercent", FIELD_U32, offsetof(JobInfo, throttle_percent), UNIT_PERCENT },
        { "ExpectedDowntimeUSec", FIELD_U64, offsetof(JobInfo, expected_downtime_usec), UNIT_USEC },
        { "DowntimeUSec", FIELD_U64, offsetof(JobInfo, downtime_usec), UNIT_USEC },
        /* DowntimeBreakdown (a{st}) is read and printed on its own, after DowntimeUSec. */
        { "SetupUSec", FIELD_U64, offsetof(JobInfo, setup_usec), UNIT_USEC },
        { "MaxDowntimeUSec", FIELD_U64, offsetof(JobInfo, max_downtime_usec), UNIT_USEC },
        { "MaxBandwidth", FIELD_U64, offsetof(JobInfo, max_bandwidth), UNIT_RATE },
        { "Stalled", FIELD_BOOL, offsetof(JobInfo, stalled), UNIT_NONE },
        { "Cancelable", FIELD_BOOL, offsetof(JobInfo, cancelable), UNIT_NONE },
        { "StartedByUID", FIELD_U32, offsetof(JobInfo, started_by_uid), UNIT_NONE },
        { "ErrorName", FIELD_STRING, offsetof(JobInfo, error_name), UNIT_NONE },
        { "ErrorMessage", FIELD_STRING, offsetof(JobInfo, error_message), UNIT_NONE },
};

#define PAGE_SIZE_BYTES 4096

static bool want_libvirt;

void ctl_job_set_libvirt(bool b) {
        want_libvirt = b;
}

static const char field_signature[] = {
        [FIELD_U32] = 'u', [FIELD_U64] = 't',    [FIELD_DOUBLE] = 'd',
        [FIELD_BOOL] = 'b', [FIELD_STRING] = 's', [FIELD_PATH] = 'o',
};


bool job_state_is_final_str(const char *state) {
        return state && (strcmp(state, "completed") == 0 || strcmp(state, "failed") == 0 ||
                         strcmp(state, "cancelled") == 0);
}

void job_info_done(JobInfo *j) {
        free(j->path);
        free(j->operation);
        free(j->vm);
        free(j->state);
        free(j->phase);
        free(j->error_name);
        free(j->error_message);
        for (size_t i = 0; i < j->n_breakdown; i++)
                free(j->breakdown[i].phase);
        *j = (JobInfo){};
}

static int read_field(sd_bus_message *m, size_t f, JobInfo *j) {
        void *p = (uint8_t *)j + job_fields[f].offset;
        char sig[2] = { field_signature[job_fields[f].type], 0 };
        const char *s;
        int b, r;

        switch (job_fields[f].type) {
        case FIELD_U32:
        case FIELD_U64:
        case FIELD_DOUBLE:
                return sd_bus_message_read(m, "v", sig, p);
        case FIELD_BOOL:
                r = sd_bus_message_read(m, "v", sig, &b);
                if (r >= 0)
                        *(bool *)p = b;
                return r;
        case FIELD_STRING:
        case FIELD_PATH: {
                char *copy;

                r = sd_bus_message_read(m, "v", sig, &s);
                if (r < 0)
                        return r;
                copy = strdup(s);
                if (!copy)
                        return -ENOMEM;
                free(*(char **)p);
                *(char **)p = copy;
                return 0;
        }
        }
        return -EINVAL;
}

static int read_breakdown(sd_bus_message *m, JobInfo *j) {
        const char *phase;
        uint64_t usec;
        int r;

        for (size_t i = 0; i < j->n_breakdown; i++)
                free(j->breakdown[i].phase);
        j->n_breakdown = 0;

        r = sd_bus_message_enter_container(m, 'v', "a{st}");
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'a', "{st}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(m, "{st}", &phase, &usec)) > 0) {
                if (j->n_breakdown >= JOB_BREAKDOWN_MAX)
                        continue;
                j->breakdown[j->n_breakdown].phase = strdup(phase);
                if (!j->breakdown[j->n_breakdown].phase)
                        return -ENOMEM;
                j->breakdown[j->n_breakdown++].usec = usec;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

static int read_job_property(sd_bus_message *m, const char *key, const char *contents, void *userdata) {
        JobInfo *j = userdata;
        size_t f;
        int r;

        for (f = 0; f < ELEMENTSOF(job_fields); f++)
                if (strcmp(key, job_fields[f].name) == 0)
                        break;
        if (f < ELEMENTSOF(job_fields) && contents[0] == field_signature[job_fields[f].type] &&
            contents[1] == '\0')
                r = read_field(m, f, j);
        else if (strcmp(key, "DowntimeBreakdown") == 0 && strcmp(contents, "a{st}") == 0)
                r = read_breakdown(m, j);
        else
                return 0;
        return r < 0 ? r : 1;
}

int job_info_read_properties(sd_bus_message *m, JobInfo *j) {
        return ctl_read_properties(m, read_job_property, j);
}

int job_info_fetch(Ctl *c, const char *path, JobInfo *j) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, "org.freedesktop.DBus.Properties",
                               "GetAll", &error, &reply, "s", VMMD_JOB_INTERFACE);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to read the job's properties");
        r = job_info_read_properties(reply, j);
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd: %s", strerror(-r));
        if (!j->path) {
                j->path = strdup(path);
                if (!j->path)
                        return ctl_log_error(-ENOMEM, "Out of memory");
        }
        return 0;
}

int ctl_job_path(const char *arg, char **ret_path) {
        const char *id = arg;
        unsigned long v;
        char *end;

        if (arg[0] == '/') {
                size_t n = strlen(VMMD_JOB_PATH_PREFIX "/");
                if (strncmp(arg, VMMD_JOB_PATH_PREFIX "/", n) != 0)
                        return ctl_log_error(-EINVAL, "Not a job object path: %s", arg);
                id = arg + n;
        }
        errno = 0;
        v = strtoul(id, &end, 10);
        if (errno != 0 || end == id || *end != '\0' || id[0] == '-' || id[0] == '+' || v == 0 ||
            v > UINT32_MAX)
                return ctl_log_error(-EINVAL, "Invalid job ID: %s", arg);
        if (asprintf(ret_path, VMMD_JOB_PATH_PREFIX "/%lu", v) < 0)
                return ctl_log_error(-ENOMEM, "Out of memory");
        return 0;
}

/* --- printing --- */

static void print_value(size_t f, const JobInfo *j) {
        const void *p = (const uint8_t *)j + job_fields[f].offset;
        char a[64], b[64];
        uint64_t v = 0;

        switch (job_fields[f].type) {
        case FIELD_U32:
                v = *(const uint32_t *)p;
                break;
        case FIELD_U64:
                v = *(const uint64_t *)p;
                break;
        case FIELD_DOUBLE:
                if (job_fields[f].unit == UNIT_FRACTION)
                        printf("%.1f%%\n", *(const double *)p * 100.0);
                else
                        printf("%g\n", *(const double *)p);
                return;
        case FIELD_BOOL:
                puts(*(const bool *)p ? "yes" : "no");
                return;
        case FIELD_STRING:
        case FIELD_PATH: {
                const char *s = *(const char *const *)p;
                puts(s && s[0] ? s : "-");
                return;
        }
        }

        switch (job_fields[f].unit) {
        case UNIT_BYTES:
                printf("%s (%" PRIu64 " bytes)\n", ctl_format_mib(a, sizeof a, v), v);
                break;
        case UNIT_USEC:
                if (v < 1000)
                        printf("%" PRIu64 " us\n", v);
                else
                        printf("%s (%" PRIu64 " us)\n", ctl_format_usec(a, sizeof a, v), v);
                break;
        case UNIT_RATE:
                if (v == 0 && strcmp(job_fields[f].name, "MaxBandwidth") == 0)
                        puts("unlimited");
                else
                        printf("%s (%" PRIu64 " bytes/s)\n", ctl_format_rate(a, sizeof a, v), v);
                break;
        case UNIT_PAGES_RATE:
                printf("%" PRIu64 " pages/s (%s)\n", v,
                       ctl_format_rate(a, sizeof a, v * PAGE_SIZE_BYTES));
                break;
        case UNIT_TIME:
                printf("%s\n", ctl_format_time(a, sizeof a, v));
                break;
        case UNIT_PERCENT:
                printf("%" PRIu64 "%%\n", v);
                break;
        case UNIT_PAGES:
                printf("%" PRIu64 " (%s)\n", v, ctl_format_mib(b, sizeof b, v * PAGE_SIZE_BYTES));
                break;
        default:
                printf("%" PRIu64 "\n", v);
        }
}

void job_info_print(const JobInfo *j) {
        char a[64];

        printf("Job %" PRIu32 " (%s)\n", j->id, j->path ?: "");
        for (size_t f = 0; f < ELEMENTSOF(job_fields); f++) {
                printf("%22s: ", job_fields[f].name);
                print_value(f, j);
                if (strcmp(job_fields[f].name, "DowntimeUSec") == 0) {
                        printf("%22s:%s\n", "DowntimeBreakdown", j->n_breakdown ? "" : " -");
                        for (size_t i = 0; i < j->n_breakdown; i++)
                                printf("%24s%-20s %10s\n", "", j->breakdown[i].phase,
                                       ctl_format_usec(a, sizeof a, j->breakdown[i].usec));
                }
        }
}

static json_object *json_u64(uint64_t v) {
        return json_object_new_uint64(v);
}

static json_object *job_info_to_json(const JobInfo *j) {
        json_object *o = json_object_new_object(), *bd;

        if (!o)
                return NULL;
        json_object_object_add(o, "Path", json_object_new_string(j->path ?: ""));
        for (size_t f = 0; f < ELEMENTSOF(job_fields); f++) {
                const void *p = (const uint8_t *)j + job_fields[f].offset;
                json_object *v = NULL;

                switch (job_fields[f].type) {
                case FIELD_U32:
                        v = json_u64(*(const uint32_t *)p);
                        break;
                case FIELD_U64:
                        v = json_u64(*(const uint64_t *)p);
                        break;
                case FIELD_DOUBLE:
                        v = json_object_new_double(*(const double *)p);
                        break;
                case FIELD_BOOL:
                        v = json_object_new_boolean(*(const bool *)p);
                        break;
                case FIELD_STRING:
                case FIELD_PATH:
                        v = json_object_new_string(*(const char *const *)p ?: "");
                        break;
                }
                json_object_object_add(o, job_fields[f].name, v);
        }
        bd = json_object_new_object();
        for (size_t i = 0; bd && i < j->n_breakdown; i++)
                json_object_object_add(bd, j->breakdown[i].phase, json_u64(j->breakdown[i].usec));
        json_object_object_add(o, "DowntimeBreakdown", bd);
        return o;
}


int job_info_print_json(const JobInfo *j) {
        json_object *o = job_info_to_json(j);
        int r = o ? ctl_print_json(o) : -ENOMEM;

        json_object_put(o);
        return r;
}

/* --- jobs --- */

/* The VM's name for a job's VM path, "-" if it is gone. */
static char *vm_name_of(Ctl *c, const char *job_path) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *vm;
        char *name = NULL;

        if (sd_bus_get_property(c->bus, VMMD_BUS_NAME, job_path, VMMD_JOB_INTERFACE, "VM", NULL,
                                &reply, "o") < 0 ||
            sd_bus_message_read(reply, "o", &vm) < 0 ||
            sd_bus_get_property_string(c->bus, VMMD_BUS_NAME, vm, VMMD_VM_INTERFACE, "Name",
                                       NULL, &name) < 0)
                return strdup("-");
        return name;
}

int verb_jobs(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        json_object *array = NULL;
        uint32_t id;
        const char *operation, *state, *path;
        bool header = false;
        int r;

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, VMMD_MANAGER_PATH, VMMD_MANAGER_INTERFACE,
                               "ListJobs", &error, &reply, NULL);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to list jobs");
        r = sd_bus_message_enter_container(reply, 'a', "(usso)");
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd: %s", strerror(-r));
        if (c->json && !(array = json_object_new_array()))
                return ctl_log_error(-ENOMEM, "Out of memory");

        while ((r = sd_bus_message_read(reply, "(usso)", &id, &operation, &state, &path)) > 0) {
                _cleanup_free_ char *vm = vm_name_of(c, path);
                double progress = 0;

                (void)sd_bus_get_property_trivial(c->bus, VMMD_BUS_NAME, path,
                                                  VMMD_JOB_INTERFACE, "Progress", NULL, 'd',
                                                  &progress);
                if (array) {
                        json_object *o = json_object_new_object();
                        if (!o)
                                break;
                        json_object_object_add(o, "id", json_u64(id));
                        json_object_object_add(o, "operation", json_object_new_string(operation));
                        json_object_object_add(o, "state", json_object_new_string(state));
                        json_object_object_add(o, "progress", json_object_new_double(progress));
                        json_object_object_add(o, "vm", json_object_new_string(vm ?: "-"));
                        json_object_object_add(o, "path", json_object_new_string(path));
                        json_object_array_add(array, o);
                        continue;
                }
                if (!header) {
                        printf("%5s  %-13s  %-9s  %8s  %-20s  %s\n", "ID", "OPERATION", "STATE",
                               "PROGRESS", "VM", "PATH");
                        header = true;
                }
                printf("%5" PRIu32 "  %-13s  %-9s  %7.1f%%  %-20s  %s\n", id, operation, state,
                       progress * 100.0, vm ?: "-", path);
        }
        if (r < 0) {
                json_object_put(array);
                return ctl_log_error(r, "Malformed reply from vmmd: %s", strerror(-r));
        }
        if (array) {
                r = ctl_print_json(array);
                json_object_put(array);
                return r;
        }
        if (!header)
                puts("No jobs.");
        return 0;
}

/* --- job ID --- */

static json_object *variant_to_json(sd_bus_message *m, char type) {
        union {
                int32_t i;
                uint32_t u;
                int64_t x;
                uint64_t t;
                double d;
                int b;
                const char *s;
        } v;
        char sig[2] = { type, 0 };

        if (sd_bus_message_read(m, "v", sig, &v) < 0)
                return NULL;
        switch (type) {
        case 'i':
                return json_object_new_int(v.i);
        case 'u':
                return json_object_new_int64(v.u);
        case 'x':
                return json_object_new_int64(v.x);
        case 't':
                return json_object_new_uint64(v.t);
        case 'd':
                return json_object_new_double(v.d);
        case 'b':
                return json_object_new_boolean(v.b);
        default:
                return json_object_new_string(v.s);
        }
}

/* An a{sv} of basic values (GetStats) as a JSON object; other values are skipped. */
static int stats_to_json(sd_bus_message *m, json_object **ret) {
        json_object *o = json_object_new_object();
        int r;

        if (!o)
                return -ENOMEM;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents;

                r = sd_bus_message_read(m, "s", &key);
                if (r >= 0)
                        r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        break;
                if (contents[1] == '\0' && strchr("iuxtdbso", contents[0])) {
                        json_object *v = variant_to_json(m, contents[0]);
                        if (!v) {
                                r = -EBADMSG;
                                break;
                        }
                        json_object_object_add(o, key, v);
                } else if ((r = sd_bus_message_skip(m, "v")) < 0)
                        break;
                r = sd_bus_message_exit_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        *ret = o;
        return 0;
}

static int print_libvirt_stats(Ctl *c, const char *path) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        json_object *o = NULL;
        int r;

        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, VMMD_JOB_INTERFACE, "GetStats",
                               &error, &reply, "u", 0);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to read the job's statistics");
        r = stats_to_json(reply, &o);
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd: %s", strerror(-r));
        if (c->json)
                r = ctl_print_json(o);
        else {
                json_object_object_foreach(o, key, val)
                        printf("%-24s %s\n", key, json_object_get_string(val));
                r = 0;
        }
        json_object_put(o);
        return r;
}

typedef struct IterationRecord {
        uint32_t index, throttle;
        uint64_t duration_usec, bytes, dirty_pages, dirty_rate, bandwidth, expected_downtime;
} IterationRecord;

/* GetIterations(); 0 records if the daemon has none or no such method. */
static int fetch_iterations(Ctl *c, const char *path, IterationRecord **ret, size_t *ret_n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        IterationRecord *recs = NULL, rec;
        size_t n = 0;
        int r;

        *ret = NULL;
        *ret_n = 0;
        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, VMMD_JOB_INTERFACE, "GetIterations",
                               NULL, &reply, NULL);
        if (r < 0)
                return 0;
        r = sd_bus_message_enter_container(reply, 'a', "(utttttut)");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_read(reply, "(utttttut)", &rec.index, &rec.duration_usec,
                                        &rec.bytes, &rec.dirty_pages, &rec.dirty_rate,
                                        &rec.bandwidth, &rec.throttle,
                                        &rec.expected_downtime)) > 0) {
                IterationRecord *a = reallocarray(recs, n + 1, sizeof *recs);
                if (!a) {
                        free(recs);
                        return -ENOMEM;
                }
                recs = a;
                recs[n++] = rec;
        }
        if (r < 0) {
                free(recs);
                return r;
        }
        *ret = recs;
        *ret_n = n;
        return 0;
}

size_t job_print_iterations(Ctl *c, const char *path) {
        _cleanup_free_ IterationRecord *recs = NULL;
        size_t n;
        char d[32], b[32], w[32], e[32], dr[32];

        if (fetch_iterations(c, path, &recs, &n) < 0 || n == 0)
                return 0;
        printf("  %4s  %10s  %11s  %11s  %13s  %13s  %8s  %12s\n", "PASS", "DURATION", "SENT",
               "DIRTY PAGES", "DIRTY RATE", "BANDWIDTH", "THROTTLE", "EXP.DOWNTIME");
        for (size_t i = 0; i < n; i++) {
                if (n > 12 && i == 6) {
                        printf("  %4s  (%zu passes not shown)\n", "...", n - 11);
                        i = n - 6;
                }
                printf("  %4" PRIu32 "  %10s  %11s  %11" PRIu64 "  %13s  %13s  %7" PRIu32
                       "%%  %12s\n",
                       recs[i].index, ctl_format_usec(d, sizeof d, recs[i].duration_usec),
                       ctl_format_mib(b, sizeof b, recs[i].bytes), recs[i].dirty_pages,
                       ctl_format_rate(dr, sizeof dr, recs[i].dirty_rate * PAGE_SIZE_BYTES),
                       ctl_format_rate(w, sizeof w, recs[i].bandwidth), recs[i].throttle,
                       ctl_format_usec(e, sizeof e, recs[i].expected_downtime));
        }
        return n;
}

static json_object *iterations_to_json(Ctl *c, const char *path) {
        _cleanup_free_ IterationRecord *recs = NULL;
        json_object *a = json_object_new_array();
        size_t n;

        if (!a || fetch_iterations(c, path, &recs, &n) < 0)
                return a;
        for (size_t i = 0; i < n; i++) {
                json_object *o = json_object_new_object();
                if (!o)
                        break;
                json_object_object_add(o, "index", json_u64(recs[i].index));
                json_object_object_add(o, "duration_usec", json_u64(recs[i].duration_usec));
                json_object_object_add(o, "bytes", json_u64(recs[i].bytes));
                json_object_object_add(o, "dirty_pages", json_u64(recs[i].dirty_pages));
                json_object_object_add(o, "dirty_rate", json_u64(recs[i].dirty_rate));
                json_object_object_add(o, "bandwidth", json_u64(recs[i].bandwidth));
                json_object_object_add(o, "throttle_percent", json_u64(recs[i].throttle));
                json_object_object_add(o, "expected_downtime_usec",
                                       json_u64(recs[i].expected_downtime));
                json_object_array_add(a, o);
        }
        return a;
}

int verb_job_cancel(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *path = NULL;
        int r;

        if (argc != 2)
                return ctl_log_error(-EINVAL, "job-cancel takes one job ID");
        r = ctl_job_path(argv[1], &path);
        if (r < 0)
                return r;
        r = sd_bus_call_method(c->bus, VMMD_BUS_NAME, path, VMMD_JOB_INTERFACE, "Cancel", &error,
                               NULL, NULL);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to cancel the job");
        return 0;
}

int verb_job(Ctl *c, int argc, char *argv[]) {
        _cleanup_free_ char *path = NULL;
        JobInfo j = {};
        int r;

        if (argc != 2)
                return ctl_log_error(-EINVAL, "job takes one job ID");
        r = ctl_job_path(argv[1], &path);
        if (r < 0)
                return r;
        if (want_libvirt)
                return print_libvirt_stats(c, path);

        r = job_info_fetch(c, path, &j);
        if (r < 0)
                return r;
        if (c->json) {
                json_object *o = job_info_to_json(&j);
                if (o)
                        json_object_object_add(o, "Iterations", iterations_to_json(c, path));
                r = o ? ctl_print_json(o) : -ENOMEM;
                json_object_put(o);
        } else {
                job_info_print(&j);
                printf("%22s:\n", "Iterations");
                if (job_print_iterations(c, path) == 0)
                        printf("%24s-\n", "");
                r = 0;
        }
        job_info_done(&j);
        return r;
}
