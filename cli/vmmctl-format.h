/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Human formats vmmctl prints: "256.0 MiB", "12.3 ms", "812.5 MiB/s",
 * "2026-12-07 17:50:01.123" (local time; "-" for 0). */
const char *ctl_format_mib(char *buf, size_t size, uint64_t bytes);
const char *ctl_format_usec(char *buf, size_t size, uint64_t usec);
const char *ctl_format_rate(char *buf, size_t size, uint64_t bytes_per_sec);
const char *ctl_format_time(char *buf, size_t size, uint64_t realtime_usec);
