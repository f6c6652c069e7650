/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stdint.h>

/* CLOCK_MONOTONIC in µs: for durations and deadlines. */
uint64_t time_monotonic_usec(void);
/* CLOCK_MONOTONIC in ns: for short intervals. */
uint64_t time_monotonic_nsec(void);
/* CLOCK_REALTIME in µs: for timestamps shown to people. */
uint64_t time_realtime_usec(void);
