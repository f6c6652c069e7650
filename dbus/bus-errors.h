/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>

#include "bus-api.h"

/* org.vmmd.VMM1.Error.* -> errno, for sd_bus_error_get_errno(). Registered once per process
 * by bus_errors_register(). */
extern const sd_bus_error_map vmmd_bus_error_map[];
int bus_errors_register(void);

/* Sets 'error' from a negative errno 'r' returned by a core call and the core's message:
 * the errno picks the error name, the message says what happened. Returns r. */
int bus_error_from_core(sd_bus_error *error, int r, const char *message);
