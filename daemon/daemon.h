/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "dbus/bus-service.h"
#include "macro.h"
#include "manager.h"

/* The vmmd process: an sd-event loop that owns the system bus connection and the Manager,
 * tells systemd about itself (READY=1 once the bus name is owned, STATUS=, watchdog,
 * STOPPING=1), stops VMs in an orderly way on SIGTERM and exits when idle. */

#define DAEMON_IDLE_TIMEOUT_BUS_ACTIVATED_USEC (UINT64_C(60) * USEC_PER_SEC)
#define DAEMON_SHUTDOWN_TIMEOUT_DEFAULT_USEC (UINT64_C(30) * USEC_PER_SEC)

typedef struct DaemonOptions {
        uint64_t idle_timeout_usec;     /* exit after this long without VMs or calls; 0: never */
        uint64_t shutdown_timeout_usec; /* on SIGTERM, how long guests get to power off */
        unsigned max_vms;
        VmOptions vm; /* for every VM: VMMD_DIRTY_RING=0 and VMMD_THP=0 turn those off */
} DaemonOptions;

typedef struct Daemon {
        DaemonOptions options;
        sd_event *event;
        sd_bus *bus;
        Manager *manager;
        BusService *service;
        sd_bus_slot *name_slot;
        sd_bus_slot *filter_slot;
        sd_event_source *sigterm_source;
        sd_event_source *sigint_source;
        sd_event_source *idle_timer;
        sd_event_source *shutdown_timer;
        bool observing;
        bool ready;        /* the bus name is ours */
        bool stopping;     /* SIGTERM/SIGINT received */
        bool exiting_idle; /* the name was given back after an idle period */
} Daemon;

int daemon_new(const DaemonOptions *options, Daemon **ret);
Daemon *daemon_free(Daemon *d);
DEFINE_TRIVIAL_CLEANUP_FUNC(Daemon *, daemon_free);

/* Connects to the system bus ($DBUS_SYSTEM_BUS_ADDRESS when set), takes the name and runs
 * until SIGTERM, SIGINT or idleness. Returns an exit status (0 or EXIT_FAILURE), or a
 * negative errno when it could not start. */
int daemon_run(Daemon *d);
