/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-event.h>

#include "dbus/bus-api.h"
#include "time-util.h"
#include "vmmctl-format.h"
#include "vmmctl-migrate.h"

/* migrate and receive: start a migration job, then follow it (PropertiesChanged drives a
 * progress bar or periodic lines, Job.Wait() tells the end) and print its final figures.
 * With --dispatch, print the job's object path and return at once. Ctrl-C cancels the
 * job (virsh migrate does the same); a second Ctrl-C stops waiting. */

typedef enum ProgressMode {
        PROGRESS_AUTO,
        PROGRESS_BAR,
        PROGRESS_LINES,
        PROGRESS_NONE,
} ProgressMode;

static struct {
        bool has_max_downtime;
        uint64_t max_downtime_ms;
        bool has_bandwidth;
        uint64_t bandwidth_mibps;
        bool has_connections;
        uint32_t connections;
        bool no_auto_converge;
        const char *zerocopy;
        bool has_switchover_timeout;
        uint64_t switchover_timeout_ms;
        bool dispatch;
        const char *config;
        ProgressMode progress;
} arg;

static int parse_u64(const char *s, uint64_t max, uint64_t *ret) {
        unsigned long long v;
        char *end;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || s[0] == '+' || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

int ctl_migrate_parse_option(int option, const char *optarg_) {
        uint64_t v;

        switch (option) {
        case ARG_MAX_DOWNTIME:
                if (parse_u64(optarg_, UINT64_MAX, &arg.max_downtime_ms) < 0)
                        return ctl_log_error(-EINVAL, "Invalid --max-downtime=%s (milliseconds)",
                                             optarg_);
                arg.has_max_downtime = true;
                return 1;
        case ARG_BANDWIDTH:
                if (parse_u64(optarg_, UINT64_MAX, &arg.bandwidth_mibps) < 0)
                        return ctl_log_error(-EINVAL, "Invalid --bandwidth=%s (MiB/s, 0 = no limit)",
                                             optarg_);
                arg.has_bandwidth = true;
                return 1;
        case ARG_CONNECTIONS:
                if (parse_u64(optarg_, UINT32_MAX, &v) < 0)
                        return ctl_log_error(-EINVAL, "Invalid --connections=%s", optarg_);
                arg.connections = (uint32_t)v;
                arg.has_connections = true;
                return 1;
        case ARG_NO_AUTO_CONVERGE:
                arg.no_auto_converge = true;
                return 1;
        case ARG_ZEROCOPY:
                arg.zerocopy = optarg_;
                return 1;
        case ARG_SWITCHOVER_TIMEOUT:
                if (parse_u64(optarg_, UINT64_MAX, &arg.switchover_timeout_ms) < 0)
                        return ctl_log_error(-EINVAL, "Invalid --switchover-timeout=%s (milliseconds)", optarg_);
                arg.has_switchover_timeout = true;
                return 1;
        case ARG_DISPATCH:
                arg.dispatch = true;
                return 1;
        case ARG_CONFIG:
                arg.config = optarg_;
                return 1;
        case ARG_PROGRESS:
                if (strcmp(optarg_, "auto") == 0)
                        arg.progress = PROGRESS_AUTO;
                else if (strcmp(optarg_, "bar") == 0)
                        arg.progress = PROGRESS_BAR;
                else if (strcmp(optarg_, "lines") == 0)
                        arg.progress = PROGRESS_LINES;
                else if (strcmp(optarg_, "none") == 0)
                        arg.progress = PROGRESS_NONE;
                else
                        return ctl_log_error(-EINVAL,
                                             "Invalid --progress=%s (bar, lines, none, auto)",
                                             optarg_);
                return 1;
        case ARG_LIBVIRT:
                ctl_job_set_libvirt(true);
                return 1;
        }
        return 0;
}

/* --- following a job --- */

typedef struct Follow {
        Ctl *ctl;
        const char *path;
        bool outgoing;
        JobInfo info;
        ProgressMode mode;
        bool bar_shown;
        uint64_t last_line;
        char last_phase[32];

        bool ended;
        int quit; /* < 0: stop waiting with this error */
        bool success;
        char *error_name;
        char *error_message;
        sd_bus_error wait_error;
        int wait_r;

        unsigned interrupts;
} Follow;

static int terminal_columns(void) {
        struct winsize ws = {};
        const char *e;

        if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) >= 0 && ws.ws_col >= 20)
                return ws.ws_col;
        e = getenv("COLUMNS");
        if (e && atoi(e) >= 20)
                return atoi(e);
        return 80;
}

/* The figures after the bar (or in a line): what the job has done and expects. */
static void format_figures(const Follow *f, char *buf, size_t size) {
        const JobInfo *j = &f->info;
        char a[32], b[32], r[32], d[32], e[32];
        int n;

        if (j->progress_valid)
                n = snprintf(buf, size, "%5.1f%%", j->progress * 100.0);
        else
                n = snprintf(buf, size, "  -.-%%");
        if (n < 0 || (size_t)n >= size)
                return;
        n += snprintf(buf + n, size - (size_t)n, "  %s %s, %s left, %s",
                      f->outgoing ? "sent" : "received", ctl_format_mib(a, sizeof a, j->bytes_processed),
                      ctl_format_mib(b, sizeof b, j->bytes_remaining),
                      ctl_format_rate(r, sizeof r, j->rate));
        if ((size_t)n >= size || !f->outgoing)
                return;
        /* Iteration counts completed passes: during precopy, the one running is the next. */
        bool precopy = j->phase &&
                       (strcmp(j->phase, "precopy") == 0 || strcmp(j->phase, "setup") == 0);
        n += snprintf(buf + n, size - (size_t)n, ", dirty %s, pass %" PRIu32 ", downtime ~%s",
                      ctl_format_rate(d, sizeof d, j->dirty_rate * 4096), j->iteration + precopy,
                      ctl_format_usec(e, sizeof e, j->expected_downtime_usec));
        if ((size_t)n < size && j->throttle_percent > 0)
                snprintf(buf + n, size - (size_t)n, ", throttle %" PRIu32 "%%",
                         j->throttle_percent);
}

static const char *phase_label(const JobInfo *j) {
        if (job_state_is_final_str(j->state))
                return j->state;
        if (j->phase && strcmp(j->phase, "downtime") == 0)
                return "switchover";
        return j->phase && j->phase[0] ? j->phase : (j->state ?: "");
}

static void render(Follow *f) {
        char figures[256], line[512];
        const JobInfo *j = &f->info;
        uint64_t now;

        switch (f->mode) {
        case PROGRESS_BAR: {
                int cols = terminal_columns(), width = cols >= 100 ? 30 : 20, filled;
                char bar[64];

                filled = j->progress_valid ? (int)(j->progress * width + 0.5) : 0;
                filled = MAX(0, MIN(width, filled));
                for (int i = 0; i < width; i++)
                        bar[i] = i < filled ? '#' : '.';
                bar[width] = '\0';
                format_figures(f, figures, sizeof figures);
                snprintf(line, sizeof line, "%-10s [%s] %s", phase_label(j), bar, figures);
                if ((int)strlen(line) > cols - 1)
                        line[cols - 1] = '\0';
                fprintf(stderr, "\r%s\033[K", line);
                fflush(stderr);
                f->bar_shown = true;
                break;
        }
        case PROGRESS_LINES:
                now = time_monotonic_usec();
                /* A line a second, and one at every change of phase. */
                if (f->last_line != 0 && now - f->last_line < USEC_PER_SEC &&
                    strcmp(f->last_phase, phase_label(j)) == 0)
                        break;
                f->last_line = now;
                snprintf(f->last_phase, sizeof f->last_phase, "%s", phase_label(j));
                format_figures(f, figures, sizeof figures);
                fprintf(stderr, "[%7.1fs] %-10s %s\n", (double)j->elapsed_usec / USEC_PER_SEC,
                        phase_label(j), figures);
                fflush(stderr);
                break;
        default:
                break;
        }
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Follow *f = userdata;
        const char *interface;

        if (sd_bus_message_read(m, "s", &interface) < 0 ||
            strcmp(interface, VMMD_JOB_INTERFACE) != 0)
                return 0;
        if (job_info_read_properties(m, &f->info) < 0)
                return 0;
        if (!f->ended)
                render(f);
        return 0;
}

static int set_string(char **field, const char *s) {
        char *copy = strdup(s ?: "");

        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

static int on_wait_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Follow *f = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);
        const char *name, *message;
        int success, r;

        if (e) {
                f->wait_r = -sd_bus_error_get_errno(e) ?: -EIO;
                (void)sd_bus_error_copy(&f->wait_error, e);
        } else {
                r = sd_bus_message_read(m, "bss", &success, &name, &message);
                if (r < 0)
                        f->wait_r = r;
                else {
                        f->success = success;
                        if (set_string(&f->error_name, name) < 0 ||
                            set_string(&f->error_message, message) < 0)
                                f->wait_r = -ENOMEM;
                }
        }
        f->ended = true;
        return 0;
}

static int on_cancel_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Follow *f = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (e) {
                if (f->bar_shown)
                        fputc('\n', stderr);
                (void)ctl_log_bus_error(e, -EIO, "Failed to cancel the job");
        }
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Follow *f = userdata;
        int r;

        if (f->interrupts++ > 0 || si->ssi_signo != SIGINT) {
                f->quit = -EINTR;
                return 0;
        }
        if (f->bar_shown)
                fputc('\n', stderr);
        fprintf(stderr, "vmmctl: cancelling job %" PRIu32 " (Ctrl-C again to stop waiting; the job "
                        "then goes on)\n", f->info.id);
        r = sd_bus_call_method_async(f->ctl->bus, NULL, VMMD_BUS_NAME, f->path,
                                     VMMD_JOB_INTERFACE, "Cancel", on_cancel_reply, f, NULL);
        if (r < 0)
                f->quit = r;
        return 0;
}

static const char *full_error_name(char *buf, size_t size, const char *name) {
        if (!name || !name[0])
                return VMMD_ERROR_MIGRATION_FAILED;
        if (strchr(name, '.'))
                return name;
        snprintf(buf, size, VMMD_ERROR_PREFIX "%s", name);
        return buf;
}

/* The final figures of a job (after it ended). */
static void print_summary(Ctl *c, const JobInfo *j, bool outgoing, const char *vm_name,
                          const char *uri) {
        char a[32], b[32], d[32];
        uint64_t sum = 0;

        if (outgoing)
                printf("Migration of VM '%s' to %s: %s\n", vm_name, uri, j->state ?: "?");
        else
                printf("Migration of VM '%s' received on %s: %s\n", vm_name, uri,
                       j->state ?: "?");
        printf("  %-14s %" PRIu32 " (%s)\n", "Job:", j->id, j->path ?: "");
        printf("  %-14s %s (setup %s)\n", "Total time:", ctl_format_usec(a, sizeof a, j->elapsed_usec),
               ctl_format_usec(b, sizeof b, j->setup_usec));
        if (j->downtime_usec > 0 || outgoing) {
                printf("  %-14s %s", "Downtime:", j->downtime_usec
                                                          ? ctl_format_usec(a, sizeof a, j->downtime_usec)
                                                          : "-");
                if (outgoing)
                        printf(" (limit %s)", ctl_format_usec(b, sizeof b, j->max_downtime_usec));
                putchar('\n');
                for (size_t i = 0; i < j->n_breakdown; i++) {
                        printf("    %-22s %10s\n", j->breakdown[i].phase,
                               ctl_format_usec(a, sizeof a, j->breakdown[i].usec));
                        sum += j->breakdown[i].usec;
                }
                if (j->n_breakdown > 0 && j->downtime_usec >= sum)
                        printf("    %-22s %10s\n", "(not attributed)",
                               ctl_format_usec(a, sizeof a, j->downtime_usec - sum));
        }
        printf("  %-14s %s %s (%" PRIu64 " bytes); %" PRIu64 " pages with data, %" PRIu64
               " zero pages\n",
               "Data:", ctl_format_mib(a, sizeof a, j->bytes_processed), outgoing ? "sent" : "received",
               j->bytes_processed, j->normal_pages, j->zero_pages);
        printf("  %-14s %s", "Rate:", ctl_format_rate(a, sizeof a, j->rate));
        if (j->max_bandwidth)
                printf(" (limit %s)", ctl_format_rate(b, sizeof b, j->max_bandwidth));
        putchar('\n');
        if (outgoing) {
                printf("  %-14s %" PRIu32 " (dirty rate %s at the end, throttle %" PRIu32 "%%)\n",
                       "Passes:", j->iteration, ctl_format_rate(d, sizeof d, j->dirty_rate * 4096),
                       j->throttle_percent);
                job_print_iterations(c, j->path);
        }
        if (j->error_message && j->error_message[0])
                printf("  %-14s %s: %s\n", "Error:", j->error_name ?: "", j->error_message);
}

static int follow_job(Ctl *c, const char *path, bool outgoing, const char *vm_name,
                      const char *uri) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *props_slot = NULL, *wait_slot = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        Follow f = {
                .ctl = c,
                .path = path,
                .outgoing = outgoing,
                .mode = arg.progress,
                .wait_error = SD_BUS_ERROR_NULL,
        };
        sigset_t mask, old;
        char name_buf[128];
        int r;

        if (f.mode == PROGRESS_AUTO)
                f.mode = isatty(STDERR_FILENO) ? PROGRESS_BAR : PROGRESS_LINES;

        r = sd_event_new(&event);
        if (r < 0)
                return ctl_log_error(r, "Failed to make an event loop: %s", strerror(-r));
        r = sd_bus_attach_event(c->bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return ctl_log_error(r, "Failed to attach the bus: %s", strerror(-r));

        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, &old);
        (void)sd_event_add_signal(event, NULL, SIGINT, on_signal, &f);
        (void)sd_event_add_signal(event, NULL, SIGTERM, on_signal, &f);

        /* The match first, then the current values: no change falls in between. */
        r = sd_bus_match_signal(c->bus, &props_slot, NULL, path, "org.freedesktop.DBus.Properties",
                                "PropertiesChanged", on_properties_changed, &f);
        if (r < 0) {
                r = ctl_log_error(r, "Failed to watch the job: %s", strerror(-r));
                goto finish;
        }
        r = job_info_fetch(c, path, &f.info);
        if (r < 0)
                goto finish;
        render(&f);

        /* Wait() replies when the job ends, however long it runs: no call timeout. */
        r = sd_bus_message_new_method_call(c->bus, &call, VMMD_BUS_NAME, path, VMMD_JOB_INTERFACE,
                                           "Wait");
        if (r >= 0)
                r = sd_bus_call_async(c->bus, &wait_slot, call, on_wait_reply, &f, UINT64_MAX);
        if (r < 0) {
                r = ctl_log_error(r, "Failed to wait for the job: %s", strerror(-r));
                goto finish;
        }

        /* Not sd_event_loop(): leaving it would close the bus (sd-bus's exit handler), and
         * the final figures are read after the loop. */
        r = 0;
        while (r >= 0 && !f.ended && f.quit == 0)
                r = sd_event_run(event, UINT64_MAX);
        if (r >= 0 && f.quit < 0)
                r = f.quit;
        if (f.bar_shown) {
                render(&f);
                fputc('\n', stderr);
        }
        if (r == -EINTR) {
                r = ctl_log_error(r, "Stopped waiting; job %" PRIu32 " (%s) goes on", f.info.id,
                                  path);
                goto finish;
        }
        if (r < 0) {
                r = ctl_log_error(r, "Event loop failed: %s", strerror(-r));
                goto finish;
        }
        if (f.wait_r < 0) {
                r = ctl_log_bus_error(&f.wait_error, f.wait_r, "Lost the job");
                goto finish;
        }

        /* The final values (the last PropertiesChanged came before Completed; read them all
         * anyway). */
        r = job_info_fetch(c, path, &f.info);
        if (r < 0)
                goto finish;
        if (c->json)
                r = job_info_print_json(&f.info);
        else
                print_summary(c, &f.info, outgoing, vm_name, uri);
        fflush(stdout);

        if (!f.success) {
                sd_bus_error e = {
                        .name = full_error_name(name_buf, sizeof name_buf, f.error_name),
                        .message = f.error_message && f.error_message[0] ? f.error_message
                                                                         : "The migration failed",
                };
                r = ctl_log_bus_error(&e, -EIO, NULL);
        }

finish:
        props_slot = sd_bus_slot_unref(props_slot);
        wait_slot = sd_bus_slot_unref(wait_slot);
        (void)sd_bus_detach_event(c->bus);
        sigprocmask(SIG_SETMASK, &old, NULL);
        job_info_done(&f.info);
        free(f.error_name);
        free(f.error_message);
        sd_bus_error_free(&f.wait_error);
        return r;
}

/* --- migrate --- */

static int append_migrate_options(Ctl *c, sd_bus_message *m) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg.has_max_downtime)
                r = sd_bus_message_append(m, "{sv}", "max_downtime_ms", "t", arg.max_downtime_ms);
        if (r >= 0 && arg.has_bandwidth)
                r = sd_bus_message_append(m, "{sv}", "max_bandwidth_mibps", "t",
                                          arg.bandwidth_mibps);
        if (r >= 0 && arg.has_connections)
                r = sd_bus_message_append(m, "{sv}", "connections", "u", arg.connections);
        if (r >= 0 && arg.no_auto_converge)
                r = sd_bus_message_append(m, "{sv}", "auto_converge", "b", 0);
        if (r >= 0 && c->has_timeout)
                r = sd_bus_message_append(m, "{sv}", "timeout_s", "t",
                                          c->timeout_usec / USEC_PER_SEC);
        if (r >= 0 && arg.zerocopy)
                r = sd_bus_message_append(m, "{sv}", "zerocopy", "s", arg.zerocopy);
        if (r >= 0 && arg.has_switchover_timeout)
                r = sd_bus_message_append(m, "{sv}", "switchover_timeout_ms", "t", arg.switchover_timeout_ms);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

int verb_migrate(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *vm_path = NULL, *job_path = NULL;
        const char *job;
        int r;

        if (argc != 3)
                return ctl_log_error(-EINVAL, "migrate takes a VM name and a destination URI");
        if (arg.config)
                return ctl_log_error(-EINVAL, "--config is an option of receive, not migrate");

        r = ctl_get_vm_path(c, argv[1], &vm_path);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(c->bus, &m, VMMD_BUS_NAME, vm_path, VMMD_VM_INTERFACE,
                                           "Migrate");
        if (r >= 0)
                r = sd_bus_message_append(m, "s", argv[2]);
        if (r >= 0)
                r = append_migrate_options(c, m);
        if (r < 0)
                return ctl_log_error(r, "Failed to build the call: %s", strerror(-r));
        r = sd_bus_call(c->bus, m, 0, &error, &reply);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to start the migration");
        r = sd_bus_message_read(reply, "o", &job);
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd");
        job_path = strdup(job);
        if (!job_path)
                return ctl_log_error(-ENOMEM, "Out of memory");

        if (arg.dispatch) {
                puts(job_path);
                return 0;
        }
        return follow_job(c, job_path, true, argv[1], argv[2]);
}

/* --- receive --- */

int verb_receive(Ctl *c, int argc, char *argv[]) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *job_path = NULL;
        const char *vm, *job;
        int r;

        if (argc != 3)
                return ctl_log_error(-EINVAL, "receive takes a VM name and a URI to listen on");
        if (arg.has_max_downtime || arg.has_bandwidth || arg.has_connections ||
            arg.no_auto_converge || arg.zerocopy)
                return ctl_log_error(-EINVAL, "The source chooses how to migrate: give "
                                              "--max-downtime, --bandwidth, --connections, "
                                              "--no-auto-converge and --zerocopy to migrate");

        r = sd_bus_message_new_method_call(c->bus, &m, VMMD_BUS_NAME, VMMD_MANAGER_PATH,
                                           VMMD_MANAGER_INTERFACE, "ReceiveMigration");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", argv[1], argv[2]);
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && arg.config)
                r = sd_bus_message_append(m, "{sv}", "config", "s", arg.config);
        if (r >= 0 && c->has_timeout)
                r = sd_bus_message_append(m, "{sv}", "timeout_s", "t",
                                          c->timeout_usec / USEC_PER_SEC);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return ctl_log_error(r, "Failed to build the call: %s", strerror(-r));
        r = sd_bus_call(c->bus, m, 0, &error, &reply);
        if (r < 0)
                return ctl_log_bus_error(&error, r, "Failed to receive a migration");
        r = sd_bus_message_read(reply, "oo", &vm, &job);
        if (r < 0)
                return ctl_log_error(r, "Malformed reply from vmmd");
        job_path = strdup(job);
        if (!job_path)
                return ctl_log_error(-ENOMEM, "Out of memory");

        if (arg.dispatch) {
                puts(job_path);
                return 0;
        }
        if (!c->json)
                fprintf(stderr, "Waiting for VM '%s' on %s (job %s)\n", argv[1], argv[2],
                        job_path);
        return follow_job(c, job_path, false, argv[1], argv[2]);
}
