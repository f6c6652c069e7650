/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <inttypes.h>
#include <signal.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "config-build.h"
#include "daemon.h"
#include "dbus/bus-api.h"
#include "log-vm.h"
#include "log.h"

static void daemon_update_status(Daemon *d) {
        size_t n = manager_count_vms(d->manager), active = manager_count_active_vms(d->manager);

        if (!d->ready)
                return;
        if (d->stopping)
                (void)sd_notifyf(false, "STATUS=Shutting down, %zu VMs still running", active);
        else if (n == 0)
                (void)sd_notify(false, "STATUS=No VMs");
        else
                (void)sd_notifyf(false, "STATUS=%zu VMs, %zu running or paused", n, active);
}

/* The idle timer runs while there is no VM; each method call pushes it back. */
static void daemon_update_idle_timer(Daemon *d) {
        int r;

        if (!d->idle_timer)
                return;
        if (!d->ready || d->stopping || d->exiting_idle || manager_count_vms(d->manager) > 0) {
                (void)sd_event_source_set_enabled(d->idle_timer, SD_EVENT_OFF);
                return;
        }
        r = sd_event_source_set_time_relative(d->idle_timer, d->options.idle_timeout_usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(d->idle_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the idle timer: %m");
}

static int on_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        Daemon *d = userdata;
        int r;

        if (manager_count_vms(d->manager) > 0 || bus_service_pending_calls(d->service) > 0) {
                daemon_update_idle_timer(d); /* not idle after all: look again later */
                return 0;
        }

        log_info("No VMs and no calls for %" PRIu64 " s, exiting",
                 d->options.idle_timeout_usec / USEC_PER_SEC);
        d->exiting_idle = true;
        manager_set_shutting_down(d->manager, true);
        (void)sd_notify(false, "STOPPING=1\nSTATUS=Exiting, idle");

        /* Give the name back first: a call made from now on starts a new vmmd, and the calls
         * already queued for us are answered before we go (see daemon_run()). */
        r = sd_bus_release_name(d->bus, VMMD_BUS_NAME);
        if (r < 0)
                log_warning_errno(r, "Failed to release the bus name: %m");
        return sd_event_exit(d->event, 0);
}

static int on_bus_message(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Daemon *d = userdata;

        if (sd_bus_message_is_method_call(m, NULL, NULL) > 0)
                daemon_update_idle_timer(d);
        return 0; /* let it be dispatched */
}

static void daemon_stop_remaining_vms(Daemon *d, const char *why) {
        for (size_t i = 0; i < d->manager->n_vms; i++) {
                ManagedVm *v = d->manager->vms[i];
                _cleanup_free_ char *message = NULL;
                const char *name = managed_vm_get_name(v);
                int r;

                if (!vm_state_is_active(managed_vm_get_state(v)))
                        continue;
                log_vm(LOG_NOTICE, name, "Stopping VM %s: %s", name, why);
                r = managed_vm_act(v, VM_ACTION_STOP, &message);
                if (r < 0)
                        log_vm_errno(LOG_ERR, r, name, "%s", message ?: "Failed to stop VM");
        }
}

static int on_shutdown_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Daemon *d = userdata;

        daemon_stop_remaining_vms(d, "its guest did not power off in time");
        return sd_event_exit(d->event, 0);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Daemon *d = userdata;
        const char *sig = strsignal((int)si->ssi_signo);
        size_t active;
        int r;

        if (d->stopping) {
                log_notice("Received %s again: stopping the remaining VMs now", sig);
                daemon_stop_remaining_vms(d, "vmmd was asked twice to exit");
                return sd_event_exit(d->event, 0);
        }

        d->stopping = true;
        manager_set_shutting_down(d->manager, true);
        daemon_update_idle_timer(d);
        active = manager_count_active_vms(d->manager);
        log_info("Received %s, exiting: %zu VMs to shut down", sig, active);
        (void)sd_notify(false, "STOPPING=1");
        daemon_update_status(d);
        if (active == 0)
                return sd_event_exit(d->event, 0);

        if (d->options.shutdown_timeout_usec == 0) {
                daemon_stop_remaining_vms(d, "vmmd is exiting");
                return sd_event_exit(d->event, 0);
        }

        /* Orderly: a power-off request to each guest, then a deadline. The state observer
         * ends the loop as soon as the last VM is down. */
        for (size_t i = 0; i < d->manager->n_vms; i++) {
                ManagedVm *v = d->manager->vms[i];
                _cleanup_free_ char *message = NULL;
                const char *name = managed_vm_get_name(v);
                VmState st = managed_vm_get_state(v);

                if (!vm_state_is_active(st))
                        continue;
                if (vm_action_allowed_in(VM_ACTION_SHUTDOWN, st)) {
                        log_vm(LOG_INFO, name,
                               "Asking the guest of VM %s to power off (stopped in %" PRIu64
                               " s otherwise)",
                               name, d->options.shutdown_timeout_usec / USEC_PER_SEC);
                        r = managed_vm_act(v, VM_ACTION_SHUTDOWN, &message);
                } else
                        r = -EBADFD;
                if (r < 0) {
                        log_vm(LOG_NOTICE, name, "Stopping VM %s, which is %s, now", name,
                               vm_state_to_string(managed_vm_get_state(v)));
                        free(message);
                        message = NULL;
                        r = managed_vm_act(v, VM_ACTION_STOP, &message);
                        if (r < 0)
                                log_vm_errno(LOG_ERR, r, name, "%s",
                                             message ?: "Failed to stop VM");
                }
        }
        if (manager_count_active_vms(d->manager) == 0)
                return sd_event_exit(d->event, 0);

        r = sd_event_add_time_relative(d->event, &d->shutdown_timer, CLOCK_MONOTONIC,
                                       d->options.shutdown_timeout_usec, 0, on_shutdown_timeout,
                                       d);
        if (r < 0) {
                log_error_errno(r, "Failed to arm the shutdown timer: %m");
                daemon_stop_remaining_vms(d, "vmmd is exiting");
                return sd_event_exit(d->event, 0);
        }
        return 0;
}

static void on_vm_added(Manager *m, ManagedVm *v, void *userdata) {
        Daemon *d = userdata;

        daemon_update_idle_timer(d);
        daemon_update_status(d);
}

static void on_vm_removed(Manager *m, const char *name, void *userdata) {
        Daemon *d = userdata;

        daemon_update_idle_timer(d);
        daemon_update_status(d);
}

static void on_vm_state_changed(Manager *m, ManagedVm *v, VmState old_state, VmState new_state,
                                void *userdata) {
        Daemon *d = userdata;

        if (old_state == new_state)
                return;
        daemon_update_status(d);
        if (d->stopping && manager_count_active_vms(m) == 0) {
                log_info("All VMs are down");
                (void)sd_event_exit(d->event, 0);
        }
}

static const ManagerObserver daemon_observer = {
        .vm_added = on_vm_added,
        .vm_removed = on_vm_removed,
        .vm_state_changed = on_vm_state_changed,
};

static int on_name_acquired(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        Daemon *d = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        uint32_t code = 0;
        int r;

        if (e) {
                log_error("Failed to acquire bus name %s: %s", VMMD_BUS_NAME, e->message);
                return sd_event_exit(d->event, EXIT_FAILURE);
        }
        r = sd_bus_message_read(reply, "u", &code);
        if (r < 0 || (code != 1 /* primary owner */ && code != 4 /* already owner */)) {
                log_error("Failed to acquire bus name %s: %s", VMMD_BUS_NAME,
                          code == 3 ? "another process owns it (is vmmd already running?)"
                                    : "unexpected reply");
                return sd_event_exit(d->event, EXIT_FAILURE);
        }

        d->ready = true;
        log_info("vmmd %s ready on the bus as %s", PACKAGE_VERSION, VMMD_BUS_NAME);
        (void)sd_notify(false, "READY=1");
        daemon_update_status(d);
        daemon_update_idle_timer(d);
        return 0;
}

int daemon_new(const DaemonOptions *options, Daemon **ret) {
        _cleanup_(daemon_freep) Daemon *d = NULL;
        sigset_t mask;
        int r;

        d = calloc(1, sizeof *d);
        if (!d)
                return log_error_errno(ENOMEM, "Out of memory");
        d->options = *options;

        r = sd_event_default(&d->event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");

        /* Blocked here, so vCPU threads started later inherit the mask and the signals
         * reach the loop's signalfd. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Failed to block signals: %m");
        r = sd_event_add_signal(d->event, &d->sigterm_source, SIGTERM, on_signal, d);
        if (r >= 0)
                r = sd_event_add_signal(d->event, &d->sigint_source, SIGINT, on_signal, d);
        if (r < 0)
                return log_error_errno(r, "Failed to watch signals: %m");

        r = sd_event_set_watchdog(d->event, true);
        if (r < 0)
                return log_error_errno(r, "Failed to enable the watchdog: %m");
        if (r > 0)
                log_debug("Watchdog enabled");

        r = manager_new(d->event, &d->manager);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the manager: %m");
        manager_set_vm_options(d->manager, &options->vm);
        r = manager_set_max_vms(d->manager, options->max_vms);
        if (r < 0)
                return log_error_errno(r, "Invalid VM limit %u: %m", options->max_vms);
        r = manager_add_observer(d->manager, &daemon_observer, d);
        if (r < 0)
                return log_error_errno(r, "Failed to observe the manager: %m");
        d->observing = true;

        if (options->idle_timeout_usec > 0) {
                /* An explicit deadline: sd_event_run() also wakes up for the watchdog. */
                r = sd_event_add_time_relative(d->event, &d->idle_timer, CLOCK_MONOTONIC,
                                               options->idle_timeout_usec, USEC_PER_SEC / 10,
                                               on_idle, d);
                if (r < 0)
                        return log_error_errno(r, "Failed to create the idle timer: %m");
                (void)sd_event_source_set_enabled(d->idle_timer, SD_EVENT_OFF);
        }

        *ret = TAKE_PTR(d);
        return 0;
}

Daemon *daemon_free(Daemon *d) {
        if (!d)
                return NULL;
        sd_event_source_disable_unref(d->idle_timer);
        sd_event_source_disable_unref(d->shutdown_timer);
        sd_event_source_disable_unref(d->sigterm_source);
        sd_event_source_disable_unref(d->sigint_source);
        d->service = bus_service_free(d->service);
        sd_bus_slot_unref(d->name_slot);
        sd_bus_slot_unref(d->filter_slot);
        sd_bus_flush_close_unref(d->bus);
        if (d->observing)
                manager_remove_observer(d->manager, &daemon_observer, d);
        /* Frees the VMs; running ones (a second SIGTERM, a failure) are stopped there. */
        manager_free(d->manager);
        sd_event_unref(d->event);
        free(d);
        return NULL;
}

int daemon_run(Daemon *d) {
        int r;

        r = sd_bus_open_system_with_description(&d->bus, "vmmd");
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the system bus: %m");

        r = bus_service_new(d->bus, d->manager, &d->service);
        if (r < 0)
                return log_error_errno(r, "Failed to register the bus objects: %m");
        r = sd_bus_add_filter(d->bus, &d->filter_slot, on_bus_message, d);
        if (r < 0)
                return log_error_errno(r, "Failed to add the bus filter: %m");
        r = sd_bus_attach_event(d->bus, d->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
        /* Without its bus nobody can reach the daemon: end the loop (VMs are stopped on the
         * way out, and systemd restarts the service). */
        r = sd_bus_set_exit_on_disconnect(d->bus, true);
        if (r < 0)
                return log_error_errno(r, "Failed to set exit on bus disconnect: %m");
        r = sd_bus_request_name_async(d->bus, &d->name_slot, VMMD_BUS_NAME, 0, on_name_acquired,
                                      d);
        if (r < 0)
                return log_error_errno(r, "Failed to request the bus name: %m");

        r = sd_event_loop(d->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");

        if (d->exiting_idle) {
                /* Answer what was queued before the name went away. */
                for (;;) {
                        int k = sd_bus_process(d->bus, NULL);
                        if (k <= 0)
                                break;
                }
        }
        (void)sd_bus_flush(d->bus);

        if (manager_count_active_vms(d->manager) > 0)
                daemon_stop_remaining_vms(d, "vmmd is exiting");
        log_info("vmmd exiting");
        return r;
}
