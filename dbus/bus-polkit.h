/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "bus-service.h"

/* Asynchronous authorization of a method call.
 *
 * Callers whose effective uid is 0 are allowed without asking polkit, as systemd's own
 * services do. For everybody else polkit is asked (CheckAuthorization, subject
 * "system-bus-name", details "vm" and "verb", AllowUserInteraction when the call carries
 * the allow-interactive-authorization flag). Without polkit on the bus only root is allowed.
 * The event loop keeps serving other calls meanwhile. */

/* Called once the caller is authorized, with the original call rewound to its first
 * argument. Replies itself and returns >= 0, or returns < 0 (with 'error' set or not) and
 * the error is replied. */
typedef int (*BusAuthorizedHandler)(BusService *s, sd_bus_message *m, sd_bus_error *error);

/* Calls held for authorization at once: per caller (unique bus name) and in all; more are
 * refused with LimitExceeded. */
#define BUS_AUTH_MAX_PER_CALLER 16
#define BUS_AUTH_MAX 1024

/* Returns 1: the call is taken over and will be answered, or < 0 with 'error' set. */
int bus_authorize(BusService *s, sd_bus_message *m, const char *action, const char *vm_name,
                  const char *verb, BusAuthorizedHandler handler, sd_bus_error *error);

void bus_auth_queries_free(BusService *s);

/* In a BusAuthorizedHandler: the caller's uid, which the authorization asked of the bus
 * already (true), so nothing asks again synchronously. */
bool bus_authorized_uid(sd_bus_message *m, uid_t *ret);
